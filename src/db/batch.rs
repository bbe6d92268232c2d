//! The write-behind batch: one transaction for many orders (see
//! [`crate::actors::writer`]), and what the writer needs to judge one that never
//! finished.

use std::collections::{BTreeMap, HashSet};

use tokio_postgres::GenericClient;
use tracing::Instrument;

use crate::domain::order::NewOrder;
use crate::telemetry::{SPAN_DB_COMMIT, SPAN_DB_INSERT_ORDERS, SPAN_DB_TAKE_STOCK};

/// Inserts the orders, each with its consent record in its own row, and ONE
/// `order.created` outbox row per store listing the orders inserted (migrations/V12: the
/// events view expands it into one event per order), in one statement. Returns what was
/// inserted, so that only that stock is taken. `$on_conflict` is what a key already used
/// in the store does: fail the statement, or skip its order.
macro_rules! insert_orders {
    ($on_conflict:literal) => {
        concat!(
            "WITH inserted AS (
    INSERT INTO orders (id, store_id, product_id, customer_id, quantity, unit_price_cents, currency,
                        total_cents, status, expires_at, created_at, idempotency_key, request_hash,
                        api_key_id, client_addr, terms_version, marketing)
    SELECT id, store_id, product_id, customer_id, quantity, unit_price_cents, currency,
           unit_price_cents * quantity, status, expires_at, created_at, idempotency_key,
           request_hash, api_key_id, client_addr::inet, terms_version, marketing
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bigint[],
                $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::text[],
                $12::bytea[], $13::text[], $14::text[], $15::text[], $16::bool[])
        AS t(id, store_id, product_id, customer_id, quantity, unit_price_cents, currency, status,
             expires_at, created_at, idempotency_key, request_hash, api_key_id, client_addr,
             terms_version, marketing) ",
            $on_conflict,
            "
    RETURNING id, store_id, product_id, quantity
), events AS (
    INSERT INTO outbox_events (store_id, type, order_ids)
    SELECT store_id, 'order.created', array_agg(id) FROM inserted GROUP BY store_id
)
SELECT id, product_id, quantity FROM inserted"
        )
    };
}

/// The usual batch: no order's key is used yet (the product actors know their keys, and
/// ask the database about any their filter cannot rule out). A plain insert: with
/// `ON CONFLICT … DO NOTHING` every row paid a speculative insertion (a lock, a pre-check
/// of the unique index and one more WAL record), a fifth of the insert's cost in
/// PostgreSQL (pgbench, 45-row batches against the same table and indexes).
const INSERT_ORDERS: &str = insert_orders!("");

/// The batch again after the plain insert met a used key (the same key on two products
/// of one store, or an owner's batch still landing during a failover): the orders whose
/// key is used are skipped, and answered from the order that has it.
const INSERT_ORDERS_SKIPPING_USED: &str =
    insert_orders!("ON CONFLICT ON CONSTRAINT orders_store_idempotency_key DO NOTHING");

/// The unique constraint the plain insert trips on a used key.
const USED_KEY: &str = "orders_store_idempotency_key";

/// Locks the batch's product rows in id order, so that two batches touching the same
/// products cannot deadlock on each other's stock updates (needed only with two or more).
const LOCK_PRODUCTS: &str =
    "SELECT id FROM products WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";

/// ONE stock update per product for the whole batch; a product whose last unit this
/// batch took gets its `product.sold_out` event.
const TAKE_STOCK: &str = "
WITH taken AS (
    UPDATE products p
    SET stock_available = p.stock_available - taken.quantity, updated_at = now()
    FROM unnest($1::text[], $2::bigint[]) AS taken(id, quantity)
    WHERE p.id = taken.id
    RETURNING p AS product, p.id, p.store_id, p.stock_available
)
INSERT INTO outbox_events (store_id, type, subject_id, data)
SELECT store_id, 'product.sold_out', id, webhook_product_json(product, now())
FROM taken WHERE stock_available = 0";

/// Opens a batch's transaction. Its statements take arrays, and PostgreSQL's default
/// (`auto`) keeps planning them afresh for every batch: a plan for the array's actual
/// length looks cheaper than the generic one. Their plans do not depend on the length,
/// and planning was a tenth of PostgreSQL's CPU per batch (perf); with generic plans
/// the hot SKU's PostgreSQL CPU per order fell 8-12 % (alternating runs of
/// `ALTER SYSTEM SET plan_cache_mode`).
const BEGIN_BATCH: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan";

