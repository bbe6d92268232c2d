//! The store's catalog listings: `GET /products` (filtered, sorted, in pages) and
//! `GET /drops` (the drop calendar), each rendered for the listing cache, read from the
//! replica when it is fresh enough.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;

use super::listing::{cached_listing, to_json, views};
use super::validation::{drops_cursor_of, parse_cursor, parse_drops_cursor};
use super::PRODUCT_FIELDS;
use crate::db;
use crate::db::products::ProductSort;
use crate::db::replica::Reader;
use crate::domain::validate::FieldError;
use crate::http::auth::{Caller, ANY_STORE_KEY};
use crate::http::errors::ApiError;
use crate::http::query::Params;
use crate::http::AppState;

const PRODUCT_STATUSES: &[&str] = &["scheduled", "live", "sold_out", "ended"];
const PRODUCT_SORTS: &[&str] = &[
    "created_at",
    "-created_at",
    "sale_starts_at",
    "-sale_starts_at",
    "price_cents",
    "-price_cents",
];
/// The widest drop-calendar window.
const MAX_DROPS_SPAN_DAYS: i64 = 366;

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
    /// Pass as `?cursor=` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// The store's products, filtered by status, sorted, in pages (admin or storefront).
#[utoipa::path(get, path = "/api/v1/products", tag = "products", security(("bearer" = [])),
    params(
        ("status" = Option<String>, Query, pattern = "^(scheduled|live|sold_out|ended)$", description = "scheduled, live, sold_out or ended"),
        ("sort" = Option<String>, Query, pattern = "^-?(created_at|sale_starts_at|price_cents)$", description = "created_at, sale_starts_at or price_cents, `-` for descending; default -created_at"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "1–200, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("fields" = Option<String>, Query, description = "comma-separated fields to return")),
    responses((status = 200, body = ProductPage, headers(("Cache-Control" = String), ("Vary" = String, description = "`Authorization, Accept-Encoding`"),
            ("Content-Encoding" = String, description = "`br` or `gzip` when the client accepts it")))))]
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
    let after_ref = after.as_ref().map(|(k, id)| (*k, id.as_str()));
    let status = status.as_deref();
    let mut products = state
        .read(Reader::Catalog(store_id), |client| async move {
            db::products::list_products(
                &**client,
                store_id,
                status,
                sort,
                desc,
                after_ref,
                limit + 1,
            )
            .await
        })
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
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "1–200, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("fields" = Option<String>, Query, description = "comma-separated fields to return")),
    responses((status = 200, body = DropCalendar, headers(("Cache-Control" = String), ("Vary" = String, description = "`Authorization, Accept-Encoding`"),
            ("Content-Encoding" = String, description = "`br` or `gzip` when the client accepts it")))))]
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
    let limit = params.limit();
    let cursor = params.text("cursor");
    params.finish()?;
    let after = match &cursor {
        None => None,
        Some(c) => Some(parse_drops_cursor(c).ok_or_else(|| {
            ApiError::Validation(vec![FieldError::new(
                "cursor",
                "is not a cursor of this listing",
            )])
        })?),
    };
    let from = from.unwrap_or_else(Utc::now);
    let to = to.unwrap_or(from + chrono::Duration::days(7));
    if to < from || to - from > chrono::Duration::days(MAX_DROPS_SPAN_DAYS) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "to",
            format!("must be after from, at most {MAX_DROPS_SPAN_DAYS} days later"),
        )]));
    }
    let after_ref = after.as_ref().map(|(at, id)| (*at, id.as_str()));
    let mut products = state
        .read(Reader::Catalog(store_id), |client| async move {
            db::products::drops(&**client, store_id, from, to, after_ref, limit + 1).await
        })
        .await?;
    let next_cursor = if products.len() as i64 > limit {
        products.truncate(limit as usize);
        products.last().map(drops_cursor_of)
    } else {
        None
    };
    Ok(to_json(&DropCalendar {
        items: views(&products, fields.as_deref()),
        next_cursor,
    }))
}
