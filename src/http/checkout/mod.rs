//! `POST /checkout`: the sold-out gate first, then the product actor, then the writer;
//! the answer comes once the order is committed.
//!
//! This is the hottest path of the service, so it is written to spend little: the body
//! of the usual shape is read into borrowed fields without a JSON tree (anything else
//! takes the general, field-by-field path and its error messages), a sold-out refusal
//! is decided before anything is copied or hashed and answered with a body rendered
//! once, and a new key costs no cache write (the product actor knows its keys; replays
//! are kept in memory once served). The Idempotency-Key's side (the header, the 201
//! body as first sent, replays) is `idempotency.rs`.

mod idempotency;

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use super::auth::{Caller, ANY_STORE_KEY};
use super::body::RawBody;
use super::checkout_body::{general_body, parse_checkout, CheckoutFields};
use super::errors::{ApiError, PROBLEM_JSON};
use super::AppState;
use crate::actors::product::{CheckoutCommand, ProductMsg};
use crate::actors::Checkout;
use crate::db::orders::{find_by_idempotency_key, find_order};
use crate::domain::ledger::Refusal;
use crate::domain::order::Order;

use idempotency::{answer_known, created, idempotency_key, remembered, replay_stored};
pub use idempotency::{optional_idempotency_key, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};

pub const WAITING_ROOM_TOKEN: &str = "Waiting-Room-Token";

/// `POST /checkout` body. Its strings are refused with a control character in them
/// (Unicode's Cc), which the pattern states.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CheckoutRequest {
    /// The product (on `/products/{id}/checkout` it may be left out; if given, it must
    /// be the path's).
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    product_id: String,
    /// 1–100.
    #[schema(minimum = 1, maximum = 100)]
    quantity: i64,
    /// The store's own id for the buyer, 1–200 characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    customer_id: String,
    consent: ConsentRequest,
}

/// The buyer's consent, kept in the audit trail with the order.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ConsentRequest {
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    terms_version: String,
    marketing: bool,
}

/// The answer to a checkout of a sold-out product with a new key: always the same
/// problem document, rendered once.
fn sold_out() -> HttpResponse {
    static BODY: LazyLock<Bytes> =
        LazyLock::new(|| Bytes::from(ApiError::refused(Refusal::SoldOut).body()));
    HttpResponse::build(ApiError::refused(Refusal::SoldOut).status_code())
        .insert_header((header::CONTENT_TYPE, PROBLEM_JSON))
        .body(BODY.clone())
}

/// A response and the outcome it is counted as.
struct Served {
    response: HttpResponse,
    outcome: &'static str,
}

/// Buys `quantity` units of a product. 201 means the order is committed.
#[utoipa::path(post, path = "/api/v1/checkout", tag = "checkout", request_body = CheckoutRequest,
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = "^[!-~]*$", description = "1–255 visible ASCII characters; a retry with the same key and body returns the original answer")),
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
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    serve_checkout(&req, &state, &caller, &body.0, None).await
}

/// The same checkout with the product in the path, so that a router can place it by its
/// path. The body may omit `product_id`; one that names another product is a 422.
#[utoipa::path(post, path = "/api/v1/products/{id}/checkout", tag = "checkout", request_body = CheckoutRequest,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "the product"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = "^[!-~]*$", description = "1–255 visible ASCII characters; a retry with the same key and body returns the original answer")),
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
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    serve_checkout(&req, &state, &caller, &body.0, Some(id.as_str())).await
}

/// Places the order and records the checkout's outcome and duration.
async fn serve_checkout(
    req: &HttpRequest,
    state: &AppState,
    caller: &Caller,
    body: &[u8],
    path_id: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let result = place_order(req, state, caller, body, path_id).await;
    crate::metrics::CHECKOUT_DURATION.observe(started.elapsed().as_secs_f64());
    let outcome = match &result {
        Ok(served) => served.outcome,
        Err(e) => e.code(),
    };
    crate::metrics::count_checkout(outcome);
    result.map(|served| served.response)
}

