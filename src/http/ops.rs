//! Operations endpoints: liveness, readiness (no auth), metrics (optionally behind
//! `FLASHSALE_METRICS_TOKEN`).

use std::sync::atomic::Ordering;

use actix_web::{web, HttpRequest, HttpResponse};

use super::errors::ApiError;
use super::AppState;
use crate::config::RETRY_AFTER_SECS;
use crate::domain::ids::hash_secret;

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
    // Settled: every shard has a holder, so whatever we are asked can be served here or
    // by its owner.
    let ready = state.ready.load(Ordering::Acquire)
        && state.actors.health().is_up()
        && state.actors.cluster().joined();
    if ready {
        HttpResponse::Ok().content_type("text/plain").body("ready")
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", RETRY_AFTER_SECS.to_string()))
            .content_type("text/plain")
            .body("not ready")
    }
}

/// Prometheus text format. With `FLASHSALE_METRICS_TOKEN` set, only for
/// `Authorization: Bearer <that token>`.
#[utoipa::path(get, path = "/metrics", tag = "operations", security((), ("metrics_token" = [])),
    responses((status = 200, description = "Metrics", content_type = "text/plain"),
        (status = 401, description = "`unauthorized`: FLASHSALE_METRICS_TOKEN is set and was not given",
            body = super::openapi::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String)))))]
pub async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if let Some(expected) = &state.metrics_token_hash {
        let given = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(super::auth::bearer_token)
            .map(hash_secret);
        // Hashes of both sides: the comparison's time says nothing about the token.
        if given.as_ref() != Some(expected) {
            return Err(ApiError::Unauthorized);
        }
    }
    state.actors.record_pools();
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render()))
}
