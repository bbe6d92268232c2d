//! Webhooks: endpoints, deliveries and their attempts, and the dispatcher's claims on
//! the outbox. [`fan_out`] is the one place that reads `outbox_events` for delivery;
//! everything else reads events by position (outbox row, item) with the SQL function
//! `outbox_event` (migrations/V12), which expands a batch's `order.created` row into one
//! event per order, in (row, item) order.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;

/// A store's subscription, as the API shows it (never with its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    /// `enabled` or `disabled`.
    pub status: String,
    /// Why the service disabled it: `gone` (a 410) or `failing`; `null` otherwise.
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

const ENDPOINT_COLUMNS: &str = "id, url, events, description, status, disabled_reason, created_at";

fn endpoint_from_row(r: &tokio_postgres::Row) -> Endpoint {
    Endpoint {
        id: r.get("id"),
        url: r.get("url"),
        events: r.get("events"),
        description: r.get("description"),
        status: r.get("status"),
        disabled_reason: r.get("disabled_reason"),
        created_at: r.get("created_at"),
    }
}

/// Adds an endpoint unless the store has `max` already (`None`). Creations of one store
/// are serialised by an advisory lock, so two at once cannot both pass the count.
pub async fn insert_endpoint(
    client: &mut deadpool_postgres::Client,
    store_id: &str,
    new: &Endpoint,
    secret: &str,
    max: i64,
) -> Result<Option<Endpoint>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('webhook_endpoints:' || $1))",
        &[&store_id],
    )
    .await?;
    let count: i64 = tx
        .query_one(
            "SELECT count(*) FROM webhook_endpoints WHERE store_id = $1",
            &[&store_id],
        )
        .await?
        .get(0);
    if count >= max {
        return Ok(None);
    }
    let sql = format!(
        "INSERT INTO webhook_endpoints (id, store_id, url, events, description, secret)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {ENDPOINT_COLUMNS}"
    );
    let row = tx
        .query_one(
            &sql,
            &[
                &new.id,
                &store_id,
                &new.url,
                &new.events,
                &new.description,
                &secret,
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(Some(endpoint_from_row(&row)))
}

/// A store's endpoints, newest first, older than `before_id` if given.
pub async fn list_endpoints(
    client: &impl GenericClient,
    store_id: &str,
    before_id: Option<&str>,
    limit: i64,
) -> Result<Vec<Endpoint>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
         WHERE store_id = $1 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    );
    let rows = client.query(&sql, &[&store_id, &before_id, &limit]).await?;
    Ok(rows.iter().map(endpoint_from_row).collect())
}

pub async fn find_endpoint(
    client: &impl GenericClient,
    store_id: &str,
    id: &str,
) -> Result<Option<Endpoint>, tokio_postgres::Error> {
    let sql =
        format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND store_id = $2");
    let row = client.query_opt(&sql, &[&id, &store_id]).await?;
    Ok(row.as_ref().map(endpoint_from_row))
}

/// A validated PATCH: `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<Option<String>>,
    pub status: Option<String>,
}

/// Applies a PATCH. Enabling an endpoint forgets its failures, so the disable-after
/// period starts afresh.
pub async fn update_endpoint(
    client: &impl GenericClient,
    store_id: &str,
    id: &str,
    p: &EndpointPatch,
) -> Result<Option<Endpoint>, tokio_postgres::Error> {
    let sql = format!(
        "UPDATE webhook_endpoints SET
            url = coalesce($3, url),
            events = coalesce($4, events),
            description = CASE WHEN $5 THEN $6 ELSE description END,
            status = coalesce($7, status),
            disabled_reason = CASE WHEN $7 IS NULL THEN disabled_reason END,
            failing_since = CASE WHEN $7 = 'enabled' THEN NULL ELSE failing_since END,
            updated_at = now()
         WHERE id = $1 AND store_id = $2 RETURNING {ENDPOINT_COLUMNS}"
    );
    let row = client
        .query_opt(
            &sql,
            &[
                &id,
                &store_id,
                &p.url,
                &p.events,
                &p.description.is_some(),
                &p.description.clone().flatten(),
                &p.status,
            ],
        )
        .await?;
    Ok(row.as_ref().map(endpoint_from_row))
}

