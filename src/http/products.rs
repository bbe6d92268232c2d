//! Products: created in PostgreSQL, then read and restocked through their actors.

use std::sync::{Arc, LazyLock};

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;

use super::auth::{Caller, ADMIN_KEY, ANY_STORE_KEY};
use super::body::JsonBody;
use super::errors::ApiError;
use super::query::{pick, Params};
use super::{ask, load_shared, AppState};
use crate::actors::product::{PatchFailure, ProductMsg, Snapshot};
use crate::actors::Failure;
use crate::db;
use crate::db::products::{insert_product, NewProduct, ProductPatch, ProductSort};
use crate::db::violated_constraint;
use crate::domain::ids::new_id;
use crate::domain::product::Product;
use crate::domain::validate::{FieldError, Fields, Optional, Required};
use crate::domain::waiting_room::WaitingRoom;

/// Product bodies change with every sale: caches may keep them a second, serve them a
/// little stale while they revalidate, and carry a spike through a database outage.
/// (Static header values are sent without a copy.)
fn product_cache_control() -> HeaderValue {
    HeaderValue::from_static("public, max-age=1, stale-while-revalidate=5, stale-if-error=60")
}
/// Listings: from the database, kept in memory for their max-age.
const LISTING_CACHE_CONTROL: &str = "public, max-age=1";
/// The stock endpoint is never older than a second.
fn stock_cache_control() -> HeaderValue {
    HeaderValue::from_static("public, max-age=1")
}

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
    /// A virtual waiting room for the drop (needs sale_starts_at).
    waiting_room: Option<WaitingRoom>,
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
    let waiting_room = read_waiting_room(&mut f);
    f.check(
        waiting_room.is_none() || sale_starts_at.is_some(),
        "waiting_room",
        "needs sale_starts_at: the queue opens before the start",
    );
    f.finish()?;
    Ok(NewProduct {
        waiting_room,
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
    catalog_changed(&state);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/products/{}", product.id)))
        .json(product.to_view(Utc::now())))
}

/// The product's snapshot: as published by its actor (no mailbox), or from the actor.
async fn read_snapshot(
    state: &AppState,
    store_id: &str,
    product_id: &str,
) -> Result<Arc<Snapshot>, ApiError> {
    let published = state.actors.snapshot(product_id);
    let hit = published.filter(|s| s.store_id == store_id && s.is_current());
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

/// Whether the client's copy (`If-None-Match`, else `If-Modified-Since`) is current.
fn client_is_current(req: &HttpRequest, snapshot: &Snapshot) -> bool {
    if req.headers().contains_key(header::IF_NONE_MATCH) {
        return etag_matches(req, snapshot.etag.to_str().unwrap_or_default());
    }
    let since = req
        .headers()
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<header::HttpDate>().ok())
        .map(std::time::SystemTime::from);
    since.is_some_and(|since| {
        // HTTP dates have whole seconds.
        let modified = snapshot.last_modified.timestamp();
        since
            .duration_since(std::time::UNIX_EPOCH)
            .is_ok_and(|d| modified <= d.as_secs() as i64)
    })
}

/// Tells the client that the database is away and what it reads may be stale.
pub const DEGRADED_HEADER: &str = "Flashsale-Degraded";

/// Answers with `body`, or 304 if the client has this version.
fn conditional(
    req: &HttpRequest,
    snapshot: &Snapshot,
    body: web::Bytes,
    degraded: bool,
) -> HttpResponse {
    let not_modified = client_is_current(req, snapshot);
    let mut response = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, snapshot.etag.clone()))
        .insert_header((header::LAST_MODIFIED, snapshot.last_modified_http.clone()))
        .insert_header((header::CACHE_CONTROL, product_cache_control()))
        .insert_header((header::VARY, HeaderValue::from_static("Authorization")));
    if degraded {
        response.insert_header((DEGRADED_HEADER, "database-unavailable"));
    }
    if not_modified {
        return response.finish();
    }
    response.content_type("application/json").body(body)
}

