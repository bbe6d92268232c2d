//! Products: created in PostgreSQL, then read and restocked through their actors.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;

use super::auth::{Caller, ADMIN_KEY, ANY_STORE_KEY};
use super::body::JsonBody;
use super::errors::ApiError;
use super::{ask, AppState};
use crate::actors::product::{ProductMsg, Snapshot};
use crate::db::products::{insert_product, NewProduct};
use crate::db::violated_constraint;
use crate::domain::ids::new_id;
use crate::domain::validate::{FieldError, Fields, Optional, Required};

/// Product bodies change with every sale: caches may keep them a second, serve them a
/// little stale while they revalidate, and carry a spike through a database outage.
const PRODUCT_CACHE_CONTROL: &str =
    "public, max-age=1, stale-while-revalidate=5, stale-if-error=60";
/// The stock endpoint is never older than a second.
const STOCK_CACHE_CONTROL: &str = "public, max-age=1";

/// `POST /products` body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CreateProductRequest {
    /// Unique within the store, 1–64 characters.
    sku: String,
    name: String,
    description: Option<String>,
    /// Integer minor units, ≥ 0.
    price_cents: i64,
    /// ISO 4217, e.g. `EUR`.
    currency: String,
    /// Units put on sale, ≥ 0.
    stock: i64,
    max_per_customer: Option<i32>,
    sale_starts_at: Option<chrono::DateTime<Utc>>,
    sale_ends_at: Option<chrono::DateTime<Utc>>,
    /// How long a checkout holds stock awaiting payment (default 0: confirmed at once).
    hold_seconds: Option<i32>,
}

/// `POST /products/{id}/restock` body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct RestockRequest {
    /// ≥ 1.
    quantity: i64,
}

const MAX_STOCK: i64 = 1_000_000_000_000;

fn parse_new_product(body: &serde_json::Value) -> Result<NewProduct, Vec<FieldError>> {
    let mut f = Fields::new(body)?;
    let sku = f.string("sku", Required, 1..=64);
    let name = f.string("name", Required, 1..=200);
    let description = f.string("description", Optional, 0..=5000);
    let price_cents = f.int("price_cents", Required, 0..=MAX_STOCK);
    let currency = f.string("currency", Required, 3..=3);
    if let Some(c) = &currency {
        f.check(
            c.chars().all(|c| c.is_ascii_uppercase()),
            "currency",
            "must be an ISO 4217 code such as EUR",
        );
    }
    let stock = f.int("stock", Required, 0..=MAX_STOCK);
    let max_per_customer = f.int("max_per_customer", Optional, 1..=1_000_000);
    let sale_starts_at = f.timestamp("sale_starts_at", Optional);
    let sale_ends_at = f.timestamp("sale_ends_at", Optional);
    if let (Some(s), Some(e)) = (sale_starts_at, sale_ends_at) {
        f.check(e > s, "sale_ends_at", "must be after sale_starts_at");
    }
    let hold_seconds = f.int("hold_seconds", Optional, 0..=7 * 24 * 3600);
    f.finish()?;
    Ok(NewProduct {
        sku: sku.unwrap_or_default(),
        name: name.unwrap_or_default(),
        description,
        price_cents: price_cents.unwrap_or_default(),
        currency: currency.unwrap_or_default(),
        stock: stock.unwrap_or_default(),
        max_per_customer: max_per_customer.map(|m| m as i32),
        sale_starts_at,
        sale_ends_at,
        hold_seconds: hold_seconds.unwrap_or(0) as i32,
    })
}

/// Creates a product (admin key).
#[utoipa::path(post, path = "/api/v1/products", tag = "products", request_body = CreateProductRequest,
    security(("bearer" = [])),
    responses((status = 201, body = crate::domain::product::ProductView), (status = 409, description = "sku_taken"),
        (status = 422, description = "validation_failed")))]
pub async fn create_product(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    let new = parse_new_product(&body.0)?;
    let client = state.pool.get().await?;
    let product = insert_product(&**client, &new_id("prd"), &grant.store_id, &new)
        .await
        .map_err(|e| {
            if violated_constraint(&e) == Some("products_store_sku_key") {
                ApiError::Conflict {
                    code: "sku_taken",
                    title: "SKU taken",
                    detail: format!("the store already has a product with sku {:?}", new.sku),
                }
            } else {
                ApiError::from(e)
            }
        })?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/products/{}", product.id)))
        .json(product.to_view(Utc::now())))
}

async fn read_snapshot(
    state: &AppState,
    store_id: &str,
    product_id: &str,
) -> Result<Arc<Snapshot>, ApiError> {
    ask(|reply| {
        state
            .actors
            .to_product(store_id, product_id, ProductMsg::Read { reply })
    })
    .await
}

fn etag_matches(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
        })
}

fn http_date(t: chrono::DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Answers with `body`, or 304 if the client has this version.
fn conditional(
    req: &HttpRequest,
    snapshot: &Snapshot,
    body: &[u8],
    cache_control: &str,
) -> HttpResponse {
    let not_modified = etag_matches(req, &snapshot.etag);
    let mut response = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, snapshot.etag.as_str()))
        .insert_header((header::LAST_MODIFIED, http_date(snapshot.last_modified)))
        .insert_header((header::CACHE_CONTROL, cache_control))
        .insert_header((header::VARY, "Authorization"));
    if not_modified {
        return response.finish();
    }
    response
        .content_type("application/json")
        .body(body.to_vec())
}

/// A product, from its actor's memory, with HTTP validators.
#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "products", security(("bearer" = [])),
    params(("id" = String, Path), ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, body = crate::domain::product::ProductView), (status = 304), (status = 404)))]
pub async fn get_product(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ANY_STORE_KEY)?;
    let snapshot = read_snapshot(&state, &grant.store_id, &id).await?;
    Ok(conditional(
        &req,
        &snapshot,
        &snapshot.body,
        PRODUCT_CACHE_CONTROL,
    ))
}

/// The fast-moving part of a product: what is left, and the sale status.
#[utoipa::path(get, path = "/api/v1/products/{id}/stock", tag = "products", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = crate::domain::product::StockView), (status = 404)))]
pub async fn get_stock(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ANY_STORE_KEY)?;
    let snapshot = read_snapshot(&state, &grant.store_id, &id).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, STOCK_CACHE_CONTROL))
        .content_type("application/json")
        .body(snapshot.stock_body.clone()))
}

/// Puts more units on sale (admin key).
#[utoipa::path(post, path = "/api/v1/products/{id}/restock", tag = "products", request_body = RestockRequest,
    security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = crate::domain::product::ProductView), (status = 404), (status = 422)))]
pub async fn restock_product(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    let mut f = Fields::new(&body.0)?;
    let quantity = f.int("quantity", Required, 1..=MAX_STOCK);
    f.finish()?;
    let quantity = quantity.unwrap_or_default();
    let snapshot = ask(|reply| {
        state.actors.to_product(
            &grant.store_id,
            &id,
            ProductMsg::Restock { quantity, reply },
        )
    })
    .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, snapshot.etag.as_str()))
        .content_type("application/json")
        .body(snapshot.body.clone()))
}