/// Deletes an endpoint and (cascade) its deliveries; `false`: no such endpoint.
pub async fn delete_endpoint(
    client: &impl GenericClient,
    store_id: &str,
    id: &str,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            "DELETE FROM webhook_endpoints WHERE id = $1 AND store_id = $2",
            &[&id, &store_id],
        )
        .await?;
    Ok(n == 1)
}

/// Makes `secret` the endpoint's secret; the one it replaces keeps signing for
/// `overlap_secs`.
pub async fn rotate_secret(
    client: &impl GenericClient,
    store_id: &str,
    id: &str,
    secret: &str,
    overlap_secs: f64,
) -> Result<Option<Endpoint>, tokio_postgres::Error> {
    let sql = format!(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = $3,
            previous_until = now() + $4 * interval '1 second', updated_at = now()
         WHERE id = $1 AND store_id = $2 RETURNING {ENDPOINT_COLUMNS}"
    );
    let row = client
        .query_opt(&sql, &[&id, &store_id, &secret, &overlap_secs])
        .await?;
    Ok(row.as_ref().map(endpoint_from_row))
}

/// One attempt at a delivery, as the log shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// `null` when no response came.
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    pub error: Option<String>,
    /// The start of the response body (at most 1 KiB).
    pub response_snippet: Option<String>,
}

/// One event to one endpoint, as the log shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// `dlv_<n>`.
    pub id: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Oldest first.
    pub attempts: Vec<Attempt>,
    /// When it is next tried; `null` unless pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// What a delivery id looks like in the API.
pub const DELIVERY_PREFIX: &str = "dlv_";

/// A page of an endpoint's deliveries, newest first, each with its attempts.
pub async fn list_deliveries(
    client: &impl GenericClient,
    endpoint_id: &str,
    status: Option<&str>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<(i64, Delivery)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT d.id, o.event_id, d.type, d.status, d.next_attempt_at
             FROM webhook_deliveries d CROSS JOIN LATERAL outbox_event(d.event_id, d.item) o
             WHERE d.endpoint_id = $1 AND ($2::text IS NULL OR d.status = $2)
               AND ($3::bigint IS NULL OR d.id < $3)
             ORDER BY d.id DESC LIMIT $4",
            &[&endpoint_id, &status, &before_id, &limit],
        )
        .await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let attempts = client
        .query(
            "SELECT delivery_id, at, status_code, duration_ms, error, response_snippet
             FROM webhook_attempts WHERE delivery_id = ANY($1) ORDER BY id",
            &[&ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let id: i64 = r.get(0);
            let status: String = r.get(3);
            let delivery = Delivery {
                id: format!("{DELIVERY_PREFIX}{id}"),
                event_id: r.get(1),
                kind: r.get(2),
                next_attempt_at: (status == "pending").then(|| r.get(4)),
                status,
                attempts: attempts
                    .iter()
                    .filter(|a| a.get::<_, i64>(0) == id)
                    .map(|a| Attempt {
                        at: a.get(1),
                        status_code: a.get(2),
                        duration_ms: a.get(3),
                        error: a.get(4),
                        response_snippet: a.get(5),
                    })
                    .collect(),
            };
            (id, delivery)
        })
        .collect())
}

/// Makes a delivery of the endpoint due now (pending again if it had finished);
/// `false`: no such delivery.
pub async fn retry_delivery(
    client: &impl GenericClient,
    endpoint_id: &str,
    delivery_id: i64,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now()
             WHERE id = $1 AND endpoint_id = $2",
            &[&delivery_id, &endpoint_id],
        )
        .await?;
    Ok(n == 1)
}

