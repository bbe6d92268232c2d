//! `flashsale audit ORDER_ID`: one order's history, from the append-only audit trail.

use std::io::Write;

use anyhow::Context;

use crate::db;

/// Prints the order's audit trail to `out`; an unknown order is an error.
pub async fn print_audit(
    pool: &db::Pool,
    order_id: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let client = pool
        .get()
        .await
        .context("Failed to connect to PostgreSQL")?;
    let trail = db::orders::audit_trail(&**client, order_id).await?;
    anyhow::ensure!(
        !trail.is_empty(),
        "no order {order_id} (or it has no history)"
    );
    writeln!(out, "order {order_id}")?;
    for entry in trail {
        writeln!(
            out,
            "{}  {:<10} status={:<9} key={} addr={} {}",
            entry
                .at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            entry.event,
            entry.status,
            entry.api_key_id.as_deref().unwrap_or("-"),
            entry.client_addr.as_deref().unwrap_or("-"),
            entry.detail
        )?;
    }
    Ok(())
}
