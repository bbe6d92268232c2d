//! Orders: reads, listings, and the lifecycle (confirm, cancel) through the product actor.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;

use super::auth::{token_hash, Caller, ADMIN_KEY, ANY_STORE_KEY};
use super::body::JsonBody;
use super::errors::ApiError;
use super::query::{pick, Params};
use super::AppState;
use crate::actors::product::{ChangedBy, Lifecycle, ProductMsg};
use crate::db::orders::{find_order, list_orders, OrderFilter};
use crate::db::replica::Reader;
use crate::db::stores::KeyGrant;
use crate::domain::ledger::Refusal;
use crate::domain::order::Order;
use crate::domain::validate::{Fields, Required};

/// Fields an order representation has (for `?fields=`).
pub const ORDER_FIELDS: &[&str] = &[
    "id",
    "store_id",
    "product_id",
    "customer_id",
    "quantity",
    "unit_price_cents",
    "currency",
    "total_cents",
    "status",
    "expires_at",
    "created_at",
];
pub const ORDER_STATUSES: &[&str] = &["reserved", "confirmed", "cancelled", "expired"];

/// `POST /orders/{id}/confirm` body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ConfirmRequest {
    /// The payment provider's reference, 1–255 characters.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    payment_reference: String,
}

/// A page of orders.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    items: Vec<Value>,
    /// Pass as `?cursor=` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

fn to_value(order: &Order) -> Value {
    serde_json::to_value(order).unwrap_or(Value::Null)
}

async fn order_of_store(state: &AppState, store_id: &str, id: &str) -> Result<Order, ApiError> {
    let client = state.pool.get().await?;
    find_order(&client, store_id, id)
        .await?
        .ok_or(ApiError::NotFound("order_not_found", "no such order"))
}

/// One order of the caller's store; `?fields=` picks fields.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path), ("fields" = Option<String>, Query, description = "comma-separated fields to return")),
    responses((status = 200, body = Order), (status = 404), (status = 422)))]
pub async fn get_order(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ANY_STORE_KEY)?;
    let mut params = Params::parse(req.query_string())?;
    let fields = params.fields(ORDER_FIELDS);
    params.finish()?;
    let caller = token_hash(req.headers());
    let (store_id, id) = (grant.store_id.as_str(), id.as_str());
    let order = state
        .read_found(Reader::Caller(caller.as_ref()), |client| async move {
            find_order(&client, store_id, id).await
        })
        .await?
        .ok_or(ApiError::NotFound("order_not_found", "no such order"))?;
    Ok(HttpResponse::Ok().json(pick(to_value(&order), fields.as_deref())))
}

/// The store's orders, newest first, filtered, in pages (admin key).
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", security(("bearer" = [])),
    params(
        ("status" = Option<String>, Query, pattern = "^(reserved|confirmed|cancelled|expired)$", description = "reserved, confirmed, cancelled or expired"),
        ("product_id" = Option<String>, Query), ("customer_id" = Option<String>, Query),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "1–200, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("fields" = Option<String>, Query, description = "comma-separated fields to return")),
    responses((status = 200, body = OrderPage), (status = 422)))]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    let mut params = Params::parse(req.query_string())?;
    let filter = OrderFilter {
        status: params.one_of("status", ORDER_STATUSES),
        product_id: params.text("product_id"),
        customer_id: params.text("customer_id"),
        before_id: params.text("cursor"),
    };
    let limit = params.limit();
    let fields = params.fields(ORDER_FIELDS);
    params.finish()?;
    if filter
        .before_id
        .as_deref()
        .is_some_and(|c| !c.starts_with("ord_"))
    {
        return Err(ApiError::Validation(vec![
            crate::domain::validate::FieldError::new("cursor", "is not a cursor this API gave out"),
        ]));
    }
    let caller = token_hash(req.headers());
    let (store_id, filter) = (grant.store_id.as_str(), &filter);
    let mut orders = state
        .read(Reader::Caller(caller.as_ref()), |client| async move {
            list_orders(&**client, store_id, filter, limit + 1).await
        })
        .await?;
    let next_cursor = if orders.len() as i64 > limit {
        orders.truncate(limit as usize);
        orders.last().map(|o| o.id.clone())
    } else {
        None
    };
    let items = orders
        .iter()
        .map(|o| pick(to_value(o), fields.as_deref()))
        .collect();
    Ok(HttpResponse::Ok().json(OrderPage { items, next_cursor }))
}

