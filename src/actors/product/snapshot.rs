//! The rendered representation of a product, made once per change and published so
//! that reads need no mailbox.

use actix_web::http::header::HeaderValue;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::passivate::Activity;
use super::Loaded;
use crate::domain::product::StockView;

/// The rendered representation of the product, made once per change.
#[derive(Debug)]
pub struct Snapshot {
    /// `GET /products/{id}` body (cheap to clone: shared bytes).
    pub body: actix_web::web::Bytes,
    /// `GET /products/{id}/stock` body.
    pub stock_body: actix_web::web::Bytes,
    /// Strong validator: a hash of `body`, quoted, ready to send.
    pub etag: HeaderValue,
    pub last_modified: DateTime<Utc>,
    /// `last_modified` as an HTTP date, formatted once, ready to send.
    pub last_modified_http: HeaderValue,
    /// The status in `body` changes at this instant (a sale window edge).
    valid_until: Option<DateTime<Utc>>,
    /// Whose product this is (a reader from another store must not get it).
    pub store_id: String,
    /// The product's use, marked by reads served from this snapshot (see
    /// [`super::passivate`]).
    pub activity: Arc<Activity>,
}

/// A header value made of visible ASCII (a hex ETag, an HTTP date).
fn header_value(ascii: String) -> HeaderValue {
    HeaderValue::try_from(ascii).expect("visible ASCII")
}

impl Snapshot {
    /// Whether the representation still holds now (no sale-window edge passed); the
    /// clock is read only for a snapshot that has such an edge ahead.
    pub fn is_current(&self) -> bool {
        self.valid_until.is_none_or(|t| Utc::now() < t)
    }

    /// A read was served from this snapshot: the product is in use.
    pub fn mark_read(&self) {
        self.activity.touch();
    }
}

impl Loaded {
    pub(super) fn publish_stock(&self) {
        if let Some((available, total)) = &self.stock_gauges {
            available.set(self.ledger.available());
            total.set(self.ledger.total());
        }
    }

    /// The current snapshot, rendered if stale.
    pub(super) fn snapshot(&mut self, now: DateTime<Utc>) -> Arc<Snapshot> {
        if let Some(s) = &self.snapshot {
            if s.valid_until.is_none_or(|t| now < t) {
                return s.clone();
            }
        }
        self.product.stock_total = self.ledger.total();
        self.product.stock_available = self.ledger.available();
        let view = self.product.to_view(now);
        let body = serde_json::to_vec(&view).unwrap_or_default();
        let stock = StockView {
            stock_available: view.stock_available,
            status: view.status,
        };
        let stock_body = serde_json::to_vec(&stock).unwrap_or_default();
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&body);
        let window = self.product.window();
        let valid_until = [window.starts_at, window.ends_at]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min();
        let snapshot = Arc::new(Snapshot {
            etag: header_value(format!("\"{}\"", hex::encode(&digest[..12]))),
            last_modified: self.product.updated_at,
            last_modified_http: header_value(
                self.product
                    .updated_at
                    .format("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string(),
            ),
            body: body.into(),
            stock_body: stock_body.into(),
            valid_until,
            store_id: self.product.store_id.clone(),
            activity: self.activity.clone(),
        });
        self.snapshot = Some(snapshot.clone());
        self.published
            .insert(self.product.id.clone(), snapshot.clone());
        self.is_published = true;
        snapshot
    }
}
