//! `POST /checkout`: idempotency first, then the store and product actors, then the
//! writer; the answer comes once the order is committed.

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::{Caller, ANY_STORE_KEY};
use super::body::JsonBody;
use super::errors::ApiError;
use super::{AppState, Idempotency};
use crate::actors::product::{CheckoutCommand, ProductMsg};
use crate::actors::Checkout;
use crate::db::orders::{find_by_idempotency_key, find_order};
use crate::domain::ledger::Refusal;
use crate::domain::order::{CheckoutBody, Consent, Order};
use crate::domain::validate::{FieldError, Fields, Required};
use crate::metrics::{CHECKOUTS, IDEMPOTENT_REPLAYS};

pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";
pub const WAITING_ROOM_TOKEN: &str = "Waiting-Room-Token";

/// `POST /checkout` body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CheckoutRequest {
    product_id: String,
    /// 1–100.
    quantity: i64,
    /// The store's own id for the buyer, 1–200 characters.
    customer_id: String,
    consent: ConsentRequest,
}

/// The buyer's consent, kept in the audit trail with the order.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ConsentRequest {
    terms_version: String,
    marketing: bool,
}

fn parse_checkout(body: &serde_json::Value) -> Result<CheckoutBody, Vec<FieldError>> {
    let mut f = Fields::new(body)?;
    let product_id = f.string("product_id", Required, 1..=64);
    let quantity = f.int("quantity", Required, 1..=100);
    let customer_id = f.string("customer_id", Required, 1..=200);
    let consent = f.object("consent", Required, |c| {
        let terms_version = c.string("terms_version", Required, 1..=64);
        let marketing = c.bool("marketing", Required);
        Some(Consent {
            terms_version: terms_version?,
            marketing: marketing?,
        })
    });
    f.finish()?;
    Ok(CheckoutBody {
        product_id: product_id.unwrap_or_default(),
        quantity: quantity.unwrap_or_default(),
        customer_id: customer_id.unwrap_or_default(),
        consent: consent.unwrap_or(Consent {
            terms_version: String::new(),
            marketing: false,
        }),
    })
}

/// The `Idempotency-Key` header: 1–255 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<String, ApiError> {
    optional_idempotency_key(req)?.ok_or(ApiError::MissingIdempotencyKey)
}

/// The `Idempotency-Key` header if there is one (restock: optional).
pub fn optional_idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(ApiError::Validation(vec![FieldError::new(
            IDEMPOTENCY_KEY,
            "must be 1 to 255 visible ASCII characters",
        )]));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Removes an in-flight marker unless the request finished (the client may hang up, or
/// the request fail with 503, and a retry must then be served afresh).
struct InFlightGuard<'a> {
    cache: &'a crate::Cache<String, Arc<Idempotency>>,
    key: Option<String>,
}

impl InFlightGuard<'_> {
    fn complete(&mut self, result: Idempotency) {
        if let Some(key) = self.key.take() {
            self.cache.insert(key, Arc::new(result));
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.cache.invalidate(&key);
        }
    }
}

fn replay(status: u16, content_type: &str, body: Bytes) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
        .content_type(content_type)
        .insert_header((IDEMPOTENT_REPLAYED, "true"))
        .body(body)
}

/// The 201 body of `order` as it was first sent. Every field of an order but its status
/// is immutable, and the status it was created with follows from `expires_at` (a hold
/// is created `reserved`, anything else `confirmed`), so the body rendered from the
/// stored row after a restart, a confirm or a cancel is the original byte for byte.
fn created(order: &Order) -> Bytes {
    let original = Order {
        status: if order.expires_at.is_some() {
            "reserved"
        } else {
            "confirmed"
        }
        .to_owned(),
        ..order.clone()
    };
    serde_json::to_vec(&original).unwrap_or_default().into()
}