/// A product, from its actor's memory, with HTTP validators; `?fields=` picks fields.
/// While the database is away it is still served, marked `Flashsale-Degraded`.
#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "products", security(("bearer" = [])),
    params(("id" = String, Path), ("If-None-Match" = Option<String>, Header), ("If-Modified-Since" = Option<String>, Header),
        ("fields" = Option<String>, Query, description = "comma-separated fields to return")),
    responses((status = 200, body = crate::domain::product::ProductView,
        headers(("ETag" = String), ("Last-Modified" = String), ("Cache-Control" = String),
            ("Flashsale-Degraded" = String, description = "`database-unavailable`: served from memory while the database is away; may be stale"))),
        (status = 304), (status = 404)))]
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
        return Ok(conditional(req, &snapshot, snapshot.body.clone(), degraded));
    };
    let full: serde_json::Value = serde_json::from_slice(&snapshot.body).unwrap_or_default();
    let mut response = HttpResponse::Ok();
    response.insert_header((header::CACHE_CONTROL, product_cache_control()));
    if degraded {
        response.insert_header((DEGRADED_HEADER, "database-unavailable"));
    }
    Ok(response.json(pick(full, Some(&fields))))
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
        .content_type("application/json")
        .body(snapshot.stock_body.clone()))
}

/// Puts more units on sale (admin key).
#[utoipa::path(post, path = "/api/v1/products/{id}/restock", tag = "products", request_body = RestockRequest,
    security(("bearer" = [])), params(("id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "optional, 1–255 visible ASCII characters: a restock with a key already applied adds nothing and answers the product")),
    responses((status = 200, body = crate::domain::product::ProductView), (status = 404), (status = 422, description = "validation_failed, idempotency_key_reused"),
        (status = 503, description = "overloaded, unavailable (nothing was done), outcome_unknown (retry with the same Idempotency-Key to learn it); with Retry-After")))]
pub async fn restock_product(
    req: actix_web::HttpRequest,
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
    catalog_changed(&state);
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, snapshot.etag.clone()))
        .content_type("application/json")
        .body(snapshot.body.clone()))
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
const PRODUCT_STATUSES: &[&str] = &["scheduled", "live", "sold_out", "ended"];
const PRODUCT_SORTS: &[&str] = &[
    "created_at",
    "-created_at",
    "sale_starts_at",
    "-sale_starts_at",
    "price_cents",
    "-price_cents",
];
/// Products in one drop-calendar answer, at most.
const MAX_DROPS: i64 = 500;
/// The widest drop-calendar window.
const MAX_DROPS_SPAN_DAYS: i64 = 366;

/// `PATCH /products/{id}` body: any of these; `null` clears the nullable ones.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PatchProductRequest {
    name: Option<String>,
    description: Option<String>,
    price_cents: Option<i64>,
    max_per_customer: Option<i32>,
    sale_starts_at: Option<chrono::DateTime<Utc>>,
    sale_ends_at: Option<chrono::DateTime<Utc>>,
    hold_seconds: Option<i32>,
    waiting_room: Option<WaitingRoom>,
}

/// A page of products.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ProductPage {
    items: Vec<serde_json::Value>,
    /// Pass as `?cursor=` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// The drop calendar.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DropCalendar {
    items: Vec<serde_json::Value>,
}

fn parse_patch(body: &serde_json::Value) -> Result<ProductPatch, Vec<FieldError>> {
    let mut f = Fields::new(body)?;
    for name in ["name", "price_cents", "hold_seconds"] {
        let null = f.is_null(name);
        f.check(!null, name, "must not be null");
    }
    let given = |f: &Fields, name| f.present(name);
    let mut patch = ProductPatch {
        name: f.string("name", Optional, 1..=200),
        price_cents: f.int("price_cents", Optional, 0..=MAX_STOCK),
        hold_seconds: f
            .int("hold_seconds", Optional, 0..=7 * 24 * 3600)
            .map(|h| h as i32),
        ..ProductPatch::default()
    };
    let description = f.string("description", Optional, 0..=5000);
    let max = f
        .int("max_per_customer", Optional, 1..=1_000_000)
        .map(|m| m as i32);
    let starts = f.timestamp("sale_starts_at", Optional);
    let ends = f.timestamp("sale_ends_at", Optional);
    let waiting_room = read_waiting_room(&mut f);
    patch.waiting_room = given(&f, "waiting_room").then_some(waiting_room);
    patch.description = given(&f, "description").then_some(description);
    patch.max_per_customer = given(&f, "max_per_customer").then_some(max);
    patch.sale_starts_at = given(&f, "sale_starts_at").then_some(starts);
    patch.sale_ends_at = given(&f, "sale_ends_at").then_some(ends);
    let any = [
        "name",
        "description",
        "price_cents",
        "max_per_customer",
        "sale_starts_at",
        "sale_ends_at",
        "hold_seconds",
        "waiting_room",
    ]
    .iter()
    .any(|n| f.present(n));
    f.check(any, "body", "must name at least one field to change");
    f.finish()?;
    Ok(patch)
}

