//! Webhooks (store admin): endpoints, their secrets, the deliveries log, redelivery, and
//! the store's recent events. A store sees only its own: another store's id is a 404.

use std::net::IpAddr;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;

use super::auth::{Caller, ADMIN_KEY};
use super::body::JsonBody;
use super::errors::ApiError;
use super::query::Params;
use super::AppState;
use crate::db::webhooks::{self as db, Delivery, Endpoint, EndpointPatch, DELIVERY_PREFIX};
use crate::domain::ids::new_id;
use crate::domain::validate::{FieldError, Fields, Optional, Required};
use crate::domain::webhook::{check_addr, new_secret, parse_url, UrlError, EVENT_TYPES};

/// How long a rotated-out secret keeps signing beside the new one.
const ROTATION_OVERLAP_SECS: f64 = 24.0 * 3600.0;
const STATUSES: &[&str] = &["enabled", "disabled"];
const DELIVERY_STATUSES: &[&str] = &["pending", "delivered", "failed"];

/// An event type a store may subscribe to.
// The schema of `events`' items; the service reads them as `EVENT_TYPES`, which a test
// holds this to.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub enum EventType {
    #[serde(rename = "order.created")]
    OrderCreated,
    #[serde(rename = "order.confirmed")]
    OrderConfirmed,
    #[serde(rename = "order.cancelled")]
    OrderCancelled,
    #[serde(rename = "order.expired")]
    OrderExpired,
    #[serde(rename = "product.sold_out")]
    ProductSoldOut,
    #[serde(rename = "product.restocked")]
    ProductRestocked,
    #[serde(rename = "drop.live")]
    DropLive,
}

/// `POST /webhooks` body (and the fields a PATCH may send, with `status`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct EndpointRequest {
    /// `https://` or `http://`, at most 2,000 characters; not an internal address.
    #[schema(min_length = 1, max_length = 2000)]
    url: String,
    /// Event types (at least one; a repeated one counts once).
    #[schema(min_items = 1)]
    events: Vec<EventType>,
    /// At most 500 characters.
    #[schema(
        min_length = 0,
        max_length = 500,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    description: Option<String>,
    /// PATCH only: `enabled` or `disabled`.
    #[schema(pattern = "^(enabled|disabled)$")]
    status: Option<String>,
}

/// An endpoint with its secret: the answer to creation and rotation, the only times the
/// secret is shown.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// `whsec_` + base64 of 32 random bytes.
    secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointPage {
    items: Vec<Endpoint>,
    next_cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    items: Vec<Delivery>,
    next_cursor: Option<String>,
}

/// Events as delivered: `{"id","type","created_at","data"}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EventPage {
    items: Vec<Value>,
    next_cursor: Option<String>,
}

fn not_found() -> ApiError {
    ApiError::NotFound("webhook_not_found", "no such webhook endpoint")
}

fn url_error(e: UrlError) -> ApiError {
    match e {
        UrlError::Invalid(message) => ApiError::Validation(vec![FieldError::new("url", message)]),
        UrlError::Forbidden(_) => ApiError::Unprocessable {
            code: "webhook_url_forbidden",
            title: "Webhook URL forbidden",
            detail: format!("url: {e}; the service does not send webhooks there"),
        },
    }
}

/// The URL guard at creation and change: the address written in the URL, or every
/// address its host resolves to now, must be public or inside the allowed nets.
async fn guard_url(state: &AppState, raw: &str) -> Result<(), ApiError> {
    let url = parse_url(raw).map_err(url_error)?;
    let allow = &state.actors.settings().webhook_allow_nets;
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return check_addr(ip, allow).map_err(url_error);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs = tokio::net::lookup_host((bare, port)).await.map_err(|_| {
        ApiError::Validation(vec![FieldError::new("url", "its host does not resolve")])
    })?;
    for a in addrs {
        check_addr(a.ip(), allow).map_err(url_error)?;
    }
    Ok(())
}

async fn endpoint_of_store(
    state: &AppState,
    store_id: &str,
    id: &str,
) -> Result<Endpoint, ApiError> {
    let client = state.pool.get().await?;
    db::find_endpoint(&**client, store_id, id)
        .await?
        .ok_or_else(not_found)
}

