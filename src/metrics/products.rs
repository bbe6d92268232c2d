//! Product actor metrics: how many run, why they start (loads, existence lookups),
//! passivation and compaction, stock per loaded product, and the database's oversell
//! guard.

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, IntCounterVec};

pub const PRODUCT_LOADS_TOTAL: &str = "flashsale_product_loads_total";
pub const PRODUCT_PASSIVATIONS_TOTAL: &str = "flashsale_product_passivations_total";
pub const PRODUCT_COMPACTIONS_TOTAL: &str = "flashsale_product_compactions_total";
pub const PRODUCT_ACTORS: &str = "flashsale_product_actors";
pub const PRODUCT_LOOKUPS_TOTAL: &str = "flashsale_product_lookups_total";
pub const PRODUCT_STOCK_AVAILABLE: &str = "flashsale_product_stock_available";
pub const PRODUCT_STOCK_TOTAL: &str = "flashsale_product_stock_total";
pub const OVERSELL_GUARD_TOTAL: &str = "flashsale_oversell_guard_total";

/// Product actors running now (loading, loaded, or an unknown id's, briefly).
pub static PRODUCT_ACTORS_GAUGE: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(PRODUCT_ACTORS, "Product actors running").expect("metric")
});

/// Product actors stopped because they were idle (their memory given back).
pub static PRODUCT_PASSIVATIONS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(PRODUCT_PASSIVATIONS_TOTAL, "Idle product actors passivated")
        .expect("metric")
});
/// Idle product actors stopped leaving only their published page and gate.
pub static PRODUCT_COMPACTIONS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        PRODUCT_COMPACTIONS_TOTAL,
        "Idle product actors compacted to their published page and gate"
    )
    .expect("metric")
});

/// Existence lookups a store made before starting a product actor, by result: `found`,
/// `missing`, `failed`, or `shed` (refused 503 because the lookups were at their bound).
pub static PRODUCT_LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        PRODUCT_LOOKUPS_TOTAL,
        "Product existence lookups made by stores before starting an actor, by result",
        &["result"]
    )
    .expect("metric")
});

/// Product actors started, by cause: `request` (a cold read: the request waited for the
/// product to load from the database) or `warm` (ahead of need: before its drop, or at
/// boot for its pending payment holds).
pub static PRODUCT_LOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        PRODUCT_LOADS_TOTAL,
        "Product actors started, by cause",
        &["cause"]
    )
    .expect("metric")
});

/// Products whose stock is exported, at most (label cardinality stays bounded).
pub const MAX_STOCK_SERIES: usize = 1000;

pub static STOCK_AVAILABLE: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        PRODUCT_STOCK_AVAILABLE,
        "Units left, per loaded product",
        &["product_id"]
    )
    .expect("metric")
});

pub static STOCK_TOTAL: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        PRODUCT_STOCK_TOTAL,
        "Units put in, per loaded product",
        &["product_id"]
    )
    .expect("metric")
});

/// The database refused a stock update that would have oversold: the last line of
/// defence fired, which means the in-memory decision was wrong. Alert on any.
pub static OVERSELL_GUARD: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        OVERSELL_GUARD_TOTAL,
        "Stock updates the database refused as an oversell"
    )
    .expect("metric")
});

/// Makes this area's series that must exist from the start exist (see
/// [`super::register_all`]).
pub(super) fn register() {
    LazyLock::force(&OVERSELL_GUARD);
    LazyLock::force(&PRODUCT_PASSIVATIONS);
    LazyLock::force(&PRODUCT_COMPACTIONS);
    LazyLock::force(&PRODUCT_ACTORS_GAUGE);
    LazyLock::force(&STOCK_AVAILABLE);
    LazyLock::force(&STOCK_TOTAL);
}
