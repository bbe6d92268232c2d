//! The idempotency keys a product has orders under, kept compactly.
//!
//! The database keeps every order's key (UNIQUE (store_id, idempotency_key)), and the
//! writer's ON CONFLICT answers a duplicate with the existing order; the actor needs the
//! keys only to let a known key replay rather than be refused (sold out, over the
//! per-customer limit) and to answer a retry of a write still in flight. So it keeps:
//! - a growable Bloom filter of every key with an order (about 1.2 bytes a key at 1 %
//!   false positives, none at all for a product without orders): "definitely not" is
//!   a new checkout, "maybe" sends the caller to ask the database first;
//! - exactly, the keys of orders sent to the writer in the last [`Keys::horizon`], the
//!   only ones whose outcome the database may not know yet (after it, every write the
//!   actor started is over, and the database is the truth).

use foldhash::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use growable_bloom_filter::GrowableBloom;

/// False positives of the filter (each costs a key lookup in the database).
const ERROR_RATIO: f64 = 0.01;
/// Recent keys kept before the first sweep of the expired ones is due.
const SWEEP_AT: usize = 64;

/// What a checkout's key is to this product.
pub(super) enum KeyUse {
    /// An order sent to the writer recently has it: (order id, request hash).
    Recent(String, Vec<u8>),
    /// Perhaps an older order has it: the database knows.
    Maybe,
    /// No order has it.
    New,
}

struct Recent {
    order_id: String,
    request_hash: [u8; 32],
    sent: Instant,
}

pub(super) struct Keys {
    /// Every key with an order (copied on write: the gate shares it while sold out).
    filter: Option<Arc<GrowableBloom>>,
    recent: HashMap<String, Recent>,
    horizon: Duration,
    /// The size of `recent` at which the next sweep runs: twice what the last one
    /// kept, so that a sweep (a pass over every recent key) is paid for by as many
    /// inserts. In a stampede `recent` holds every key of the last horizon (thousands):
    /// a sweep at every insert once past a fixed size took most of the server's CPU.
    sweep_at: usize,
}

impl Keys {
    /// From the keys of the product's orders in the database.
    pub(super) fn from_db<'a>(
        keys: impl ExactSizeIterator<Item = &'a str>,
        horizon: Duration,
    ) -> Self {
        let filter = (keys.len() > 0).then(|| {
            let mut filter = GrowableBloom::new(ERROR_RATIO, keys.len().max(16));
            for key in keys {
                filter.insert(key);
            }
            Arc::new(filter)
        });
        Keys {
            filter,
            recent: HashMap::default(),
            horizon,
            sweep_at: SWEEP_AT,
        }
    }

    /// `checked`: the caller already asked the database, which has no order under it.
    pub(super) fn find(&self, key: &str, checked: bool) -> KeyUse {
        if let Some(r) = self.recent.get(key) {
            return KeyUse::Recent(r.order_id.clone(), r.request_hash.to_vec());
        }
        if !checked && self.maybe_used(key) {
            return KeyUse::Maybe;
        }
        KeyUse::New
    }

    fn maybe_used(&self, key: &str) -> bool {
        self.filter.as_ref().is_some_and(|f| f.contains(key))
    }

    /// An order under `key` went to the writer.
    pub(super) fn record(&mut self, key: String, order_id: String, request_hash: [u8; 32]) {
        let filter = self
            .filter
            .get_or_insert_with(|| Arc::new(GrowableBloom::new(ERROR_RATIO, 16)));
        Arc::make_mut(filter).insert(key.as_str());
        if self.recent.len() >= self.sweep_at {
            let (horizon, now) = (self.horizon, Instant::now());
            self.recent
                .retain(|_, r| now.saturating_duration_since(r.sent) < horizon);
            self.sweep_at = (self.recent.len() * 2).max(SWEEP_AT);
        }
        self.recent.insert(
            key,
            Recent {
                order_id,
                request_hash,
                sent: Instant::now(),
            },
        );
    }

    /// The order under `key` did not become durable (the filter keeps the key: a
    /// "maybe" the database then answers).
    pub(super) fn forget(&mut self, key: &str, order_id: &str) {
        if self.recent.get(key).is_some_and(|r| r.order_id == order_id) {
            self.recent.remove(key);
        }
    }

    /// The filter, for the sold-out gate.
    pub(super) fn filter(&self) -> Option<Arc<GrowableBloom>> {
        self.filter.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_key_is_never_new_and_an_unknown_one_rarely_maybe() {
        let stored: Vec<String> = (0..1000).map(|i| format!("old{i}")).collect();
        let mut keys = Keys::from_db(stored.iter().map(String::as_str), Duration::ZERO);
        for k in &stored {
            assert!(matches!(keys.find(k, false), KeyUse::Maybe));
        }
        keys.record("fresh".into(), "ord_1".into(), [7; 32]);
        assert!(matches!(keys.find("fresh", true), KeyUse::Recent(id, _) if id == "ord_1"));
        keys.forget("fresh", "ord_1");
        assert!(matches!(keys.find("fresh", false), KeyUse::Maybe));
        assert!(matches!(keys.find("fresh", true), KeyUse::New));
        let maybes = (0..10_000)
            .filter(|i| matches!(keys.find(&format!("new{i}"), false), KeyUse::Maybe))
            .count();
        assert!(maybes < 300, "{maybes} false positives of 10000");
    }

    #[test]
    fn recent_keys_are_kept_for_the_horizon_and_swept_after_it() {
        // Within the horizon every key stays exact, and the sweeps space out as the
        // keys grow (each pays for itself), instead of one at every insert.
        let mut kept = Keys::from_db(std::iter::empty(), Duration::from_secs(3600));
        for i in 0..10_000 {
            kept.record(format!("k{i}"), format!("ord_{i}"), [0; 32]);
        }
        assert_eq!(kept.recent.len(), 10_000);
        assert!(kept.sweep_at > 10_000, "next sweep at {}", kept.sweep_at);
        assert!(matches!(kept.find("k0", true), KeyUse::Recent(id, _) if id == "ord_0"));
        // Past the horizon they go (the filter still says "maybe").
        let mut swept = Keys::from_db(std::iter::empty(), Duration::ZERO);
        for i in 0..10_000 {
            swept.record(format!("k{i}"), format!("ord_{i}"), [0; 32]);
        }
        assert!(
            swept.recent.len() <= SWEEP_AT,
            "{} kept",
            swept.recent.len()
        );
        assert!(matches!(swept.find("k0", false), KeyUse::Maybe));
    }
}