/// An event as delivered: `{"id","type","created_at","data"}`.
pub fn event_body(
    event_id: &str,
    kind: &str,
    created_at: DateTime<Utc>,
    data: &Value,
) -> serde_json::Value {
    serde_json::json!({"id": event_id, "type": kind, "created_at": created_at, "data": data})
}

/// Where an event is in the outbox: its row and its item in the row (0 for a row that
/// is one event, 1… for the orders of a batch's `order.created` row). Events go in
/// (row, item) order; a listing's cursor is the position of its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventPosition {
    pub row: i64,
    pub item: i32,
}

impl EventPosition {
    /// `<row>` or `<row>.<item>`: a cursor given out before batch rows (a bare row id)
    /// still means the same place.
    pub fn to_cursor(self) -> String {
        if self.item == 0 {
            self.row.to_string()
        } else {
            format!("{}.{}", self.row, self.item)
        }
    }

    /// The inverse of [`Self::to_cursor`]; `None` for anything it did not give out.
    pub fn parse_cursor(cursor: &str) -> Option<Self> {
        let (row, item) = match cursor.split_once('.') {
            Some((row, item)) => (row, item.parse().ok().filter(|&i: &i32| i > 0)?),
            None => (cursor, 0),
        };
        Some(Self {
            row: row.parse().ok()?,
            item,
        })
    }
}

/// A page of a store's events of the last `retention_days`, newest first (before
/// `before` if given); with the position of each (the cursor).
///
/// A page of `limit` events spans at most `limit` outbox rows, so those are read first
/// (by outbox_events_store_idx), expanded, cut to `limit`, and only then are the orders
/// of the batch rows read for their `data`.
pub async fn list_events(
    client: &impl GenericClient,
    store_id: &str,
    kind: Option<&str>,
    before: Option<EventPosition>,
    limit: i64,
    retention_days: f64,
) -> Result<Vec<(EventPosition, Value)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "WITH page AS (
                SELECT id, order_ids FROM outbox_events
                WHERE store_id = $1 AND created_at > now() - $2 * interval '1 day'
                  AND ($3::text IS NULL OR type = $3) AND ($4::bigint IS NULL OR id <= $4)
                ORDER BY id DESC LIMIT $6
            ), picked AS (
                SELECT p.id, coalesce(u.item, 0)::integer AS item FROM page p
                LEFT JOIN LATERAL unnest(p.order_ids) WITH ORDINALITY AS u(order_id, item) ON true
                WHERE $4::bigint IS NULL OR (p.id, coalesce(u.item, 0)) < ($4, $5::integer)
                ORDER BY 1 DESC, 2 DESC LIMIT $6
            )
            SELECT p.id, p.item, e.event_id, e.type, e.created_at, e.data
            FROM picked p CROSS JOIN LATERAL outbox_event(p.id, p.item) e
            ORDER BY p.id DESC, p.item DESC",
            &[
                &store_id,
                &retention_days,
                &kind,
                &before.map(|b| b.row),
                &before.map_or(0, |b| b.item),
                &limit,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let body = event_body(r.get(2), r.get(3), r.get(4), &r.get(5));
            let at = EventPosition {
                row: r.get(0),
                item: r.get(1),
            };
            (at, body)
        })
        .collect())
}

// ---- The dispatcher's side ----

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
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&FAN_OUT_LOCK])
        .await?
        .get(0);
    if !locked {
        return Ok((0, 0));
    }
    let row = tx
        .query_one(
            "WITH candidates AS (
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
                   (SELECT count(*) FROM fanned)",
            &[&limit],
        )
        .await?;
    tx.commit().await?;
    Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
}

/// How many deliveries of one endpoint a claim takes, and for how long: endpoints whose
/// last batch went wrong (`troubled_ids`) get fewer, so that a slow one holds few
/// claims, and a shorter lease.
#[derive(Debug, Clone)]
pub struct PerEndpoint<'a> {
    pub healthy: i64,
    pub healthy_lease_secs: f64,
    pub troubled: i64,
    pub troubled_lease_secs: f64,
    pub troubled_ids: &'a [String],
}

