//! Listing pages (products, drops): rendered once per catalog generation and max-age,
//! compressed once, then served from memory.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;

use super::super::query::pick;
use super::super::{load_shared, AppState};
use crate::domain::product::Product;
use crate::http::errors::ApiError;

/// Listings: from the database, kept in memory for their max-age.
const LISTING_CACHE_CONTROL: &str = "public, max-age=1";

pub(super) fn views(products: &[Product], fields: Option<&[String]>) -> Vec<serde_json::Value> {
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

pub(super) fn to_json(value: &impl serde::Serialize) -> web::Bytes {
    serde_json::to_vec(value).unwrap_or_default().into()
}

/// A listing page: rendered (and compressed, for clients that accept it) once per
/// catalog generation and max-age, then served from memory. Refusals (422) are not kept.
pub(super) async fn cached_listing(
    req: &HttpRequest,
    state: &AppState,
    store_id: &str,
    kind: &str,
    render: impl std::future::Future<Output = Result<web::Bytes, ApiError>>,
) -> Result<HttpResponse, ApiError> {
    let encoding = Encoding::accepted(req);
    let generation = catalog_generation(state, store_id);
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

/// The store's catalog generation (0 until its first write).
fn catalog_generation(state: &AppState, store_id: &str) -> u64 {
    let generations = state
        .catalog_generations
        .read()
        .unwrap_or_else(|e| e.into_inner());
    generations.get(store_id).copied().unwrap_or(0)
}

/// A catalog write of `store_id` happened: its listings rendered before it are not
/// served after it (other stores' stay).
pub fn catalog_changed(state: &AppState, store_id: &str) {
    // Its listings are read from the primary until the replica has this write.
    if let Some(replica) = &state.replica {
        replica.note_catalog_write(store_id);
    }
    let mut generations = state
        .catalog_generations
        .write()
        .unwrap_or_else(|e| e.into_inner());
    match generations.get_mut(store_id) {
        Some(generation) => *generation += 1,
        None => {
            generations.insert(Arc::from(store_id), 1);
        }
    }
}

/// Every store's listings are rendered afresh on their next read (the cache listener
/// reconnected, so it may have missed writes of other instances).
pub fn forget_listings(state: &AppState) {
    state.listings.invalidate_all();
}