/// Subscribes an endpoint; its secret is shown in this answer only.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", security(("bearer" = [])),
    request_body = EndpointRequest,
    responses((status = 201, body = EndpointWithSecret), (status = 409, description = "webhook_limit_reached"),
        (status = 422, description = "validation_failed, webhook_url_forbidden")))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    let mut f = Fields::new(&body.0)?;
    let url = f.string("url", Required, 1..=crate::domain::webhook::MAX_URL_LEN);
    let events = f.string_set("events", Required, EVENT_TYPES);
    let description = f.string("description", Optional, 0..=500);
    f.finish()?;
    let url = url.unwrap_or_default();
    guard_url(&state, &url).await?;
    let new = Endpoint {
        id: new_id("whk"),
        url,
        events: events.unwrap_or_default(),
        description,
        status: "enabled".into(),
        disabled_reason: None,
        created_at: chrono::Utc::now(),
    };
    let secret = new_secret();
    let max = state.actors.settings().webhook_max_per_store as i64;
    let mut client = state.pool.get().await?;
    let endpoint = db::insert_endpoint(&mut client, &grant.store_id, &new, &secret, max)
        .await?
        .ok_or_else(|| ApiError::Conflict {
            code: "webhook_limit_reached",
            title: "Webhook limit reached",
            detail: format!("a store may have at most {max} webhook endpoints"),
        })?;
    Ok(HttpResponse::Created().json(EndpointWithSecret { endpoint, secret }))
}

/// The store's endpoints, newest first.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", security(("bearer" = [])),
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "1–200, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, body = EndpointPage)))]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    let mut params = Params::parse(req.query_string())?;
    let cursor = params.text("cursor");
    let limit = params.limit();
    params.finish()?;
    let client = state.pool.get().await?;
    let mut items =
        db::list_endpoints(&**client, &grant.store_id, cursor.as_deref(), limit + 1).await?;
    let next_cursor = next_page(&mut items, limit, |e| e.id.clone());
    Ok(HttpResponse::Ok().json(EndpointPage { items, next_cursor }))
}

/// Cuts a page read with one extra row to `limit`; the cursor is the last row's.
fn next_page<T>(items: &mut Vec<T>, limit: i64, cursor: impl Fn(&T) -> String) -> Option<String> {
    if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(cursor)
    } else {
        None
    }
}

/// One endpoint (without its secret).
#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Endpoint), (status = 404, description = "webhook_not_found")))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    Ok(HttpResponse::Ok().json(endpoint_of_store(&state, &grant.store_id, &id).await?))
}

/// Changes an endpoint's url, events, description or status; enabling it again forgets
/// its failures.
#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = EndpointRequest,
    responses((status = 200, body = Endpoint), (status = 404, description = "webhook_not_found"),
        (status = 422, description = "validation_failed, webhook_url_forbidden")))]
pub async fn patch(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    let mut f = Fields::new(&body.0)?;
    let url = f.string("url", Optional, 1..=crate::domain::webhook::MAX_URL_LEN);
    let events = f.string_set("events", Optional, EVENT_TYPES);
    let clear_description = f.is_null("description");
    let description = f.string("description", Optional, 0..=500);
    let status = f.string("status", Optional, 1..=20);
    if let Some(s) = &status {
        f.check(
            STATUSES.contains(&s.as_str()),
            "status",
            "must be enabled or disabled",
        );
    }
    f.finish()?;
    if let Some(url) = &url {
        guard_url(&state, url).await?;
    }
    let patch = EndpointPatch {
        url,
        events,
        description: if clear_description {
            Some(None)
        } else {
            description.map(Some)
        },
        status,
    };
    let client = state.pool.get().await?;
    let endpoint = db::update_endpoint(&**client, &grant.store_id, &id, &patch)
        .await?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(endpoint))
}

/// Deletes an endpoint and its deliveries.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, description = "webhook_not_found")))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    let client = state.pool.get().await?;
    if !db::delete_endpoint(&**client, &grant.store_id, &id).await? {
        return Err(not_found());
    }
    Ok(HttpResponse::NoContent().finish())
}

/// A new secret, shown in this answer only; the old one keeps signing beside it for 24 h.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/rotate-secret", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = EndpointWithSecret), (status = 404, description = "webhook_not_found")))]
pub async fn rotate_secret(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    let secret = new_secret();
    let client = state.pool.get().await?;
    let endpoint = db::rotate_secret(
        &**client,
        &grant.store_id,
        &id,
        &secret,
        ROTATION_OVERLAP_SECS,
    )
    .await?
    .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(EndpointWithSecret { endpoint, secret }))
}

