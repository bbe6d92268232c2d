//! `GET /api/v1/cluster` (operator): the live instances of the cluster, from the
//! database (each instance's last heartbeat), so that every instance answers the same.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::auth::Caller;
use super::errors::ApiError;
use super::AppState;

/// One live instance.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Instance {
    /// Random per process (`ins_…`).
    id: String,
    /// Its `FLASHSALE_ADVERTISE_URL`.
    url: String,
    started_at: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    /// Product actors it runs (as of its last heartbeat, at most a quarter lease old).
    products_owned: i64,
}

/// The live instances.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    instances: Vec<Instance>,
}

/// The live instances of the cluster (operator only); an instance whose membership
/// lapsed is not listed.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "operations", security(("bearer" = [])),
    responses((status = 200, body = ClusterView), (status = 401), (status = 403),
        (status = 503, description = "unavailable: the database could not be asked; with Retry-After")))]
pub async fn cluster(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require_operator()?;
    let client = state.pool.get().await?;
    let members = crate::db::cluster::live_members(&**client).await?;
    let instances = members
        .into_iter()
        .map(|m| Instance {
            id: m.id,
            url: m.url,
            started_at: m.started_at,
            last_seen: m.last_seen,
            products_owned: i64::from(m.products_owned),
        })
        .collect();
    Ok(HttpResponse::Ok().json(ClusterView { instances }))
}
