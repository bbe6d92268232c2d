//! `GET /api/v1/cluster` (operator): the live instances of the cluster and who holds
//! each shard, from the database (heartbeats and leases), so that every instance
//! answers the same. `flashsale haproxy-map` reads the shards' owners from it.

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

/// The live instances, and each shard's owner.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    instances: Vec<Instance>,
    /// One entry per shard (256, in order): the URL of the instance holding its lease
    /// now, `null` while it moves. A product's shard is byte 1 (from 0) of the SHA-256
    /// of its id (docs/ARCHITECTURE.md, "Cluster").
    shards: Vec<Option<String>>,
}

/// The live instances of the cluster (operator only); an instance whose membership
/// lapsed is not listed. `shards`: each shard's owner now (`null` while it moves).
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
    let mut shards = vec![None; crate::cluster::SHARDS];
    for lease in crate::db::cluster::leases(&**client).await? {
        if let (true, Some(slot)) = (lease.valid, shards.get_mut(lease.shard as usize)) {
            *slot = lease.owner_url;
        }
    }
    Ok(HttpResponse::Ok().json(ClusterView { instances, shards }))
}