/// Changes a product (admin key). Once this answers, no read of this server shows the old
/// values.
#[utoipa::path(patch, path = "/api/v1/products/{id}", tag = "products", request_body = PatchProductRequest,
    security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = crate::domain::product::ProductView), (status = 404), (status = 422),
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
    catalog_changed(&state);
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, snapshot.etag.clone()))
        .content_type("application/json")
        .body(snapshot.body.clone()))
}

/// `?cursor=` of a product listing: `<sort>~<key>~<id>`.
fn parse_cursor(cursor: &str, sort: &str) -> Option<(i64, String)> {
    let mut parts = cursor.splitn(3, '~');
    let (s, key, id) = (parts.next()?, parts.next()?, parts.next()?);
    (s == sort && id.starts_with("prd_")).then_some(())?;
    Some((key.parse().ok()?, id.to_owned()))
}

fn views(products: &[Product], fields: Option<&[String]>) -> Vec<serde_json::Value> {
    let now = Utc::now();
    products
        .iter()
        .map(|p| {
            pick(
                serde_json::to_value(p.to_view(now)).unwrap_or_default(),
                fields,
            )
        })
        .collect()
}

/// The store's products, filtered by status, sorted, in pages (admin or storefront).
#[utoipa::path(get, path = "/api/v1/products", tag = "products", security(("bearer" = [])),
    params(
        ("status" = Option<String>, Query, description = "scheduled, live, sold_out or ended"),
        ("sort" = Option<String>, Query, description = "created_at, sale_starts_at or price_cents, `-` for descending; default -created_at"),
        ("limit" = Option<i64>, Query, description = "1–200, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("fields" = Option<String>, Query, description = "comma-separated fields to return")),
    responses((status = 200, body = ProductPage), (status = 422)))]
pub async fn list_products(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ANY_STORE_KEY)?;
    let render = render_list_products(&req, &state, &grant.store_id);
    cached_listing(&req, &state, &grant.store_id, "products", render).await
}

async fn render_list_products(
    req: &HttpRequest,
    state: &AppState,
    store_id: &str,
) -> Result<web::Bytes, ApiError> {
    let mut params = Params::parse(req.query_string())?;
    let status = params.one_of("status", PRODUCT_STATUSES);
    let sort_name = params
        .one_of("sort", PRODUCT_SORTS)
        .unwrap_or_else(|| "-created_at".to_owned());
    let limit = params.limit();
    let fields = params.fields(PRODUCT_FIELDS);
    let cursor = params.text("cursor");
    params.finish()?;
    let after = match &cursor {
        None => None,
        Some(c) => Some(parse_cursor(c, &sort_name).ok_or_else(|| {
            ApiError::Validation(vec![FieldError::new(
                "cursor",
                "is not a cursor of this listing",
            )])
        })?),
    };
    let desc = sort_name.starts_with('-');
    let sort = match sort_name.trim_start_matches('-') {
        "sale_starts_at" => ProductSort::SaleStartsAt,
        "price_cents" => ProductSort::PriceCents,
        _ => ProductSort::CreatedAt,
    };
    let client = state.pool.get().await?;
    let after_ref = after.as_ref().map(|(k, id)| (*k, id.as_str()));
    let mut products = db::products::list_products(
        &**client,
        store_id,
        status.as_deref(),
        sort,
        desc,
        after_ref,
        limit + 1,
    )
    .await?;
    let next_cursor = if products.len() as i64 > limit {
        products.truncate(limit as usize);
        products
            .last()
            .map(|p| format!("{sort_name}~{}~{}", sort.key_of(p), p.id))
    } else {
        None
    };
    Ok(to_json(&ProductPage {
        items: views(&products, fields.as_deref()),
        next_cursor,
    }))
}

