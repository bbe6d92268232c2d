//! The dispatcher's side of the outbox: the wake-up after a commit, the fan-out of
//! events into deliveries, `drop.live` announcements, pruning, and the backlog gauges.

use tokio_postgres::GenericClient;

/// Rung after every commit that may have appended to the outbox; every dispatcher of the
/// process waits on it (besides a short timer), so delivery starts within milliseconds.
pub static OUTBOX_WRITTEN: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Tells the dispatchers that events may have been committed. Costs a few atomics; a
/// dispatcher in the middle of a round finds the new events when the round ends.
pub fn outbox_written() {
    OUTBOX_WRITTEN.notify_waiters();
}

/// Lock key that lets one dispatcher at a time fan the outbox out (see [`fan_out`]).
const FAN_OUT_LOCK: i64 = 0x7765_6268_6f6f_6b73; // "webhooks"

const TRY_FAN_OUT_LOCK: &str = "SELECT pg_try_advisory_xact_lock($1)";

/// [`fan_out`]'s statement. Prepared once per connection, like every statement of the
/// dispatcher's round: a round runs after every batch of orders (at most every 20 ms),
/// and parsing and planning it each time cost PostgreSQL about as much as a tenth of
/// the orders' own work in a sale.
const HAND_OVER: &str = "WITH candidates AS (
        SELECT id, coalesce(cardinality(order_ids), 1) AS n FROM outbox_events
        WHERE delivered_at IS NULL
        ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
    ), claimed AS (
        SELECT id FROM (SELECT id, sum(n) OVER (ORDER BY id) - n AS before
                        FROM candidates) c
        WHERE before < $1
    ), handed AS (
        UPDATE outbox_events o SET delivered_at = now() FROM claimed
        WHERE o.id = claimed.id
        RETURNING o.id, o.store_id, o.type, o.subject_id, o.order_ids
    ), fanned AS (
        -- A batch row becomes one delivery per order (item 1, 2, …), and only for
        -- the endpoints subscribed: with none, its orders cost nothing here.
        INSERT INTO webhook_deliveries (endpoint_id, store_id, event_id, item, type, subject_id)
        SELECT e.id, h.store_id, h.id, coalesce(u.item, 0), h.type,
               coalesce(u.order_id, h.subject_id)
        FROM handed h JOIN webhook_endpoints e
          ON e.store_id = h.store_id AND e.status = 'enabled' AND h.type = ANY (e.events)
        LEFT JOIN LATERAL unnest(h.order_ids) WITH ORDINALITY AS u(order_id, item) ON true
        ORDER BY h.id, u.item
        ON CONFLICT ON CONSTRAINT webhook_deliveries_once DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT coalesce(sum(coalesce(cardinality(order_ids), 1)), 0)::bigint FROM handed),
           (SELECT count(*) FROM fanned)";

/// Hands about `limit` undelivered outbox events over to deliveries: one row per enabled
/// endpoint of the event's store subscribed to its type, and `delivered_at` set, in one
/// transaction. A batch's `order.created` row is `cardinality(order_ids)` events, one
/// delivery each, and is handed over whole: rows are taken, oldest first, while fewer
/// than `limit` events are taken, so the last row may take the count past `limit`.
/// Returns (events handed over, deliveries made); (0, 0) also when another dispatcher
/// is fanning out right now. Fewer than `limit` events: the outbox is drained (of rows
/// not locked by another transaction).
///
/// One fan-out at a time (a transaction-scoped advisory lock) is what keeps the order
/// per subject across processes: the events about one subject are committed one after
/// the other (each change reads the one before), so whoever fans out an event has
/// already committed the deliveries of every earlier event about its subject. The rows
/// are also claimed `FOR UPDATE SKIP LOCKED`, so the lock is the only thing two
/// dispatchers ever wait on.
pub async fn fan_out(
    client: &mut deadpool_postgres::Client,
    limit: i64,
) -> Result<(u64, u64), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let lock = tx.prepare_cached(TRY_FAN_OUT_LOCK).await?;
    let locked: bool = tx.query_one(&lock, &[&FAN_OUT_LOCK]).await?.get(0);
    if !locked {
        return Ok((0, 0));
    }
    let hand_over = tx.prepare_cached(HAND_OVER).await?;
    let row = tx.query_one(&hand_over, &[&limit]).await?;
    tx.commit().await?;
    Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
}

/// Records `drop.live` for every sale that has opened and not been announced for its
/// current start, each once (the conditional UPDATE claims it, so two timers or two
/// processes cannot both). Returns how many opened.
pub async fn announce_drops(client: &impl GenericClient) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "WITH opened AS (
                UPDATE products p SET drop_live_for = p.sale_starts_at
                WHERE p.sale_starts_at IS NOT NULL AND p.sale_starts_at <= now()
                  AND p.drop_live_for IS DISTINCT FROM p.sale_starts_at
                  -- A product created on sale was never scheduled: no drop.live.
                  AND p.sale_starts_at > p.created_at
                  AND (p.sale_ends_at IS NULL OR p.sale_ends_at > now())
                RETURNING p AS product, p.id, p.store_id, p.sale_starts_at
            )
            INSERT INTO outbox_events (store_id, type, subject_id, data, created_at)
            SELECT store_id, 'drop.live', id, webhook_product_json(product, now()), sale_starts_at
            FROM opened",
            &[],
        )
        .await
}

/// Deletes what is older than the retention period and finished: deliveries (with their
/// attempts) and handed-over outbox events with no pending delivery. Returns the events
/// deleted.
pub async fn prune(
    client: &impl GenericClient,
    retention_days: f64,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM webhook_deliveries
             WHERE created_at < now() - $1 * interval '1 day' AND status <> 'pending'",
            &[&retention_days],
        )
        .await?;
    client
        .execute(
            "DELETE FROM outbox_events o
             WHERE o.delivered_at IS NOT NULL AND o.created_at < now() - $1 * interval '1 day'
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                               WHERE d.event_id = o.id AND d.status = 'pending')",
            &[&retention_days],
        )
        .await
}

/// Outbox events not handed over yet, and deliveries pending (the backlog gauges).
pub async fn backlog(client: &impl GenericClient) -> Result<(i64, i64), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT (SELECT coalesce(sum(coalesce(cardinality(order_ids), 1)), 0)::bigint
                     FROM outbox_events WHERE delivered_at IS NULL),
                    (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending')",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