/// Which PostgreSQL backend ran a batch (pid and start time: a pid alone may be reused
/// by a later backend), so that a batch whose COMMIT was lost can be made final by
/// ending that backend before anyone asks what it committed.
#[derive(Debug, Clone, Copy)]
pub struct Backend {
    pub pid: i32,
    pub started: chrono::DateTime<chrono::Utc>,
}

/// What a batch got as far as, for the caller to judge a batch that never finished.
#[derive(Debug, Default)]
pub struct BatchProgress {
    /// The backend running the transaction, once known.
    pub backend: std::cell::Cell<Option<Backend>>,
    /// COMMIT was sent: from here on the transaction may have committed.
    pub commit_sent: std::cell::Cell<bool>,
}

const THIS_BACKEND: &str =
    // One row from the backend's own slot (the view would build a row for every backend).
    "SELECT pid, backend_start FROM pg_stat_get_activity(pg_backend_pid())";

/// Ends `backend` if it is still running (rolling back whatever it has not committed)
/// and waits until it is gone: after this, what it committed is all it ever will.
pub async fn end_backend(
    client: &impl GenericClient,
    backend: Backend,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid = $1 AND backend_start = $2",
            &[&backend.pid, &backend.started],
        )
        .await?;
    loop {
        let alive = client
            .query_opt(
                "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2",
                &[&backend.pid, &backend.started],
            )
            .await?;
        if alive.is_none() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Why a batch did not commit.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Failed before COMMIT was sent: certainly rolled back.
    #[error("batch rolled back: {0}")]
    RolledBack(#[source] tokio_postgres::Error),
    /// The connection failed while committing: it may or may not have committed.
    #[error("batch outcome unknown: {0}")]
    Unknown(#[source] tokio_postgres::Error),
}

/// Writes one batch in one transaction. Returns the ids inserted; the others' keys were
/// already used in their store. A batch with such a key is written twice: the plain
/// insert fails on it (and rolls back before COMMIT is sent), then the batch goes again,
/// skipping it.
pub async fn insert_batch(
    client: &deadpool_postgres::Client,
    batch: &[&NewOrder],
    fences: &[super::cluster::Fence],
    progress: &BatchProgress,
) -> Result<HashSet<String>, BatchError> {
    match write_once(client, batch, fences, progress, INSERT_ORDERS).await {
        Err(BatchError::RolledBack(e)) if super::violated_constraint(&e) == Some(USED_KEY) => {
            tracing::debug!(
                batch.size = batch.len(),
                "a key of the batch is used; again, skipping it"
            );
            progress.backend.set(None);
            write_once(client, batch, fences, progress, INSERT_ORDERS_SKIPPING_USED).await
        }
        written => written,
    }
}

/// One attempt at the batch's transaction, inserting with `insert`.
async fn write_once(
    client: &deadpool_postgres::Client,
    batch: &[&NewOrder],
    fences: &[super::cluster::Fence],
    progress: &BatchProgress,
    insert: &'static str,
) -> Result<HashSet<String>, BatchError> {
    let n = batch.len();
    let mut ids = Vec::with_capacity(n);
    let mut store_ids = Vec::with_capacity(n);
    let mut product_ids = Vec::with_capacity(n);
    let mut customer_ids = Vec::with_capacity(n);
    let mut quantities = Vec::with_capacity(n);
    let mut prices = Vec::with_capacity(n);
    let mut currencies = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut expires = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    let mut api_keys = Vec::with_capacity(n);
    let mut addrs = Vec::with_capacity(n);
    let mut terms = Vec::with_capacity(n);
    let mut marketing = Vec::with_capacity(n);
    for o in batch {
        ids.push(o.order.id.as_str());
        store_ids.push(o.order.store_id.as_str());
        product_ids.push(o.order.product_id.as_str());
        customer_ids.push(o.order.customer_id.as_str());
        quantities.push(o.order.quantity);
        prices.push(o.order.unit_price_cents);
        currencies.push(o.order.currency.as_str());
        statuses.push(o.order.status.as_str());
        expires.push(o.order.expires_at);
        created.push(o.order.created_at);
        keys.push(o.idempotency_key.as_str());
        hashes.push(o.request_hash.as_slice());
        api_keys.push(o.api_key_id.as_str());
        addrs.push(o.client_addr.as_deref());
        terms.push(o.consent.terms_version.as_str());
        marketing.push(o.consent.marketing);
    }
    // Statements are prepared (once per connection) before the transaction opens, so that
    // it takes two round trips to PostgreSQL:
    //   1. BEGIN and the inserts, pipelined;
    //   2. the lock (two or more products), the stock update and COMMIT, pipelined.
    // The hot product's row lock is the one thing batches queue on, so it is taken last
    // and held for no round trip to this process: the server runs the UPDATE and the
    // COMMIT back to back, and the next batch's UPDATE waits only for this one's WAL
    // flush. (With a round trip in between, every batch held the lock while the writer's
    // thread got scheduled, and the batches in flight committed one by one.)
    let prepare = |sql: &'static str| async move {
        client
            .prepare_cached(sql)
            .await
            .map_err(BatchError::RolledBack)
    };
    let insert = prepare(insert).await?;
    let take = prepare(TAKE_STOCK).await?;
    let lock = prepare(LOCK_PRODUCTS).await?;
    let this_backend = prepare(THIS_BACKEND).await?;
    let fence = prepare(super::cluster::FENCE).await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 16] = [
        &ids,
        &store_ids,
        &product_ids,
        &customer_ids,
        &quantities,
        &prices,
        &currencies,
        &statuses,
        &expires,
        &created,
        &keys,
        &hashes,
        &api_keys,
        &addrs,
        &terms,
        &marketing,
    ];
    // The backend's identity rides in the first round trip (no extra one).
    // The fence (every shard's epoch still ours) is the transaction's first statement:
    // if it refuses, the insert behind it fails and nothing commits.
    let (begun, backend, fenced, rows) = tokio::join!(
        client.batch_execute(BEGIN_BATCH),
        client.query_one(&this_backend, &[]),
        super::cluster::fence_with(&***client, &fence, fences),
        client.query(&insert, &params).instrument(crate::db_span!(
            SPAN_DB_INSERT_ORDERS,
            "INSERT",
            "orders",
            db.rows = n
        ))
    );
    if let Ok(row) = &backend {
        progress.backend.set(Some(Backend {
            pid: row.get(0),
            started: row.get(1),
        }));
    }
    let rows = match begun.and(backend).and(fenced).and(rows) {
        Ok(rows) => rows,
        Err(e) => {
            // Nothing can have committed. Leave no transaction open on the connection
            // (a dead connection is dropped by the pool instead).
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(BatchError::RolledBack(e));
        }
    };
    let mut taken: BTreeMap<String, i64> = BTreeMap::new();
    let mut inserted = HashSet::with_capacity(rows.len());
    for row in &rows {
        *taken.entry(row.get(1)).or_default() += i64::from(row.get::<_, i32>(2));
        inserted.insert(row.get(0));
    }
    let (products, quantities): (Vec<String>, Vec<i64>) = taken.into_iter().unzip();
    let lock_rows = async {
        if products.len() > 1 {
            client.execute(&lock, &[&products]).await?;
        }
        Ok(())
    };
    let take_stock = async {
        if !products.is_empty() {
            client.execute(&take, &[&products, &quantities]).await?;
        }
        Ok(())
    }
    .instrument(crate::db_span!(
        SPAN_DB_TAKE_STOCK,
        "UPDATE",
        "products",
        db.products = products.len()
    ));
    let commit = client.batch_execute("COMMIT").instrument(crate::db_span!(
        SPAN_DB_COMMIT,
        "COMMIT",
        "orders"
    ));
    progress.commit_sent.set(true);
    let (locked, took, committed) = tokio::join!(lock_rows, take_stock, commit);
    match (locked.and(took), committed) {
        (Ok(()), Ok(())) => {
            super::webhooks::outbox_written();
            Ok(inserted)
        }
        // PostgreSQL answered a statement before COMMIT with an error (even a FATAL one,
        // which ends the backend there): the transaction aborted, and the COMMIT behind
        // it could not commit.
        (Err(e), _) if e.as_db_error().is_some() => Err(BatchError::RolledBack(e)),
        // PostgreSQL refused the COMMIT itself with an ordinary error: rolled back. A
        // FATAL one (the backend terminated) may come after the commit was made.
        (Ok(()), Err(e)) if e.as_db_error().is_some_and(|d| !is_fatal(d)) => {
            Err(BatchError::RolledBack(e))
        }
        // The connection failed on the way: the COMMIT may or may not have run.
        (Err(e), _) | (_, Err(e)) => Err(BatchError::Unknown(e)),
    }
}

/// Whether an error ended the backend (it may have come after the statement's work).
fn is_fatal(e: &tokio_postgres::error::DbError) -> bool {
    matches!(e.severity(), "FATAL" | "PANIC")
}

/// Of `ids`, those that are in the database (after a commit whose outcome is unknown).
pub async fn existing_ids(
    client: &impl GenericClient,
    ids: &[&str],
) -> Result<HashSet<String>, tokio_postgres::Error> {
    let rows = client
        .query("SELECT id FROM orders WHERE id = ANY($1)", &[&ids])
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