/// The store's drop calendar: products whose sale window meets `[from, to]`, by start
/// (default: the next seven days).
#[utoipa::path(get, path = "/api/v1/drops", tag = "products", security(("bearer" = [])),
    params(("from" = Option<String>, Query, description = "RFC 3339; default now"),
        ("to" = Option<String>, Query, description = "RFC 3339; default from + 7 days"),
        ("fields" = Option<String>, Query, description = "comma-separated fields to return")),
    responses((status = 200, body = DropCalendar), (status = 422)))]
pub async fn drops(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ANY_STORE_KEY)?;
    let render = render_drops(&req, &state, &grant.store_id);
    cached_listing(&req, &state, &grant.store_id, "drops", render).await
}

async fn render_drops(
    req: &HttpRequest,
    state: &AppState,
    store_id: &str,
) -> Result<web::Bytes, ApiError> {
    let mut params = Params::parse(req.query_string())?;
    let from = params.timestamp("from");
    let to = params.timestamp("to");
    let fields = params.fields(PRODUCT_FIELDS);
    params.finish()?;
    let from = from.unwrap_or_else(Utc::now);
    let to = to.unwrap_or(from + chrono::Duration::days(7));
    if to < from || to - from > chrono::Duration::days(MAX_DROPS_SPAN_DAYS) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "to",
            format!("must be after from, at most {MAX_DROPS_SPAN_DAYS} days later"),
        )]));
    }
    let client = state.pool.get().await?;
    let products = db::products::drops(&**client, store_id, from, to, MAX_DROPS).await?;
    Ok(to_json(&DropCalendar {
        items: views(&products, fields.as_deref()),
    }))
}

fn to_json(value: &impl serde::Serialize) -> web::Bytes {
    serde_json::to_vec(value).unwrap_or_default().into()
}

/// A listing page: rendered (and compressed, for clients that accept it) once per
/// catalog generation and max-age, then served from memory. Refusals (422) are not kept.
async fn cached_listing(
    req: &HttpRequest,
    state: &AppState,
    store_id: &str,
    kind: &str,
    render: impl std::future::Future<Output = Result<web::Bytes, ApiError>>,
) -> Result<HttpResponse, ApiError> {
    let encoding = Encoding::accepted(req);
    let generation = state
        .catalog_generation
        .load(std::sync::atomic::Ordering::Acquire);
    let key = format!(
        "{generation}\u{1f}{store_id}\u{1f}{kind}?{}\u{1f}{}",
        req.query_string(),
        encoding.name()
    );
    // Requests that miss with the same key at the same time (as all do the moment a
    // page's max-age runs out under load) share one rendering: one query, one
    // compression.
    let body = load_shared(&state.listings, "listing", key, async {
        Ok(encoding.encode(render.await?))
    })
    .await?;
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CACHE_CONTROL, LISTING_CACHE_CONTROL))
        .insert_header((header::VARY, "Authorization, Accept-Encoding"))
        .content_type("application/json");
    if encoding != Encoding::Identity {
        response.insert_header((header::CONTENT_ENCODING, encoding.name()));
    }
    Ok(response.body(body))
}

/// How a listing is sent: compressed where it pays (lists are kilobytes of JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Brotli,
    Gzip,
    Identity,
}

impl Encoding {
    /// The best the client accepts: brotli, then gzip.
    fn accepted(req: &HttpRequest) -> Self {
        let accepted = req
            .headers()
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let offers = |name: &str| {
            accepted.split(',').any(|part| {
                let mut it = part.split(';');
                let coding = it.next().unwrap_or("").trim();
                let refused = it.any(|p| p.trim().replace(' ', "") == "q=0");
                coding.eq_ignore_ascii_case(name) && !refused
            })
        };
        if offers("br") {
            Encoding::Brotli
        } else if offers("gzip") {
            Encoding::Gzip
        } else {
            Encoding::Identity
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
            Encoding::Identity => "identity",
        }
    }

