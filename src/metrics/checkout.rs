//! Checkout metrics: outcomes, latency, idempotent replays and `outcome_unknown`
//! answers (of every write, checkout included).

use std::sync::LazyLock;

use prometheus::{register_histogram, register_int_counter_vec, Histogram, IntCounterVec};

use super::LATENCY_BUCKETS;

pub const CHECKOUTS_TOTAL: &str = "flashsale_checkouts_total";
pub const CHECKOUT_DURATION_SECONDS: &str = "flashsale_checkout_duration_seconds";
pub const IDEMPOTENT_REPLAYS_TOTAL: &str = "flashsale_idempotent_replays_total";
pub const OUTCOME_UNKNOWN_TOTAL: &str = "flashsale_outcome_unknown_total";

/// Checkouts by outcome: `created`, `replayed`, or the error code.
pub static CHECKOUTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        CHECKOUTS_TOTAL,
        "Checkouts answered, by outcome",
        &["outcome"]
    )
    .expect("metric")
});

thread_local! {
    /// Each HTTP worker's [`CHECKOUTS`] series by outcome: `with_label_values` hashes the
    /// label and takes a lock on every call, and every checkout is counted.
    static CHECKOUT_SERIES: std::cell::RefCell<foldhash::HashMap<&'static str, prometheus::IntCounter>> =
        std::cell::RefCell::new(foldhash::HashMap::default());
}

/// Counts one checkout answered with `outcome` (`created`, `replayed` or an error code).
pub fn count_checkout(outcome: &'static str) {
    CHECKOUT_SERIES.with_borrow_mut(|series| {
        series
            .entry(outcome)
            .or_insert_with(|| CHECKOUTS.with_label_values(&[outcome]))
            .inc()
    });
}

pub static CHECKOUT_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        CHECKOUT_DURATION_SECONDS,
        "Checkout latency, every outcome",
        LATENCY_BUCKETS.to_vec()
    )
    .expect("metric")
});

/// Checkouts answered from a stored result, by where it was found (`memory`, `database`).
pub static IDEMPOTENT_REPLAYS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        IDEMPOTENT_REPLAYS_TOTAL,
        "Checkouts replayed by idempotency key",
        &["source"]
    )
    .expect("metric")
});

/// Answers of 503 `outcome_unknown`, by operation (`checkout`, `restock`, `patch`,
/// `confirm`, `cancel`).
pub static OUTCOME_UNKNOWN: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        OUTCOME_UNKNOWN_TOTAL,
        "Writes answered 503 outcome_unknown",
        &["operation"]
    )
    .expect("metric")
});

/// Makes this area's series that must exist from the start exist (see
/// [`super::register_all`]).
pub(super) fn register() {
    LazyLock::force(&CHECKOUT_DURATION);
    for operation in ["checkout", "restock", "patch", "confirm", "cancel"] {
        OUTCOME_UNKNOWN.with_label_values(&[operation]);
    }
    for outcome in [
        "created",
        "replayed",
        "sold_out",
        "overloaded",
        "unavailable",
        "outcome_unknown",
        "rate_limited",
    ] {
        CHECKOUTS.with_label_values(&[outcome]);
    }
    for source in ["memory", "database"] {
        IDEMPOTENT_REPLAYS.with_label_values(&[source]);
    }
}
