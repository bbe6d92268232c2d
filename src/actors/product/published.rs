//! What a product publishes for the HTTP workers, in one place: its rendered page, its
//! sold-out gate and its use. One of these per product in its store's [`Catalog`]
//! (found by store and product id, so a key of another store never reaches it), shared
//! by the catalog entry and the product's actor while it runs.
//!
//! It outlives the actor: an idle actor compacts (see [`super::passivate`]), stopping
//! and leaving this behind, so that a product read once and then left alone costs this
//! and its page, not an actor (about 1 KiB of actix task, mailbox and state before its
//! page): reads are still served from memory, and the next write or checkout starts the
//! actor again, which loads from PostgreSQL and publishes here anew. Nothing in it can go
//! stale meanwhile: every change of a product goes through its actor.
//!
//! [`Catalog`]: crate::actors::Catalog

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::RwLock;

use super::passivate::Activity;
use super::{Gate, Snapshot};
use crate::db::cluster::Fence;

/// No lease epoch recorded yet.
const NO_EPOCH: i64 = i64::MIN;

#[derive(Debug)]
pub struct Published {
    /// The current page; `None` after a change until it is rendered again, and once the
    /// actor stopped for good (its state may be gone from this instance).
    snapshot: RwLock<Option<Snapshot>>,
    gate: Gate,
    /// When the product was last used (messages, reads of the page).
    activity: Activity,
    /// The lease epoch of the shard the page was rendered under: once this instance no
    /// longer holds it, the page may be stale (see [`Published::fence`]).
    epoch: AtomicI64,
    /// The product's shard (computed once: the store's sweep asks for every product).
    shard: u16,
    /// Whether it has stock gauges (one of the first products loaded: bounded
    /// cardinality): kept as long as the catalog keeps the product.
    exports_stock: AtomicBool,
}

impl Published {
    /// Nothing published yet for `product_id`.
    pub fn new(product_id: &str) -> Self {
        Published {
            snapshot: RwLock::new(None),
            gate: Gate::default(),
            activity: Activity::default(),
            epoch: AtomicI64::new(NO_EPOCH),
            shard: crate::cluster::shard_of(product_id) as u16,
            exports_stock: AtomicBool::new(false),
        }
    }

    /// The page, if one is published and still holds (no sale-window edge passed); a
    /// read of it marks the product in use.
    pub fn current_snapshot(&self) -> Option<Snapshot> {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        let current = snapshot.as_ref().filter(|s| s.is_current())?.clone();
        drop(snapshot);
        self.activity.touch();
        Some(current)
    }

    /// The page as published, current or not (no use marked).
    pub(super) fn snapshot_now(&self) -> Option<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a page is published (current or not).
    pub fn has_snapshot(&self) -> bool {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    pub(super) fn activity(&self) -> &Activity {
        &self.activity
    }

    /// How long nobody used the product.
    pub fn idle_for(&self) -> std::time::Duration {
        self.activity.idle_for()
    }

    pub(super) fn set_snapshot(&self, snapshot: Option<Snapshot>) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    /// Forgets the page and opens the gate: nothing of the product is served from here.
    pub fn clear(&self) {
        self.set_snapshot(None);
        self.gate.set(None);
    }

    pub(super) fn set_fence(&self, fence: Fence) {
        self.epoch.store(fence.epoch, Ordering::Release);
    }

    /// The lease the page was rendered under (`None` before the first load).
    pub fn fence(&self) -> Option<Fence> {
        let epoch = self.epoch.load(Ordering::Acquire);
        (epoch != NO_EPOCH).then(|| Fence {
            shard: i32::from(self.shard),
            epoch,
        })
    }

    /// Takes one of the stock series for the product, unless it has one already or
    /// they are all taken: whether it has one now.
    pub(super) fn export_stock(&self, shared: &crate::actors::Shared) -> bool {
        if self.exports_stock.load(Ordering::Acquire) {
            return true;
        }
        let series = shared.stock_series.fetch_add(1, Ordering::Relaxed);
        if series >= crate::metrics::MAX_STOCK_SERIES {
            shared.stock_series.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        self.exports_stock.store(true, Ordering::Release);
        true
    }

    /// Whether the product has stock gauges (see [`release_stock_series`]).
    pub fn has_stock_gauges(&self) -> bool {
        self.exports_stock.load(Ordering::Acquire)
    }
}

/// Removes the stock series of a product the catalog forgets.
pub fn release_stock_series(shared: &crate::actors::Shared, product_id: &str) {
    let _ = crate::metrics::STOCK_AVAILABLE.remove_label_values(&[product_id]);
    let _ = crate::metrics::STOCK_TOTAL.remove_label_values(&[product_id]);
    shared.stock_series.fetch_sub(1, Ordering::Relaxed);
}
