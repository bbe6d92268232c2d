//! The rendered representation of a product, made once per change and published so
//! that reads need no mailbox.

use actix_web::http::header::HeaderValue;

use chrono::{DateTime, Utc};

use super::Loaded;
use crate::domain::product::{ProductStatus, StockView};

/// The rendered representation of the product, made once per change. It keeps only the
/// page itself on the heap (one buffer): the stock body and the validators are made
/// from a few bytes kept inline when a read asks, so that a product left idle costs its
/// page and little more (see [`super::Published`]). Cheap to clone (shared bytes).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `GET /products/{id}` body.
    body: actix_web::web::Bytes,
    /// The page's hash (its first 12 bytes): the strong validator.
    digest: [u8; 12],
    stock_available: i64,
    status: ProductStatus,
    pub last_modified: DateTime<Utc>,
    /// The status in the page changes at this instant (a sale window edge).
    valid_until: Option<DateTime<Utc>>,
}

impl Snapshot {
    /// `GET /products/{id}` body (shared bytes: no copy).
    pub fn body(&self) -> actix_web::web::Bytes {
        self.body.clone()
    }

    /// `GET /products/{id}/stock` body.
    pub fn stock_body(&self) -> actix_web::web::Bytes {
        let stock = StockView {
            stock_available: self.stock_available,
            status: self.status,
        };
        serde_json::to_vec(&stock).unwrap_or_default().into()
    }

    /// Strong validator: a hash of the page, quoted.
    pub fn etag(&self) -> HeaderValue {
        header_value(format!("\"{}\"", hex::encode(self.digest)))
    }

    /// `last_modified` as an HTTP date.
    pub fn last_modified_http(&self) -> HeaderValue {
        header_value(httpdate::fmt_http_date(self.last_modified.into()))
    }

    /// Whether the representation still holds now (no sale-window edge passed); the
    /// clock is read only for a snapshot that has such an edge ahead.
    pub fn is_current(&self) -> bool {
        self.valid_until.is_none_or(|t| Utc::now() < t)
    }
}

/// A header value made of visible ASCII (a hex ETag, an HTTP date).
fn header_value(ascii: String) -> HeaderValue {
    HeaderValue::try_from(ascii).expect("visible ASCII")
}

impl Loaded {
    pub(super) fn publish_stock(&self) {
        if let Some((available, total)) = &self.stock_gauges {
            available.set(self.ledger.available());
            total.set(self.ledger.total());
        }
    }

    /// The current snapshot, rendered (and published) if stale.
    pub(super) fn snapshot(&mut self, now: DateTime<Utc>) -> Snapshot {
        let published = self.published.snapshot_now();
        if let Some(s) = published.filter(|s| s.valid_until.is_none_or(|t| now < t)) {
            return s;
        }
        self.product.stock_total = self.ledger.total();
        self.product.stock_available = self.ledger.available();
        let view = self.product.to_view(now);
        let body = serde_json::to_vec(&view).unwrap_or_default();
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&body);
        let window = self.product.window();
        let valid_until = [window.starts_at, window.ends_at]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min();
        let snapshot = Snapshot {
            // Exactly its length: no spare capacity kept.
            body: body.into_boxed_slice().into(),
            digest: digest[..12].try_into().expect("12 bytes"),
            stock_available: view.stock_available,
            status: view.status,
            last_modified: self.product.updated_at,
            valid_until,
        };
        self.published.set_snapshot(Some(snapshot.clone()));
        snapshot
    }
}