/// A claimed delivery, with what its attempt needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery_id: i64,
    pub endpoint_id: String,
    pub url: String,
    /// The live secrets: the current one, and the previous one during a rotation.
    pub secrets: Vec<String>,
    pub event_id: String,
    pub kind: String,
    pub event_created_at: DateTime<Utc>,
    pub data: Value,
    /// This attempt's number, 1-based.
    pub attempt: u32,
}

/// Claims up to `limit` due deliveries, at most `per_endpoint`'s of any one endpoint and
/// none of `busy` (endpoints this dispatcher has requests in flight to), skipping rows
/// another dispatcher holds. A delivery whose endpoint has an earlier pending delivery
/// about the same subject is not due: events about one subject go out in order. A claim
/// is a lease: the row is due again when the lease ends unless its attempt is recorded.
pub async fn claim_due(
    client: &impl GenericClient,
    limit: i64,
    per_endpoint: &PerEndpoint<'_>,
    busy: &[String],
) -> Result<Vec<Claimed>, tokio_postgres::Error> {
    let rows = client
        .query(
            "WITH ranked AS (
                SELECT d.id, row_number() OVER (PARTITION BY d.endpoint_id
                                                ORDER BY d.next_attempt_at, d.id) AS rank
                FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
                WHERE d.status = 'pending' AND d.next_attempt_at <= now()
                  AND e.status = 'enabled' AND NOT (d.endpoint_id = ANY ($3))
                  AND NOT EXISTS (
                      SELECT 1 FROM webhook_deliveries p
                      WHERE p.endpoint_id = d.endpoint_id AND p.subject_id = d.subject_id
                        AND p.status = 'pending' AND p.event_id < d.event_id)
            ), due AS (
                SELECT d.id FROM webhook_deliveries d JOIN ranked r ON r.id = d.id
                WHERE r.rank <= CASE WHEN d.endpoint_id = ANY ($5::text[]) THEN $6::bigint ELSE $2::bigint END
                  AND d.status = 'pending' AND d.next_attempt_at <= now()
                ORDER BY r.rank, d.next_attempt_at LIMIT $1
                FOR UPDATE OF d SKIP LOCKED
            )
            , claimed AS (
                UPDATE webhook_deliveries d SET next_attempt_at = now() + interval '1 second' *
                    CASE WHEN d.endpoint_id = ANY ($5::text[]) THEN $7::float8 ELSE $4::float8 END
                FROM due, webhook_endpoints e
                WHERE d.id = due.id AND e.id = d.endpoint_id
                RETURNING d.id, d.endpoint_id, e.url, e.secret,
                          CASE WHEN e.previous_until > now() THEN e.previous_secret END AS previous,
                          d.event_id, d.item, d.attempt_count
            )
            SELECT c.id, c.endpoint_id, c.url, c.secret, c.previous,
                   o.event_id, o.type, o.created_at, o.data, c.attempt_count
            FROM claimed c CROSS JOIN LATERAL outbox_event(c.event_id, c.item) o",
            &[
                &limit,
                &per_endpoint.healthy,
                &busy,
                &per_endpoint.healthy_lease_secs,
                &per_endpoint.troubled_ids,
                &per_endpoint.troubled,
                &per_endpoint.troubled_lease_secs,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Claimed {
            delivery_id: r.get(0),
            endpoint_id: r.get(1),
            url: r.get(2),
            secrets: std::iter::once(r.get::<_, String>(3))
                .chain(r.get::<_, Option<String>>(4))
                .collect(),
            event_id: r.get(5),
            kind: r.get(6),
            event_created_at: r.get(7),
            data: r.get(8),
            attempt: r.get::<_, i32>(9) as u32 + 1,
        })
        .collect())
}

/// The outcome of one attempt, to record.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: i64,
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    pub error: Option<String>,
    pub response_snippet: Option<String>,
    /// 2xx.
    pub delivered: bool,
    /// A 410: the endpoint is disabled at once.
    pub gone: bool,
    /// Seconds until the next attempt; `None` with a failure: the delivery has failed.
    pub retry_in_secs: Option<f64>,
}

