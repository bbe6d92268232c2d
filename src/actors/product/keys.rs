//! The idempotency keys a product has orders under, kept compactly.
//!
//! The database keeps every order's key (UNIQUE (store_id, idempotency_key)), and the
//! writer answers a duplicate with the existing order (its batch goes again, skipping
//! it: see [`crate::db::batch::insert_batch`]); the actor needs the
//! keys only to let a known key replay rather than be refused (sold out, over the
//! per-customer limit) and to answer a retry of a write still in flight. So it keeps:
//! - a growable Bloom filter of every key with an order (under 0.1 % false positives
//!   however it grew; 2.3 bytes a key as loaded, 3–4 as grown key by key, which
//!   reserves room ahead, and 600 bytes at least; none at all for a product without
//!   orders): "definitely not" is a new checkout, "maybe" sends the caller to ask the
//!   database first;
//! - exactly, the keys of orders sent to the writer in the last [`Keys::horizon`], the
//!   only ones whose outcome the database may not know yet (after it, every write the
//!   actor started is over, and the database is the truth).
//!
//! The recent keys are kept in two generations, each at most a horizon long: when the
//! current one is a horizon old, the one before it (all of whose keys are older than a
//! horizon) is emptied and becomes the current one. So no insert ever sweeps the keys,
//! and an entry is 64 bytes with nothing on the heap (a 128-bit keyed hash of the key,
//! the order id's 128 bits, the request hash): emptying a generation frees nothing one
//! by one. In a stampede a generation holds hundreds of thousands of keys; with the
//! keys as strings and a sweep at every doubling, each sweep and each growth of the map
//! stopped the product, and every buyer of it, for up to a quarter of a second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use growable_bloom_filter::{GrowableBloom, GrowableBloomBuilder};

use crate::domain::ids::id_from_bits;
use crate::domain::spread::{tag128, Spread};

/// False positives of the filter, at most, however many keys it grew to hold. Each costs
/// a key lookup in the database and a second trip to the actor, also for a refusal after
/// a sell-out, which is otherwise answered beside the actor: at 1 % that was a fifth of a
/// core of PostgreSQL at 90,000 refusals a second.
const ERROR_RATIO: f64 = 0.001;

/// Each part the filter grows by has this many times the false positives of the one
/// before (the crate's default). The parts' rates add up to at most the first's
/// ÷ (1 − this), so the first part is given ERROR_RATIO × (1 − this): given
/// ERROR_RATIO itself (and a first part of 16 keys), a filter grown to 10,000 keys
/// answered "maybe" to 0.75–0.86 % of the keys it had never seen.
const TIGHTENING: f64 = 0.8515625;

/// Each part the filter grows by holds this many times the keys of the one before. A new
/// key is looked for in every part (twice per checkout: when it is found, then when it
/// is recorded), so the parts are few: at 350,000 keys of one product, 6 parts instead
/// of the crate's default 2's 11. The last part is at most 4 times what it holds.
const GROWTH: usize = 4;

/// Keys the filter's first part holds, at least. A smaller part has more false positives
/// than its rate says (its bits are split among a dozen hash functions): grown from 16
/// keys, the filter answered "maybe" to 0.27 % of new keys whatever the rates; from 256,
/// 0.07 % at 100,000 keys. The first part then costs 600 bytes.
const FIRST_PART: usize = 256;

/// An empty filter sized for `keys` keys to begin with.
fn new_filter(keys: usize) -> GrowableBloom {
    GrowableBloomBuilder::new()
        .estimated_insertions(keys.max(FIRST_PART))
        .desired_error_ratio(ERROR_RATIO * (1.0 - TIGHTENING))
        .tightening_ratio(TIGHTENING)
        .growth_factor(GROWTH)
        .build()
}

/// What the recent keys keep of a key: its keyed 128-bit hash. Two keys of one product
/// share one by chance with odds of about n²/2¹²⁹ for n keys.
fn key_tag(key: &str) -> u128 {
    tag128(key)
}

/// What a checkout's key is to this product.
pub(super) enum KeyUse {
    /// An order sent to the writer recently has it: (order id, request hash).
    Recent(String, Vec<u8>),
    /// Perhaps an older order has it: the database knows.
    Maybe,
    /// No order has it.
    New,
}

#[derive(Clone, Copy)]
struct Recent {
    /// The order id's bits ([`crate::domain::ids::new_id_bits`]).
    order: u128,
    request_hash: [u8; 32],
}

pub(super) struct Keys {
    /// Every key with an order (copied on write: the gate shares it while sold out).
    filter: Option<Arc<GrowableBloom>>,
    /// The keys sent since `since`.
    current: Spread<u128, Recent>,
    /// The keys sent in the horizon before `since`.
    previous: Spread<u128, Recent>,
    since: Instant,
    horizon: Duration,
}

