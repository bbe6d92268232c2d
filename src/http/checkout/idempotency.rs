//! A checkout's Idempotency-Key: the header, the 201 body as it was first sent (so that
//! every replay is the original byte for byte), and the replays from this process's
//! memory or from the order stored under the key.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};

use super::Served;
use crate::domain::order::Order;
use crate::domain::validate::FieldError;
use crate::http::errors::ApiError;
use crate::http::{AppState, Idempotency};
use crate::metrics::IDEMPOTENT_REPLAYS;

pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

/// The `Idempotency-Key` header: 1–255 visible ASCII characters.
pub(super) fn idempotency_key(req: &HttpRequest) -> Result<&str, ApiError> {
    let value = req
        .headers()
        .get(IDEMPOTENCY_KEY)
        .ok_or(ApiError::MissingIdempotencyKey)?;
    checked_key(value.as_bytes())
}

fn checked_key(bytes: &[u8]) -> Result<&str, ApiError> {
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(ApiError::Validation(vec![FieldError::new(
            IDEMPOTENCY_KEY,
            "must be 1 to 255 visible ASCII characters",
        )]));
    }
    // Visible ASCII is UTF-8.
    std::str::from_utf8(bytes).map_err(|_| ApiError::MissingIdempotencyKey)
}

/// The `Idempotency-Key` header if there is one (restock: optional).
pub fn optional_idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    checked_key(value.as_bytes()).map(|key| Some(key.to_owned()))
}

fn replay(status: u16, content_type: &str, body: Bytes) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
        .content_type(content_type)
        .insert_header((IDEMPOTENT_REPLAYED, "true"))
        .body(body)
}

/// An order as the 201 shows it: [`Order`]'s fields in its order, borrowed, with the
/// status it was created with (so the same bytes as `Order`'s own serialization).
#[derive(serde::Serialize)]
struct CreatedView<'a> {
    id: &'a str,
    store_id: &'a str,
    product_id: &'a str,
    customer_id: &'a str,
    quantity: i32,
    unit_price_cents: i64,
    currency: &'a str,
    total_cents: i64,
    status: &'a str,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// The 201 body of `order` as it was first sent. Every field of an order but its status
/// is immutable, and the status it was created with follows from `expires_at` (a hold
/// is created `reserved`, anything else `confirmed`), so the body rendered from the
/// stored row after a restart, a confirm or a cancel is the original byte for byte.
pub(super) fn created(order: &Order) -> Bytes {
    let Order {
        id,
        store_id,
        product_id,
        customer_id,
        quantity,
        unit_price_cents,
        currency,
        total_cents,
        status: _,
        expires_at,
        created_at,
    } = order;
    let view = CreatedView {
        id,
        store_id,
        product_id,
        customer_id,
        quantity: *quantity,
        unit_price_cents: *unit_price_cents,
        currency,
        total_cents: *total_cents,
        status: if expires_at.is_some() {
            "reserved"
        } else {
            "confirmed"
        },
        expires_at: *expires_at,
        created_at: *created_at,
    };
    serde_json::to_vec(&view).unwrap_or_default().into()
}

/// The key of an idempotency result in [`AppState::idempotency`].
fn cache_key(store_id: &str, key: &str) -> String {
    format!("{store_id}\u{1f}{key}")
}

/// The answer this process keeps for `key` of the store, if it replayed it before.
pub(super) fn remembered(state: &AppState, store_id: &str, key: &str) -> Option<Arc<Idempotency>> {
    let known = state.idempotency.get(&cache_key(store_id, key));
    crate::metrics::cache_lookup("idempotency", known.is_some());
    known
}

/// The answer for a key this process keeps: the replay, or 422 if the request differs.
pub(super) fn answer_known(
    known: &Idempotency,
    request_hash: [u8; 32],
) -> Result<Served, ApiError> {
    match known {
        Idempotency::Done {
            request_hash: h,
            status,
            content_type,
            body,
        } if *h == request_hash => {
            IDEMPOTENT_REPLAYS.with_label_values(&["memory"]).inc();
            Ok(Served {
                response: replay(*status, content_type, body.clone()),
                outcome: "replayed",
            })
        }
        _ => Err(ApiError::IdempotencyKeyReused),
    }
}

/// Replays an order found in the database under this key, and keeps the answer for the
/// next retry.
pub(super) fn replay_stored(
    state: &AppState,
    store_id: &str,
    key: &str,
    request_hash: [u8; 32],
    order: Option<Order>,
) -> Result<Served, ApiError> {
    let Some(order) = order else {
        // Known to the product actor but not committed yet: a batch is carrying it.
        return Err(ApiError::idempotency_in_progress());
    };
    IDEMPOTENT_REPLAYS.with_label_values(&["database"]).inc();
    let body = created(&order);
    state.idempotency.insert(
        cache_key(store_id, key),
        Arc::new(Idempotency::Done {
            request_hash,
            status: 201,
            content_type: "application/json",
            body: body.clone(),
        }),
    );
    Ok(Served {
        response: replay(201, "application/json", body),
        outcome: "replayed",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_201_body_is_the_orders_own_serialization_with_its_first_status() {
        let now = chrono::Utc::now();
        for (expires_at, first) in [(None, "confirmed"), (Some(now), "reserved")] {
            let order = Order {
                id: "ord_1".into(),
                store_id: "sto_1".into(),
                product_id: "prd_\"1\"".into(),
                customer_id: "c-é".into(),
                quantity: 3,
                unit_price_cents: 1999,
                currency: "EUR".into(),
                total_cents: 5997,
                status: "cancelled".into(),
                expires_at,
                created_at: now,
            };
            let original = Order {
                status: first.into(),
                ..order.clone()
            };
            assert_eq!(created(&order), serde_json::to_vec(&original).unwrap());
        }
    }
}
