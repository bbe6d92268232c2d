//! A store's webhook endpoints (its subscriptions): create under the per-store cap,
//! list, find, PATCH, delete, and rotate the signing secret.

use chrono::{DateTime, Utc};
use serde::Serialize;
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
