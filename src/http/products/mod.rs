//! Products: created in PostgreSQL, then read and restocked through their actors.
//!
//! The handlers live here, but for the listings; by concern beside them: `catalog` (the
//! listings `GET /products` and `GET /drops`), `validation` (request bodies and
//! cursors), `caching` (validators, `Cache-Control`, 304s), `listing` (the listing cache
//! and its compression) and `fast_read` (the front door's page and stock read).

mod caching;
mod catalog;
mod fast_read;
mod listing;
mod validation;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;

use super::auth::{Caller, ADMIN_KEY, ANY_STORE_KEY};
use super::body::JsonBody;
use super::errors::ApiError;
use super::query::{pick, Params};
use super::{ask, AppState};
use crate::actors::product::{PatchFailure, ProductMsg, Snapshot};
use crate::actors::Failure;
use crate::cluster::notify::{announce, Change, What};
use crate::db::products::insert_product;
use crate::db::violated_constraint;
use crate::domain::ids::new_id;
use crate::domain::validate::{FieldError, Fields, Required};

pub use caching::DEGRADED_HEADER;
use caching::{conditional, stock_cache_control, variant_etag, vary_authorization};
// The OpenAPI document names a handler by its path, and finds its `#[utoipa::path]`
// beside it: the generated `__path_*` types are re-exported with the handlers.
pub use catalog::{
    __path_drops, __path_list_products, drops, list_products, DropCalendar, ProductPage,
};
pub use fast_read::HotRead;
use listing::to_json;
pub use listing::{catalog_changed, forget_listings};
use validation::{parse_new_product, parse_patch, MAX_STOCK};
pub use validation::{CreateProductRequest, PatchProductRequest, RestockRequest};

/// Creates a product (admin key).
#[utoipa::path(post, path = "/api/v1/products", tag = "products", request_body = CreateProductRequest,
    security(("bearer" = [])),
    responses((status = 201, body = crate::domain::product::ProductView,
            headers(("Location" = String, description = "the product's URL"))),
        (status = 409, description = "sku_taken"),
        (status = 422, description = "validation_failed")))]
pub async fn create_product(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    let new = parse_new_product(&body.0)?;
    let mut client = state.pool.get().await?;
    let id = new_id("prd");
    // The other instances hear of it at commit (their listings, and any "missing"
    // they remember for the id, are dropped), never before.
    let created = Change {
        from: state.actors.cluster().id.clone(),
        store: grant.store_id.clone(),
        product: id.clone(),
        what: What::Created,
    };
    let client: &mut tokio_postgres::Client = &mut client;
    let tx = client.transaction().await?;
    let (product, announced) = futures_util::join!(
        insert_product(&tx, &id, &grant.store_id, &new),
        announce(&tx, &created)
    );
    let product = product.map_err(|e| {
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
    announced?;
    tx.commit().await?;
    catalog_changed(&state, &grant.store_id);
    state.actors.product_created(&grant.store_id, &id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/products/{}", product.id)))
        .json(product.to_view(Utc::now())))
}

/// The product's snapshot: as published by its actor (no mailbox), or from the actor.
async fn read_snapshot(
    state: &AppState,
    store_id: &str,
    product_id: &str,
) -> Result<Snapshot, ApiError> {
    // Found by store and product: another store's key never sees this one's page.
    let hit = state.actors.snapshot(store_id, product_id);
    crate::metrics::cache_lookup("snapshot", hit.is_some());
    if let Some(snapshot) = hit {
        return Ok(snapshot);
    }
    ask(|reply| {
        state
            .actors
            .to_product(store_id, product_id, ProductMsg::Read { reply })
    })
    .await
}

/// A product, from its actor's memory, with HTTP validators; `?fields=` picks fields.
/// While the database is away it is still served, marked `Flashsale-Degraded`.
#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "products", security(("bearer" = [])),
    params(("id" = String, Path), ("If-None-Match" = Option<String>, Header), ("If-Modified-Since" = Option<String>, Header),
        ("fields" = Option<String>, Query, description = "comma-separated fields to return")),
    responses((status = 200, body = crate::domain::product::ProductView,
        headers(("ETag" = String, description = "this representation's tag (each ?fields= variant its own)"),
            ("Last-Modified" = String), ("Cache-Control" = String), ("Vary" = String, description = "`Authorization`"),
            ("Flashsale-Degraded" = String, description = "`database-unavailable`: served from memory while the database is away; may be stale"))),
        (status = 304, description = "the client's copy is current",
            headers(("ETag" = String), ("Last-Modified" = String), ("Cache-Control" = String), ("Vary" = String))),
        (status = 404, description = "`product_not_found`")))]
pub async fn get_product(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    product_page(&req, &state, &caller, &id).await
}

