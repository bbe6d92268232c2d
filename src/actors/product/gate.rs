//! The sold-out gate: published by the product actor so that, while a product is sold
//! out, the HTTP workers refuse new checkouts without a mailbox hop.

use std::sync::{Arc, RwLock};

use growable_bloom_filter::GrowableBloom;

use super::Loaded;

/// What the product actor publishes for the sold-out fast path: while the product is
/// sold out, the filter of its orders' keys (see [`super::keys`]); a checkout with a key
/// the filter has definitely not seen is refused by the HTTP worker without entering
/// this actor's mailbox (or touching the database); a "maybe" goes on, to be replayed.
/// Only the actor writes it. It is part of the product's [`super::Published`], found
/// through its own store's catalog (so only that store's keys ever consult it).
#[derive(Debug, Default)]
pub struct Gate {
    /// `None`: on sale; `Some(None)`: sold out, no order has a key.
    sold_out_keys: RwLock<Option<Option<Arc<GrowableBloom>>>>,
}

impl Gate {
    /// Whether a checkout with `key` is refused as sold out right now. A key the product
    /// already has an order for is not: it goes on to be replayed.
    pub fn refuses(&self, key: &str) -> bool {
        let keys = self.sold_out_keys.read().unwrap_or_else(|e| e.into_inner());
        match &*keys {
            None => false,
            Some(None) => true,
            Some(Some(filter)) => !filter.contains(key),
        }
    }

    pub(super) fn set(&self, keys: Option<Option<Arc<GrowableBloom>>>) {
        *self
            .sold_out_keys
            .write()
            .unwrap_or_else(|e| e.into_inner()) = keys;
    }
}

impl Loaded {
    /// Closes the gate when the last unit goes, opens it when stock comes back.
    pub(super) fn publish_gate(&mut self) {
        let sold_out = self.ledger.available() == 0;
        if sold_out != self.gate_closed {
            self.gate_closed = sold_out;
            self.published
                .gate()
                .set(sold_out.then(|| self.keys.filter()));
        }
    }
}