fn changed_by(req: &HttpRequest, state: &AppState, grant: &KeyGrant) -> ChangedBy {
    ChangedBy {
        api_key_id: Some(grant.key_id.clone()),
        client_addr: super::buyer_addr(req, state),
    }
}

/// Sends a confirm or cancel to the order's product; the answer when the order was not
/// a live hold comes from its status in the database.
async fn change(
    req: &HttpRequest,
    body: Option<&serde_json::Value>,
    state: &AppState,
    grant: &KeyGrant,
    id: &str,
    make: impl FnOnce(String, crate::actors::product::LifecycleReply) -> ProductMsg,
    settled: impl Fn(&str) -> Option<Result<(), ApiError>>,
) -> Result<HttpResponse, ApiError> {
    let order = order_of_store(state, &grant.store_id, id).await?;
    // A hold is its product's owner's to change.
    if let Some(answer) = super::forward_if_elsewhere(req, state, &order.product_id, body).await? {
        return Ok(answer);
    }
    let outcome = super::ask_write(|reply| {
        state.actors.to_product(
            &grant.store_id,
            &order.product_id,
            make(order.id.clone(), reply),
        )
    })
    .await?;
    let order = match outcome {
        Lifecycle::Changed(order) => order,
        Lifecycle::NotHeld => {
            let now = order_of_store(state, &grant.store_id, id).await?;
            // Repeating a change that was made is harmless; anything else is refused.
            match settled(&now.status) {
                Some(Ok(())) => now,
                Some(Err(e)) => return Err(e),
                None => return Err(ApiError::Unavailable),
            }
        }
    };
    Ok(HttpResponse::Ok().json(order))
}

/// reserved → confirmed (admin key). Repeating it is harmless; an expired or cancelled
/// order is refused.
#[utoipa::path(post, path = "/api/v1/orders/{id}/confirm", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = ConfirmRequest,
    responses((status = 200, body = Order), (status = 404), (status = 409, description = "hold_expired, order_cancelled"),
        (status = 503, description = "overloaded, unavailable (nothing was done), outcome_unknown (repeat the confirm to learn it); with Retry-After")))]
pub async fn confirm(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    let mut f = Fields::new(&body.0)?;
    let payment_reference = f.string("payment_reference", Required, 1..=255);
    f.finish()?;
    let payment_reference = payment_reference.unwrap_or_default();
    let by = changed_by(&req, &state, grant);
    change(
        &req,
        Some(&body.0),
        &state,
        grant,
        &id,
        |order_id, reply| ProductMsg::Confirm {
            order_id,
            payment_reference,
            by,
            reply,
        },
        |status| match status {
            "confirmed" => Some(Ok(())),
            "expired" => Some(Err(ApiError::refused(Refusal::HoldExpired))),
            "cancelled" => Some(Err(ApiError::refused(Refusal::OrderCancelled))),
            _ => None,
        },
    )
    .await
}

/// reserved or confirmed → cancelled, stock back (admin key). Repeating it is harmless;
/// an expired order is refused.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Order), (status = 404), (status = 409, description = "hold_expired"),
        (status = 503, description = "overloaded, unavailable (nothing was done), outcome_unknown (repeat the cancel to learn it); with Retry-After")))]
pub async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    let by = changed_by(&req, &state, grant);
    change(
        &req,
        None,
        &state,
        grant,
        &id,
        |order_id, reply| ProductMsg::Cancel {
            order_id,
            by,
            reply,
        },
        |status| match status {
            "cancelled" => Some(Ok(())),
            "expired" => Some(Err(ApiError::refused(Refusal::HoldExpired))),
            _ => None,
        },
    )
    .await
}