/// Records the attempts of one endpoint's batch and their consequences in one
/// statement: each delivery (delivered, due again, or failed), the endpoint's failing
/// period, and its disabling (at once on a 410; when it has failed every attempt for
/// `disable_after_hours`). The endpoint row is written only when its state changes, so
/// a healthy endpoint's batches do not queue on its row lock. Attempts of deliveries
/// deleted meanwhile (with their endpoint) are dropped. Returns whether this batch
/// disabled the endpoint.
pub async fn record_attempts(
    client: &impl GenericClient,
    endpoint_id: &str,
    batch: &[AttemptRecord],
    disable_after_hours: f64,
) -> Result<bool, tokio_postgres::Error> {
    let ids: Vec<i64> = batch.iter().map(|a| a.delivery_id).collect();
    let codes: Vec<Option<i32>> = batch.iter().map(|a| a.status_code).collect();
    let durations: Vec<i32> = batch.iter().map(|a| a.duration_ms).collect();
    let errors: Vec<Option<&str>> = batch.iter().map(|a| a.error.as_deref()).collect();
    let snippets: Vec<Option<&str>> = batch
        .iter()
        .map(|a| a.response_snippet.as_deref())
        .collect();
    let statuses: Vec<&str> = batch
        .iter()
        .map(|a| match (a.delivered, a.retry_in_secs) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        })
        .collect();
    let retry_in: Vec<Option<f64>> = batch.iter().map(|a| a.retry_in_secs).collect();
    let any_success = batch.iter().any(|a| a.delivered);
    let gone = batch.iter().any(|a| a.gone);
    let row = client
        .query_opt(
            "WITH input AS (
                SELECT * FROM unnest($1::bigint[], $2::int[], $3::int[], $4::text[], $5::text[],
                                     $6::text[], $7::float8[])
                    AS t(delivery_id, status_code, duration_ms, error, snippet, status, retry_in)
            ), attempts AS (
                INSERT INTO webhook_attempts (delivery_id, status_code, duration_ms, error, response_snippet)
                SELECT i.delivery_id, i.status_code, i.duration_ms, i.error, i.snippet
                FROM input i JOIN webhook_deliveries d ON d.id = i.delivery_id
            ), deliveries AS (
                UPDATE webhook_deliveries d SET attempt_count = d.attempt_count + 1, status = i.status,
                    next_attempt_at = CASE WHEN i.retry_in IS NULL THEN d.next_attempt_at
                                      ELSE now() + i.retry_in * interval '1 second' END,
                    delivered_at = CASE WHEN i.status = 'delivered' THEN now() END
                FROM input i WHERE d.id = i.delivery_id
            ), old AS (
                SELECT id, status, disabled_reason, failing_since,
                       NOT $8 AND failing_since < now() - $10 * interval '1 hour' AS failed_long
                FROM webhook_endpoints WHERE id = $11
            )
            UPDATE webhook_endpoints e SET
                failing_since = CASE WHEN $8 THEN NULL ELSE coalesce(old.failing_since, now()) END,
                status = CASE WHEN $9 OR old.failed_long THEN 'disabled' ELSE old.status END,
                disabled_reason = CASE WHEN old.status = 'disabled' THEN old.disabled_reason
                                       WHEN $9 THEN 'gone'
                                       WHEN old.failed_long THEN 'failing' END
            FROM old
            WHERE e.id = old.id
              AND (($8 AND old.failing_since IS NOT NULL)
                   OR (NOT $8 AND (old.failing_since IS NULL OR $9 OR old.failed_long)))
            RETURNING old.status = 'enabled' AND e.status = 'disabled'",
            &[
                &ids,
                &codes,
                &durations,
                &errors,
                &snippets,
                &statuses,
                &retry_in,
                &any_success,
                &gone,
                &disable_after_hours,
                &endpoint_id,
            ],
        )
        .await?;
    Ok(row.is_some_and(|r| r.get(0)))
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
