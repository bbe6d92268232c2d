//! `flashsale audit ORDER_ID`: one order's history, from the append-only audit trail.
//!
//! The audit reads the database the server writes to: `DATABASE_URL` if set, else the
//! private PostgreSQL kept under `--data-dir`, the running server's if it is up, else its
//! stopped cluster, started for the read and stopped again. It never creates a cluster
//! or a database: a data folder without one is an error that names the folder, so that a
//! run from the wrong directory does not look like a missing order.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::config::Settings;
use crate::db;
use crate::db::embedded::{Durability, EmbeddedPostgres};

/// The database an audit reads, and how it was found (for the messages).
struct Source {
    url: String,
    described: String,
    /// A stopped private server started for this audit, stopped after it.
    started: Option<EmbeddedPostgres>,
}

/// Finds the server's database, prints the order's trail to `out`, and stops what it
/// started.
pub async fn run(settings: &Settings, order_id: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let source = find_database(settings).await?;
    let printed = print_from(&source, order_id, out).await;
    if let Some(pg) = source.started {
        tokio::task::spawn_blocking(move || pg.stop()).await?;
    }
    printed
}

async fn find_database(settings: &Settings) -> anyhow::Result<Source> {
    if let Some(url) = &settings.database_url {
        return Ok(Source {
            url: url.clone(),
            described: format!("DATABASE_URL ({})", describe_url(url)),
            started: None,
        });
    }
    let data_dir = absolute(&settings.data_dir);
    if let Some(url) = EmbeddedPostgres::running_url(&data_dir, "flashsale") {
        return Ok(Source {
            url,
            described: format!(
                "the running private PostgreSQL of {} (database flashsale)",
                data_dir.display()
            ),
            started: None,
        });
    }
    let Some(root) = EmbeddedPostgres::existing_cluster(&data_dir) else {
        bail!(
            "no database to audit: DATABASE_URL is not set, and the data folder {} holds no \
             private PostgreSQL (no pgdata/ in it). Run the audit from the directory the \
             server was started in, or give it the server's --data-dir (FLASHSALE_DATA_DIR) \
             or DATABASE_URL",
            data_dir.display()
        );
    };
    let dir = data_dir.clone();
    let pg =
        tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, Durability::Durable))
            .await??;
    Ok(Source {
        url: pg.url("flashsale"),
        described: format!(
            "the private PostgreSQL in {} (not running: started for this audit)",
            root.display()
        ),
        started: Some(pg),
    })
}

async fn print_from(source: &Source, order_id: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let pool = db::create_pool(&source.url, 1)?;
    let client = pool
        .get()
        .await
        .with_context(|| format!("Failed to connect to {}", source.described))?;
    let row = client
        .query_one("SELECT to_regclass('order_audit') IS NOT NULL", &[])
        .await
        .with_context(|| format!("Failed to query {}", source.described))?;
    if !row.get::<_, bool>(0) {
        bail!(
            "{} has no flashsale tables (no order_audit): no flashsale server has run on it",
            source.described
        );
    }
    let trail = db::orders::audit_trail(&**client, order_id).await?;
    if trail.is_empty() {
        bail!("no order {order_id} in {}", source.described);
    }
    print_trail(order_id, &trail, out)
}

fn print_trail(
    order_id: &str,
    trail: &[db::orders::AuditEntry],
    out: &mut impl Write,
) -> anyhow::Result<()> {
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

/// `postgres://user@host:port/db`, without the password.
fn describe_url(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "unparsable URL".to_owned();
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "database {} on {}:{} as {}",
        config.get_dbname().unwrap_or("(default)"),
        hosts.join(","),
        if ports.is_empty() {
            "5432".to_owned()
        } else {
            ports.join(",")
        },
        config.get_user().unwrap_or("(default)")
    )
}

/// `dir` as an absolute path, for messages that must say where we looked.
fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned())
}