    fn encode(self, body: web::Bytes) -> web::Bytes {
        use std::io::Write;
        match self {
            Encoding::Identity => body,
            Encoding::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                let _ = encoder.write_all(&body);
                encoder.finish().map(web::Bytes::from).unwrap_or(body)
            }
            Encoding::Brotli => {
                let mut out = Vec::new();
                let params = brotli::enc::BrotliEncoderParams {
                    quality: 5,
                    ..Default::default()
                };
                match brotli::BrotliCompress(&mut body.as_ref(), &mut out, &params) {
                    Ok(_) => out.into(),
                    Err(_) => body,
                }
            }
        }
    }
}

/// A catalog write happened: listings rendered before it are not served after it.
fn catalog_changed(state: &AppState) {
    state
        .catalog_generation
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
}

/// `"waiting_room": {"opens_seconds_before": 1–86400, "admit_per_second": 1–100000}`.
fn read_waiting_room(f: &mut Fields) -> Option<WaitingRoom> {
    f.object("waiting_room", Optional, |w| {
        let opens = w.int("opens_seconds_before", Required, 1..=86_400);
        let rate = w.int("admit_per_second", Required, 1..=100_000);
        Some(WaitingRoom {
            opens_seconds_before: opens? as i32,
            admit_per_second: rate? as i32,
        })
    })
}

/// The two reads a drop's buyers send most: a product's page and its stock. The front door
/// serves them itself, without actix's router, when their id is plain (ASCII letters,
/// digits and `_`, as ids are): the router's regex captures, its scope and resource
/// layers and the `Path` extractor cost about a seventh of a page read's CPU. Every other
/// request, and these with any other id, take the routes in [`super::configure`], which
/// serve them with the same functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotRead {
    /// `GET /api/v1/products/{id}`
    Page,
    /// `GET /api/v1/products/{id}/stock`
    Stock,
}

impl HotRead {
    /// Where the id starts in their paths.
    const PREFIX: &'static str = "/api/v1/products/";

    /// The hot read `req` asks for, if any.
    pub fn of(req: &ServiceRequest) -> Option<HotRead> {
        if req.method() != Method::GET {
            return None;
        }
        let rest = req.path().strip_prefix(Self::PREFIX)?;
        let (read, id) = match rest.split_once('/') {
            None => (HotRead::Page, rest),
            Some((id, "stock")) => (HotRead::Stock, id),
            Some(_) => return None,
        };
        let plain = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        plain.then_some(read)
    }

    /// The product id in the path of a request that [`HotRead::of`] took.
    fn id(path: &str) -> &str {
        let rest = path.get(Self::PREFIX.len()..).unwrap_or_default();
        rest.split_once('/').map_or(rest, |(id, _)| id)
    }

    /// Its route's metrics label, the same as the router's for it.
    pub fn label(self) -> &'static Arc<str> {
        static PAGE: LazyLock<Arc<str>> =
            LazyLock::new(|| Arc::from(format!("{}{}", super::API, super::PRODUCT)));
        static STOCK: LazyLock<Arc<str>> =
            LazyLock::new(|| Arc::from(format!("{}{}", super::API, super::PRODUCT_STOCK)));
        match self {
            HotRead::Page => &PAGE,
            HotRead::Stock => &STOCK,
        }
    }

    /// Serves `req`, which [`HotRead::of`] found to be this read: authenticated and
    /// answered as its route would.
    pub async fn serve(self, req: ServiceRequest) -> ServiceResponse {
        let (req, mut payload) = req.into_parts();
        let answer = match (
            Caller::from_request(&req, &mut payload).await,
            app_state(&req),
        ) {
            (Ok(caller), Some(state)) => {
                let id = Self::id(req.path());
                match self {
                    HotRead::Page => product_page(&req, state, &caller, id).await,
                    HotRead::Stock => product_stock(state, &caller, id).await,
                }
            }
            (Err(e), _) => Err(e),
            (_, None) => Err(ApiError::Unavailable),
        };
        let response = answer.unwrap_or_else(|e| e.error_response());
        ServiceResponse::new(req, response)
    }
}

fn app_state(req: &HttpRequest) -> Option<&AppState> {
    req.app_data::<web::Data<AppState>>().map(|s| &***s)
}
