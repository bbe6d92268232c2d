//! Cache metrics: hits and misses of each in-memory cache, and the cross-instance
//! invalidations over LISTEN/NOTIFY.

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, IntCounterVec};

pub const CACHE_REQUESTS_TOTAL: &str = "flashsale_cache_requests_total";
pub const CACHE_NOTIFICATIONS_TOTAL: &str = "flashsale_cache_notifications_total";
pub const CACHE_LISTEN_RECONNECTS_TOTAL: &str = "flashsale_cache_listen_reconnects_total";

pub static CACHE_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        CACHE_REQUESTS_TOTAL,
        "Cache lookups, by cache and result",
        &["cache", "result"]
    )
    .expect("metric")
});

/// (hit, miss) counters of each cache, resolved once (they are counted on hot paths).
static CACHE_COUNTERS: LazyLock<[(prometheus::IntCounter, prometheus::IntCounter); 4]> =
    LazyLock::new(|| {
        ["api_keys", "idempotency", "snapshot", "listing"].map(|c| {
            (
                CACHE_REQUESTS.with_label_values(&[c, "hit"]),
                CACHE_REQUESTS.with_label_values(&[c, "miss"]),
            )
        })
    });

/// Counts one lookup of `cache` (`api_keys`, `idempotency`, `snapshot`, `listing`).
pub fn cache_lookup(cache: &str, hit: bool) {
    let i = match cache {
        "api_keys" => 0,
        "idempotency" => 1,
        "snapshot" => 2,
        _ => 3,
    };
    let (hits, misses) = &CACHE_COUNTERS[i];
    if hit {
        hits.inc()
    } else {
        misses.inc()
    }
}

/// Cache invalidations over LISTEN/NOTIFY (`cluster::notify`): `sent` (queued in a
/// write's transaction; PostgreSQL delivers it at commit), `received` (heard on the
/// listening connection, this instance's own included) and `applied` (another
/// instance's, applied to our caches).
pub static CACHE_NOTIFICATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        CACHE_NOTIFICATIONS_TOTAL,
        "Cache invalidation notifications, by event",
        &["event"]
    )
    .expect("metric")
});

/// The listening connection was (re)made after a loss: everything it might have missed
/// was invalidated.
pub static CACHE_LISTEN_RECONNECTS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        CACHE_LISTEN_RECONNECTS_TOTAL,
        "Reconnections of the cache-invalidation listener (every cache cleared)"
    )
    .expect("metric")
});

/// Makes this area's series that must exist from the start exist (see
/// [`super::register_all`]).
pub(super) fn register() {
    LazyLock::force(&CACHE_COUNTERS);
    for event in ["sent", "received", "applied"] {
        CACHE_NOTIFICATIONS.with_label_values(&[event]);
    }
    LazyLock::force(&CACHE_LISTEN_RECONNECTS);
}
