//! HTTP caching of a product's page and stock: validators, `Cache-Control`, 304s.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::actors::product::Snapshot;

/// Product bodies change with every sale: caches may keep them a second, serve them a
/// little stale while they revalidate, and carry a spike through a database outage.
/// (Static header values are sent without a copy.)
pub(super) fn product_cache_control() -> HeaderValue {
    HeaderValue::from_static("public, max-age=1, stale-while-revalidate=5, stale-if-error=60")
}
/// The stock endpoint is never older than a second: no stale serving of any kind.
pub(super) fn stock_cache_control() -> HeaderValue {
    HeaderValue::from_static("public, max-age=1")
}

/// Every product read answers per key (another store's key gets a 404): a shared cache
/// must keep one copy per `Authorization` (RFC 9111 §4.1).
pub(super) fn vary_authorization() -> HeaderValue {
    HeaderValue::from_static("Authorization")
}

/// The validator of a `?fields=` variant: the full page's tag with the chosen fields (as
/// a bit set over `all`, so that any order of the same fields is the same variant).
/// Each variant is its own representation (RFC 9110 §8.8.3), with its own tag.
pub(super) fn variant_etag(base: &HeaderValue, fields: &[String], all: &[&str]) -> HeaderValue {
    let mask = all
        .iter()
        .enumerate()
        .filter(|(_, name)| fields.iter().any(|f| f == *name))
        .fold(0u64, |mask, (i, _)| mask | (1 << i));
    let base = base.to_str().unwrap_or("\"\"").trim_matches('"');
    HeaderValue::from_str(&format!("\"{base}.f{mask:x}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
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
fn client_is_current(req: &HttpRequest, etag: &HeaderValue, snapshot: &Snapshot) -> bool {
    if req.headers().contains_key(header::IF_NONE_MATCH) {
        return etag_matches(req, etag.to_str().unwrap_or_default());
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

/// Answers with `body` (the representation tagged `etag`, of `snapshot`), or 304 if the
/// client has this version.
pub(super) fn conditional(
    req: &HttpRequest,
    snapshot: &Snapshot,
    etag: HeaderValue,
    body: web::Bytes,
    degraded: bool,
) -> HttpResponse {
    let not_modified = client_is_current(req, &etag, snapshot);
    let mut response = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag))
        .insert_header((header::LAST_MODIFIED, snapshot.last_modified_http()))
        .insert_header((header::CACHE_CONTROL, product_cache_control()))
        .insert_header((header::VARY, vary_authorization()));
    if degraded {
        response.insert_header((DEGRADED_HEADER, "database-unavailable"));
    }
    if not_modified {
        return response.finish();
    }
    response.content_type("application/json").body(body)
}