/// Buys `quantity` units of a product. 201 means the order is committed.
#[utoipa::path(post, path = "/api/v1/checkout", tag = "checkout", request_body = CheckoutRequest,
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "1–255 visible ASCII characters; a retry with the same key and body returns the original answer")),
    responses(
        (status = 201, body = Order, description = "Committed", headers(
            ("Location" = String, description = "the order's URL"),
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with this Idempotency-Key"))),
        (status = 400, description = "missing_idempotency_key, malformed_body"),
        (status = 404, description = "product_not_found"),
        (status = 409, description = "sale_not_started, sale_ended, sold_out, insufficient_stock, customer_limit_exceeded, idempotency_in_progress"),
        (status = 422, description = "validation_failed, idempotency_key_reused"),
        (status = 429, description = "rate_limited (with Retry-After)"),
        (status = 503, description = "overloaded, unavailable (nothing was done), outcome_unknown (retry with the same Idempotency-Key to learn it); with Retry-After")))]
pub async fn checkout(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    serve_checkout(&req, &state, &caller, body).await
}

/// The same checkout with the product in the path, so that a router can place it by its
/// path. The body may omit `product_id`; one that names another product is a 422.
#[utoipa::path(post, path = "/api/v1/products/{id}/checkout", tag = "checkout", request_body = CheckoutRequest,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "the product"),
        ("Idempotency-Key" = String, Header, description = "1–255 visible ASCII characters; a retry with the same key and body returns the original answer")),
    responses(
        (status = 201, body = Order, description = "Committed", headers(
            ("Location" = String, description = "the order's URL"),
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with this Idempotency-Key"))),
        (status = 400, description = "missing_idempotency_key, malformed_body"),
        (status = 404, description = "product_not_found"),
        (status = 409, description = "sale_not_started, sale_ended, sold_out, insufficient_stock, customer_limit_exceeded, idempotency_in_progress"),
        (status = 422, description = "validation_failed (also a body whose product_id is not the path's), idempotency_key_reused"),
        (status = 429, description = "rate_limited (with Retry-After)"),
        (status = 503, description = "overloaded, unavailable (nothing was done), outcome_unknown (retry with the same Idempotency-Key to learn it); with Retry-After")))]
pub async fn product_checkout(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let mut body = body;
    if let Some(fields) = body.0.as_object_mut() {
        match fields.get("product_id") {
            None => {
                fields.insert("product_id".to_owned(), id.as_str().into());
            }
            Some(named) if named.as_str() == Some(id.as_str()) => {}
            Some(_) => {
                return Err(vec![FieldError::new(
                    "product_id",
                    "must be the product in the path, or left out",
                )]
                .into())
            }
        }
    }
    serve_checkout(&req, &state, &caller, body).await
}

/// Places the order and records the checkout's outcome and duration.
async fn serve_checkout(
    req: &HttpRequest,
    state: &AppState,
    caller: &Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let result = place_order(req, state, caller, body).await;
    crate::metrics::CHECKOUT_DURATION.observe(started.elapsed().as_secs_f64());
    let outcome = match &result {
        Ok(r) if r.headers().contains_key(IDEMPOTENT_REPLAYED) => "replayed",
        Ok(r) if r.status() == StatusCode::CREATED => "created",
        Ok(_) => "replayed",
        Err(e) => e.code(),
    };
    CHECKOUTS.with_label_values(&[outcome]).inc();
    result
}