async fn place_order(
    req: &HttpRequest,
    state: &AppState,
    caller: &Caller,
    body: &[u8],
    path_id: Option<&str>,
) -> Result<Served, ApiError> {
    // The answers come in this order: malformed body (400) or a product_id other than
    // the path's (422), then the key's role (403), the Idempotency-Key (400, 422), the
    // fields (422).
    let plain = CheckoutFields::plain(body, path_id);
    let general = match plain {
        Some(_) => None,
        None => Some(general_body(body, path_id)?),
    };
    let grant = caller.store_key(ANY_STORE_KEY)?;
    let key = idempotency_key(req)?;
    let parsed;
    let fields = match plain {
        Some(fields) => fields,
        None => {
            parsed = parse_checkout(general.as_ref().expect("parsed above"))?;
            CheckoutFields::of(&parsed)
        }
    };
    // The product's owner decides (limits, idempotency, stock): another instance's
    // product is its to sell.
    if let Some(response) =
        super::forward_raw_if_elsewhere(req, state, fields.product_id, body).await?
    {
        return Ok(Served {
            response,
            outcome: "forwarded",
        });
    }
    let limits = caller.limits().ok_or(ApiError::Forbidden)?;
    let limit_addr = if limits.limits_addresses() {
        super::buyer_addr(req, state)
    } else {
        None
    };
    limits.check_checkout(fields.customer_id, limit_addr.as_deref())?;
    // The sold-out fast path: refused without a mailbox, the database, a copy or a
    // hash. A key the product has an order for is let through, to be replayed. Like
    // every refusal it binds nothing: after a restock the same key may buy.
    if state
        .actors
        .gate_refuses(&grant.store_id, fields.product_id, key)
    {
        return Ok(Served {
            response: sold_out(),
            outcome: "sold_out",
        });
    }
    // The circuit breaker: with the database away, a new order cannot commit; fail fast
    // rather than queue. A replay this process keeps in memory needs no database.
    if !state.actors.health().is_up() {
        let body = fields.to_body();
        return match remembered(state, &grant.store_id, key) {
            Some(known) => answer_known(&known, body.fingerprint()),
            None => Err(ApiError::Unavailable),
        };
    }
    let client_addr = match limit_addr {
        Some(addr) => Some(addr),
        None => super::buyer_addr(req, state),
    };
    let body = fields.to_body();
    let request_hash = body.fingerprint();
    let product_id = body.product_id.clone();
    let cmd = CheckoutCommand {
        span: tracing::Span::current(),
        body,
        idempotency_key: key.to_owned(),
        request_hash,
        api_key_id: grant.key_id.clone(),
        client_addr,
        queue_token: req
            .headers()
            .get(WAITING_ROOM_TOKEN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        key_checked: false,
    };
    let send = |cmd: CheckoutCommand| {
        super::ask_write(|reply| {
            state.actors.to_product(
                &grant.store_id,
                &product_id,
                ProductMsg::Checkout { cmd, reply },
            )
        })
    };
    let mut answer = send(cmd).await;
    // The product's key filter says an older order may have this key: the database
    // knows. Found: replayed (or refused as reused); not found: a new checkout.
    if let Ok(Checkout::MaybeKnown(cmd)) = answer {
        match Box::pin(stored_by_key(state, &grant.store_id, key)).await? {
            Some((_, known)) if known != request_hash => {
                return Err(ApiError::IdempotencyKeyReused)
            }
            Some((order, _)) => {
                return replay_stored(state, &grant.store_id, key, request_hash, Some(order))
            }
            None => {
                answer = send(CheckoutCommand {
                    key_checked: true,
                    ..*cmd
                })
                .await;
            }
        }
    }
    match answer {
        // A new key costs no cache write: while its order is in flight or kept, the
        // product actor knows the key (a retry comes back as `KnownKey`), and the
        // database holds it for good.
        Ok(Checkout::Created(order)) => Ok(Served {
            response: HttpResponse::Created()
                .insert_header((header::LOCATION, format!("/api/v1/orders/{}", order.id)))
                .content_type("application/json")
                .body(created(&order)),
            outcome: "created",
        }),
        Ok(Checkout::KnownKey {
            order_id,
            request_hash: known,
        }) => {
            if known != request_hash {
                return Err(ApiError::IdempotencyKeyReused);
            }
            if let Some(known) = remembered(state, &grant.store_id, key) {
                return answer_known(&known, request_hash);
            }
            let order = Box::pin(stored_order(state, &grant.store_id, &order_id)).await?;
            replay_stored(state, &grant.store_id, key, request_hash, order)
        }
        Ok(Checkout::Duplicate | Checkout::MaybeKnown(_)) => {
            match Box::pin(stored_by_key(state, &grant.store_id, key)).await? {
                Some((_, known)) if known != request_hash => Err(ApiError::IdempotencyKeyReused),
                found => replay_stored(
                    state,
                    &grant.store_id,
                    key,
                    request_hash,
                    found.map(|(order, _)| order),
                ),
            }
        }
        // A refusal or a 503 binds nothing: a retry with this key is decided afresh,
        // and after `outcome_unknown` it learns the outcome from the product, which
        // knows the key until its batch is resolved.
        Err(e) => Err(e),
    }
}

// The database's side of a checkout, for the rare answers that need it. Boxed where they
// are awaited: a query's future is kilobytes, and inline it would be part of every
// checkout's future, moved on every request.

/// The order stored with `key`, and its request's fingerprint.
async fn stored_by_key(
    state: &AppState,
    store_id: &str,
    key: &str,
) -> Result<Option<(Order, Vec<u8>)>, ApiError> {
    let client = state.pool.get().await?;
    Ok(find_by_idempotency_key(&client, store_id, key).await?)
}

/// The stored order `order_id` of the store.
async fn stored_order(
    state: &AppState,
    store_id: &str,
    order_id: &str,
) -> Result<Option<Order>, ApiError> {
    let client = state.pool.get().await?;
    Ok(find_order(&client, store_id, order_id).await?)
}