impl Keys {
    /// From the keys of the product's orders in the database.
    pub(super) fn from_db<'a>(
        keys: impl ExactSizeIterator<Item = &'a str>,
        horizon: Duration,
    ) -> Self {
        let filter = (keys.len() > 0).then(|| {
            let mut filter = new_filter(keys.len());
            for key in keys {
                filter.insert(key);
            }
            Arc::new(filter)
        });
        Keys {
            filter,
            current: Spread::default(),
            previous: Spread::default(),
            since: Instant::now(),
            horizon,
        }
    }

    /// `checked`: the caller already asked the database, which has no order under it.
    pub(super) fn find(&self, key: &str, checked: bool) -> KeyUse {
        let tag = key_tag(key);
        if let Some(r) = self.current.get(tag).or_else(|| self.previous.get(tag)) {
            return KeyUse::Recent(id_from_bits("ord", r.order), r.request_hash.to_vec());
        }
        if !checked && self.maybe_used(key) {
            return KeyUse::Maybe;
        }
        KeyUse::New
    }

    fn maybe_used(&self, key: &str) -> bool {
        self.filter.as_ref().is_some_and(|f| f.contains(key))
    }

    /// An order under `key` (the order id's bits: `order`) went to the writer.
    pub(super) fn record(&mut self, key: &str, order: u128, request_hash: [u8; 32]) {
        self.record_at(key, order, request_hash, Instant::now());
    }

    /// [`Keys::record`] at `now` (the tests give the clock).
    fn record_at(&mut self, key: &str, order: u128, request_hash: [u8; 32], now: Instant) {
        let filter = self
            .filter
            .get_or_insert_with(|| Arc::new(new_filter(FIRST_PART)));
        Arc::make_mut(filter).insert(key);
        if now.saturating_duration_since(self.since) >= self.horizon {
            // Every key of `previous` is older than a horizon. The emptied generation
            // keeps its tables for the next one, unless the last was much smaller (the
            // stampede is over: its memory goes back).
            let sent = self.current.len();
            std::mem::swap(&mut self.current, &mut self.previous);
            if self.current.len() > 2 * sent + 1024 {
                self.current = Spread::default();
            } else {
                self.current.clear();
            }
            self.since = now;
        }
        self.current.insert(
            key_tag(key),
            Recent {
                order,
                request_hash,
            },
        );
    }

    /// The order under `key` did not become durable (the filter keeps the key: a
    /// "maybe" the database then answers).
    pub(super) fn forget(&mut self, key: &str, order_id: &str) {
        let tag = key_tag(key);
        let id = |r: &Recent| id_from_bits("ord", r.order) == order_id;
        for generation in [&mut self.current, &mut self.previous] {
            if generation.get(tag).is_some_and(id) {
                generation.remove(tag);
            }
        }
    }

    /// Keys with orders (as the filter counts them).
    pub(super) fn len(&self) -> usize {
        self.filter.as_ref().map_or(0, |f| f.len())
    }

    /// The filter, for the sold-out gate.
    pub(super) fn filter(&self) -> Option<Arc<GrowableBloom>> {
        self.filter.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(i: u128) -> (u128, String) {
        (i, id_from_bits("ord", i))
    }

    #[test]
    fn a_recorded_key_is_never_new_and_an_unknown_one_rarely_maybe() {
        let stored: Vec<String> = (0..1000).map(|i| format!("old{i}")).collect();
        let mut keys = Keys::from_db(stored.iter().map(String::as_str), Duration::from_secs(60));
        for k in &stored {
            assert!(matches!(keys.find(k, false), KeyUse::Maybe));
        }
        let (bits, id) = order(1);
        keys.record("fresh", bits, [7; 32]);
        assert!(
            matches!(keys.find("fresh", true), KeyUse::Recent(o, h) if o == id && h == [7; 32])
        );
        keys.forget("fresh", &order(2).1);
        assert!(
            matches!(keys.find("fresh", true), KeyUse::Recent(..)),
            "another order's key stays"
        );
        keys.forget("fresh", &id);
        assert!(matches!(keys.find("fresh", false), KeyUse::Maybe));
        assert!(matches!(keys.find("fresh", true), KeyUse::New));
        let maybes = (0..10_000)
            .filter(|i| matches!(keys.find(&format!("new{i}"), false), KeyUse::Maybe))
            .count();
        assert!(maybes < 50, "{maybes} false positives of 10000");
    }

    #[test]
    fn a_filter_grown_key_by_key_keeps_its_false_positives_under_the_ratio() {
        let mut keys = Keys::from_db(std::iter::empty(), Duration::from_secs(60));
        for i in 0..100_000 {
            keys.record(&format!("idem-bought-{i}"), i, [0; 32]);
        }
        let tried = 200_000;
        let maybes = (0..tried)
            .filter(|i| keys.maybe_used(&format!("idem-refused-{i}")))
            .count();
        assert!(
            (maybes as f64) <= ERROR_RATIO * tried as f64,
            "{maybes} false positives of {tried}"
        );
    }

    #[test]
    fn recent_keys_are_kept_for_a_horizon_at_least_and_two_at_most() {
        // The clock is given, not slept on: a debug build on a loaded machine took more
        // than a horizon to record the keys, and the first ones were rightly forgotten.
        let horizon = Duration::from_millis(300);
        let mut keys = Keys::from_db(std::iter::empty(), horizon);
        let start = keys.since;
        let at = |ms: u64| start + Duration::from_millis(ms);
        for i in 0..50_000 {
            keys.record_at(&format!("k{i}"), i, [0; 32], at(0));
        }
        let first = |keys: &Keys| matches!(keys.find("k0", true), KeyUse::Recent(id, _) if id == order(0).1);
        // Within the first horizon every key stays exact, however many.
        keys.record_at("sooner", 999_999, [0; 32], at(299));
        assert!(first(&keys));
        assert_eq!(keys.current.len() + keys.previous.len(), 50_001);
        // A record after the horizon starts a generation: the first keys are still known.
        keys.record_at("later", 1_000_000, [0; 32], at(301));
        assert!(first(&keys), "a key under two horizons old was lost");
        assert_eq!(keys.current.len(), 1);
        // Two generations on, they are gone (the filter still says "maybe").
        keys.record_at("later still", 1_000_001, [0; 32], at(602));
        assert!(!first(&keys));
        assert!(matches!(keys.find("k0", false), KeyUse::Maybe));
        assert!(matches!(keys.find("later", true), KeyUse::Recent(..)));
        assert_eq!(keys.current.len() + keys.previous.len(), 2);
    }
}
