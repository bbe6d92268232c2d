//! The dispatcher's claims on due deliveries (leases, per-endpoint fairness, order per
//! subject) and the recording of each batch's attempts with their consequences.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::GenericClient;

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

/// [`claim_due`]'s statement. Each enabled endpoint not busy here gets its share of
/// its soonest due deliveries from a walk of its own index range that stops there
/// (migrations/V16), so a claim costs about its share, not the backlog: ranking every
/// due delivery of every endpoint first took 300-500 ms a claim once a sell-out had
/// queued 50,000, and deliveries went out at 200-450 a second. The claim then takes the
/// first of each endpoint's, then the second of each, and so on, up to `$1`, and locks
/// only those (`SKIP LOCKED`, checked again once locked): a row lock is a write, and
/// with many endpoints behind, their shares add up to far more than one claim takes.
/// Each is looked up by its id, in that order, until `$1` are locked: as a join, the
/// planner hashed the whole table at every claim (35 ms of 44 at 50,000 rows, growing
/// with the deliveries kept).
///
/// Every partial index on pending rows looks empty to statistics taken while nothing
/// was pending, and the planner then reads one to find one row: a claim took 13.5 s
/// once a burst of 50,000 `order.expired` was newer than them. So the dispatcher
/// refreshes them after fanning out a burst ([`analyze_deliveries`]).
/// Planned afresh at each claim, never cached: a generic plan made while the table was
/// small is kept until the next ANALYZE.
///
/// Order per subject: a delivery waits while an earlier one about its subject to its
/// endpoint is pending. `order.created` is the first event about its order, so it never
/// waits, and is not checked: a sell-out's thousands are claimed without a probe each.
/// For the others the check is a subplan probing the subject index with the row's own
/// values. As an anti-join, while a burst was newer than the table's statistics, the
/// planner probed with the endpoint alone and read every pending row of the endpoint
/// per candidate (6.2 s for one claim of 256 at 23,000 pending).
const CLAIM_DUE: &str = "WITH candidates AS MATERIALIZED (
        SELECT d.id, d.next_attempt_at,
               row_number() OVER (PARTITION BY e.id ORDER BY d.next_attempt_at, d.id) AS rank
        FROM webhook_endpoints e
        CROSS JOIN LATERAL (
            SELECT d.id, d.next_attempt_at FROM webhook_deliveries d
            WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_at <= now()
              AND (d.type = 'order.created' OR NOT EXISTS (
                  SELECT 1 FROM webhook_deliveries p
                  WHERE p.endpoint_id = d.endpoint_id AND p.subject_id = d.subject_id
                    AND p.status = 'pending' AND p.event_id < d.event_id))
            ORDER BY d.next_attempt_at, d.id
            LIMIT CASE WHEN e.id = ANY ($5::text[]) THEN $6::bigint ELSE $2::bigint END
        ) d
        WHERE e.status = 'enabled' AND NOT (e.id = ANY ($3))
    ), due AS (
        SELECT d.id FROM (SELECT id, rank, next_attempt_at FROM candidates
                          ORDER BY rank, next_attempt_at) c
        CROSS JOIN LATERAL (
            SELECT d.id FROM webhook_deliveries d
            WHERE d.id = c.id AND d.status = 'pending' AND d.next_attempt_at <= now()
            FOR UPDATE SKIP LOCKED
        ) d
        LIMIT $1
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
    FROM claimed c CROSS JOIN LATERAL outbox_event(c.event_id, c.item) o";

/// Refreshes the statistics the claim is planned with: `ANALYZE` of the deliveries
/// (170 ms at 50,000 rows: it reads a sample). Autovacuum would wait for a tenth of
/// the table to change, and then for its next round.
pub async fn analyze_deliveries(client: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("ANALYZE webhook_deliveries").await
}

/// Claims up to `limit` due deliveries, at most `per_endpoint`'s of any one endpoint and
/// none of `busy` (endpoints this dispatcher has requests in flight to), skipping rows
/// another dispatcher holds. A delivery whose endpoint has an earlier pending delivery
/// about the same subject is not due: events about one subject go out in order. A claim
/// is a lease: the row is due again when the lease ends unless its attempt is recorded.
pub async fn claim_due(
    client: &deadpool_postgres::Client,
    limit: i64,
    per_endpoint: &PerEndpoint<'_>,
    busy: &[String],
) -> Result<Vec<Claimed>, tokio_postgres::Error> {
    let rows = client
        .query(
            CLAIM_DUE,
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
