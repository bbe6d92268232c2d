//! Operations endpoints (no auth): liveness, readiness, metrics.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};

use super::AppState;
use crate::config::RETRY_AFTER_SECS;

/// 200 while the process serves.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Serving")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// 200 once migrations ran and the last database probe (every second, on its own
/// connection) succeeded; else 503. No query per request: a flood of `/readyz` costs
/// the database nothing.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready"), (status = 503, description = "Not ready")))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let ready = state.ready.load(Ordering::Acquire) && state.actors.health().is_up();
    if ready {
        HttpResponse::Ok().content_type("text/plain").body("ready")
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", RETRY_AFTER_SECS.to_string()))
            .content_type("text/plain")
            .body("not ready")
    }
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Metrics")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.actors.record_pools();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render())
}