async fn place_order(
    req: &HttpRequest,
    state: &AppState,
    caller: &Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ANY_STORE_KEY)?;
    let key = idempotency_key(req)?;
    let raw = body.0;
    let body = parse_checkout(&raw)?;
    // The product's owner decides (limits, idempotency, stock): another instance's
    // product is its to sell.
    if let Some(answer) =
        super::forward_if_elsewhere(req, state, &body.product_id, Some(&raw)).await?
    {
        return Ok(answer);
    }
    let client_addr = super::buyer_addr(req, state);
    state
        .actors
        .limits(grant)
        .check_checkout(&body.customer_id, client_addr.as_deref())?;
    let request_hash = body.fingerprint();
    let cache_key = format!("{}\u{1f}{key}", grant.store_id);
    // The sold-out fast path: refused without a mailbox, the database or a cache write.
    // A key the product has an order for is let through, to be replayed. Like every
    // refusal it binds nothing: after a restock the same key may buy.
    if let Some(gate) = state.actors.gate(&body.product_id) {
        if gate.store_id == grant.store_id && gate.refuses(&key) {
            return Err(ApiError::refused(Refusal::SoldOut));
        }
    }
    // First sight of this key in this process wins the marker (one cache operation for
    // the lookup and the claim); any other request with it is answered from what the
    // cache holds.
    let entry = state
        .idempotency
        .entry(cache_key.clone())
        .or_insert_with(|| Arc::new(Idempotency::InFlight(request_hash)));
    crate::metrics::cache_lookup("idempotency", !entry.is_fresh());
    if !entry.is_fresh() {
        return answer_known(&entry.into_value(), request_hash);
    }
    let mut guard = InFlightGuard {
        cache: &state.idempotency,
        key: Some(cache_key),
    };
    // The circuit breaker: with the database away, a new order cannot commit; fail fast
    // rather than queue (the marker goes with the guard). Replays and sold-out refusals
    // above need no database.
    if !state.actors.health().is_up() {
        return Err(ApiError::Unavailable);
    }

    let cmd = CheckoutCommand {
        span: tracing::Span::current(),
        body,
        idempotency_key: key.clone(),
        request_hash,
        api_key_id: grant.key_id.clone(),
        client_addr,
        queue_token: req
            .headers()
            .get(WAITING_ROOM_TOKEN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let product_id = cmd.body.product_id.clone();
    let answer = super::ask_write(|reply| {
        state.actors.to_product(
            &grant.store_id,
            &product_id,
            ProductMsg::Checkout { cmd, reply },
        )
    })
    .await;
    match answer {
        Ok(Checkout::Created(order)) => {
            let body = created(&order);
            guard.complete(Idempotency::Done {
                request_hash,
                status: 201,
                content_type: "application/json",
                body: body.clone(),
            });
            Ok(HttpResponse::Created()
                .insert_header((header::LOCATION, format!("/api/v1/orders/{}", order.id)))
                .content_type("application/json")
                .body(body))
        }
        Ok(Checkout::KnownKey {
            order_id,
            request_hash: known,
        }) => {
            if known != request_hash {
                return Err(ApiError::IdempotencyKeyReused);
            }
            let client = state.pool.get().await?;
            let order = find_order(&**client, &grant.store_id, &order_id).await?;
            replay_stored(&mut guard, request_hash, order)
        }
        Ok(Checkout::Duplicate) => {
            let client = state.pool.get().await?;
            match find_by_idempotency_key(&**client, &grant.store_id, &key).await? {
                Some((_, known)) if known != request_hash => Err(ApiError::IdempotencyKeyReused),
                found => replay_stored(&mut guard, request_hash, found.map(|(order, _)| order)),
            }
        }
        // A refusal or a 503 binds nothing (the guard forgets the marker): a retry with
        // this key is decided afresh, and after `outcome_unknown` it learns the outcome
        // from the product, which knows the key until its batch is resolved.
        Err(e) => Err(e),
    }
}

/// The answer for a key this process has seen: replay, in progress, or reused.
fn answer_known(known: &Idempotency, request_hash: [u8; 32]) -> Result<HttpResponse, ApiError> {
    match known {
        Idempotency::Done {
            request_hash: h,
            status,
            content_type,
            body,
        } if *h == request_hash => {
            IDEMPOTENT_REPLAYS.with_label_values(&["memory"]).inc();
            Ok(replay(*status, content_type, body.clone()))
        }
        Idempotency::InFlight(h) if *h == request_hash => Err(ApiError::idempotency_in_progress()),
        _ => Err(ApiError::IdempotencyKeyReused),
    }
}

/// Replays an order found in the database under this key.
fn replay_stored(
    guard: &mut InFlightGuard<'_>,
    request_hash: [u8; 32],
    order: Option<Order>,
) -> Result<HttpResponse, ApiError> {
    let Some(order) = order else {
        // Known to the product actor but not committed yet: a batch is carrying it.
        return Err(ApiError::idempotency_in_progress());
    };
    IDEMPOTENT_REPLAYS.with_label_values(&["database"]).inc();
    let body = created(&order);
    guard.complete(Idempotency::Done {
        request_hash,
        status: 201,
        content_type: "application/json",
        body: body.clone(),
    });
    Ok(replay(201, "application/json", body))
}