/// A `dlv_<n>` id's number.
fn delivery_number(field: &'static str, raw: &str) -> Result<i64, ApiError> {
    raw.strip_prefix(DELIVERY_PREFIX)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            ApiError::Validation(vec![FieldError::new(
                field,
                "is not an id this API gave out",
            )])
        })
}

/// The endpoint's deliveries, newest first, each with every attempt (oldest first).
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path),
        ("status" = Option<String>, Query, pattern = "^(pending|delivered|failed)$", description = "pending, delivered or failed"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "1–200, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, body = DeliveryPage), (status = 404, description = "webhook_not_found")))]
pub async fn deliveries(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    let mut params = Params::parse(req.query_string())?;
    let status = params.one_of("status", DELIVERY_STATUSES);
    let cursor = params.text("cursor");
    let limit = params.limit();
    params.finish()?;
    let before = cursor.map(|c| delivery_number("cursor", &c)).transpose()?;
    let endpoint = endpoint_of_store(&state, &grant.store_id, &id).await?;
    let client = state.pool.get().await?;
    let mut rows = db::list_deliveries(
        &**client,
        &endpoint.id,
        status.as_deref(),
        before,
        limit + 1,
    )
    .await?;
    let next_cursor = next_page(&mut rows, limit, |(_, d)| d.id.clone());
    let items = rows.into_iter().map(|(_, d)| d).collect();
    Ok(HttpResponse::Ok().json(DeliveryPage { items, next_cursor }))
}

/// Attempts a delivery again now (also one that was delivered or failed).
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    security(("bearer" = [])), params(("id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, description = "due now; the attempt shows in the deliveries log"),
        (status = 404, description = "webhook_not_found, delivery_not_found")))]
pub async fn retry(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    let (id, delivery_id) = path.into_inner();
    let missing = || ApiError::NotFound("delivery_not_found", "no such delivery");
    let number = delivery_number("delivery_id", &delivery_id).map_err(|_| missing())?;
    let endpoint = endpoint_of_store(&state, &grant.store_id, &id).await?;
    let client = state.pool.get().await?;
    if !db::retry_delivery(&**client, &endpoint.id, number).await? {
        return Err(missing());
    }
    state.actors.wake_dispatcher();
    Ok(HttpResponse::Accepted().json(serde_json::json!({"id": delivery_id, "status": "pending"})))
}

/// The store's events of the retention period (30 days), newest first, each as
/// delivered: for recovering what an endpoint missed.
#[utoipa::path(get, path = "/api/v1/events", tag = "webhooks", security(("bearer" = [])),
    params(("type" = Option<String>, Query, pattern = "^(order\\.(created|confirmed|cancelled|expired)|product\\.(sold_out|restocked)|drop\\.live)$", description = "one event type"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "1–200, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, body = EventPage)))]
pub async fn events(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    let mut params = Params::parse(req.query_string())?;
    let kind = params.one_of("type", EVENT_TYPES);
    let cursor = params.text("cursor");
    let limit = params.limit();
    params.finish()?;
    let before = cursor
        .map(|c| {
            db::EventPosition::parse_cursor(&c).ok_or_else(|| {
                ApiError::Validation(vec![FieldError::new(
                    "cursor",
                    "is not a cursor this API gave out",
                )])
            })
        })
        .transpose()?;
    let retention = state.actors.settings().webhook_retention_days;
    let caller = super::auth::token_hash(req.headers());
    let (store_id, kind) = (grant.store_id.as_str(), kind.as_deref());
    let mut rows = state
        .read(
            crate::db::replica::Reader::Caller(caller.as_ref()),
            |client| async move {
                db::list_events(&**client, store_id, kind, before, limit + 1, retention).await
            },
        )
        .await?;
    let next_cursor = next_page(&mut rows, limit, |(at, _)| at.to_cursor());
    let items = rows.into_iter().map(|(_, e)| e).collect();
    Ok(HttpResponse::Ok().json(EventPage { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::EventType::*;
    use super::EVENT_TYPES;

    #[test]
    fn the_documented_event_types_are_the_ones_read() {
        let documented: Vec<String> = [
            OrderCreated,
            OrderConfirmed,
            OrderCancelled,
            OrderExpired,
            ProductSoldOut,
            ProductRestocked,
            DropLive,
        ]
        .iter()
        .map(|t| {
            serde_json::to_value(t)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
        assert_eq!(documented, EVENT_TYPES);
    }
}
