//! Order reads.

use actix_web::{web, HttpResponse};

use super::auth::{Caller, ANY_STORE_KEY};
use super::errors::ApiError;
use super::AppState;
use crate::db::orders::find_order;
use crate::domain::order::Order;

/// One order of the caller's store.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Order), (status = 404)))]
pub async fn get_order(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ANY_STORE_KEY)?;
    let client = state.pool.get().await?;
    let order = find_order(&**client, &grant.store_id, &id)
        .await?
        .ok_or(ApiError::NotFound("order_not_found", "no such order"))?;
    Ok(HttpResponse::Ok().json(order))
}