async fn product_page(
    req: &HttpRequest,
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ANY_STORE_KEY)?;
    let fields = if req.query_string().is_empty() {
        None
    } else {
        let mut params = Params::parse(req.query_string())?;
        let fields = params.fields(PRODUCT_FIELDS);
        params.finish()?;
        fields
    };
    let snapshot = read_snapshot(state, &grant.store_id, id).await?;
    let degraded = !state.actors.health().is_up();
    let Some(fields) = fields else {
        let (etag, body) = (snapshot.etag(), snapshot.body());
        return Ok(conditional(req, &snapshot, etag, body, degraded));
    };
    let etag = variant_etag(&snapshot.etag(), &fields, PRODUCT_FIELDS);
    let full: serde_json::Value = serde_json::from_slice(&snapshot.body()).unwrap_or_default();
    let body = to_json(&pick(full, Some(&fields)));
    Ok(conditional(req, &snapshot, etag, body, degraded))
}

/// The fast-moving part of a product: what is left, and the sale status.
#[utoipa::path(get, path = "/api/v1/products/{id}/stock", tag = "products", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = crate::domain::product::StockView,
            headers(("Cache-Control" = String, description = "`public, max-age=1`: never older than a second"),
                ("Vary" = String, description = "`Authorization`"))),
        (status = 404, description = "`product_not_found`")))]
pub async fn get_stock(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    product_stock(&state, &caller, &id).await
}

async fn product_stock(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ANY_STORE_KEY)?;
    let snapshot = read_snapshot(state, &grant.store_id, id).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, stock_cache_control()))
        .insert_header((header::VARY, vary_authorization()))
        .content_type("application/json")
        .body(snapshot.stock_body()))
}

/// Puts more units on sale (admin key).
#[utoipa::path(post, path = "/api/v1/products/{id}/restock", tag = "products", request_body = RestockRequest,
    security(("bearer" = [])), params(("id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "optional, 1–255 visible ASCII characters: a restock with a key already applied adds nothing and answers the product")),
    responses((status = 200, body = crate::domain::product::ProductView, headers(("ETag" = String))),
        (status = 404, description = "`product_not_found`"),
        (status = 422, description = "validation_failed, idempotency_key_reused"),
        (status = 503, description = "overloaded, unavailable (nothing was done), outcome_unknown (retry with the same Idempotency-Key to learn it); with Retry-After")))]
pub async fn restock_product(
    req: HttpRequest,
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
    let idempotency_key = super::checkout::optional_idempotency_key(&req)?;
    let snapshot = super::ask_write(|reply| {
        state.actors.to_product(
            &grant.store_id,
            &id,
            ProductMsg::Restock {
                quantity,
                idempotency_key,
                reply,
            },
        )
    })
    .await?;
    catalog_changed(&state, &grant.store_id);
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, snapshot.etag()))
        .content_type("application/json")
        .body(snapshot.body()))
}

/// Fields a product representation has (for `?fields=`).
pub const PRODUCT_FIELDS: &[&str] = &[
    "id",
    "store_id",
    "sku",
    "name",
    "description",
    "price_cents",
    "currency",
    "stock_total",
    "stock_available",
    "max_per_customer",
    "sale_starts_at",
    "sale_ends_at",
    "hold_seconds",
    "waiting_room",
    "status",
    "created_at",
    "updated_at",
];
/// Changes a product (admin key). Once this answers, no read of this server shows the old
/// values.
#[utoipa::path(patch, path = "/api/v1/products/{id}", tag = "products", request_body = PatchProductRequest,
    security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = crate::domain::product::ProductView, headers(("ETag" = String))),
        (status = 404, description = "`product_not_found`"),
        (status = 503, description = "overloaded, unavailable (nothing was done), outcome_unknown (repeat the PATCH to learn it); with Retry-After")))]
pub async fn patch_product(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ADMIN_KEY)?;
    let patch = parse_patch(&body.0)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    state
        .actors
        .to_product(&grant.store_id, &id, ProductMsg::Patch { patch, reply: tx });
    let answer = tokio::time::timeout(super::actor_timeout(), rx)
        .await
        .map_err(|_| ApiError::OutcomeUnknown)?
        .unwrap_or(Err(PatchFailure::Failure(Failure::Unavailable)));
    let snapshot = match answer {
        Ok(snapshot) => snapshot,
        Err(PatchFailure::Failure(f)) => return Err(f.into()),
        Err(PatchFailure::Invalid(constraint)) => {
            let field = if constraint == "products_waiting_room" {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "waiting_room",
                    "needs sale_starts_at: the queue opens before the start",
                )]));
            } else if constraint == "products_sale_window" {
                "sale_ends_at"
            } else {
                "body"
            };
            return Err(ApiError::Validation(vec![FieldError::new(
                field,
                "must be after sale_starts_at",
            )]));
        }
    };
    catalog_changed(&state, &grant.store_id);
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, snapshot.etag()))
        .content_type("application/json")
        .body(snapshot.body()))
}
