//! The delivery log as the API shows it: an endpoint's deliveries with their attempts,
//! and a manual retry.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

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
