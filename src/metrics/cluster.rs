//! Cluster metrics: shards held, shard lease events, requests forwarded to a product's
//! owner, and writes refused by the fence.

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, IntCounterVec};

pub const CLUSTER_SHARDS_OWNED_NAME: &str = "flashsale_cluster_shards_owned";
pub const CLUSTER_LEASES_TOTAL: &str = "flashsale_cluster_leases_total";
pub const CLUSTER_FORWARDS_TOTAL: &str = "flashsale_cluster_forwards_total";
pub const CLUSTER_FENCED_TOTAL: &str = "flashsale_cluster_fenced_total";

/// Shards this instance holds now (of `cluster::SHARDS`).
pub static CLUSTER_SHARDS_OWNED: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(CLUSTER_SHARDS_OWNED_NAME, "Shards held by this instance")
        .expect("metric")
});

/// Shard lease events: `renewed`, `claimed`, `released` (given to another instance),
/// `lost` (taken by another while we held it).
pub static CLUSTER_LEASES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        CLUSTER_LEASES_TOTAL,
        "Shard lease events, by kind",
        &["event"]
    )
    .expect("metric")
});

/// Requests about products owned elsewhere, sent on to their owner: `forwarded`
/// (answered by the owner), `failed` (the owner could not be reached).
pub static CLUSTER_FORWARDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        CLUSTER_FORWARDS_TOTAL,
        "Requests forwarded to the owner of their product, by result",
        &["result"]
    )
    .expect("metric")
});

/// Writes refused by the fence (this instance no longer held the shard's epoch):
/// `checkout` (a write-behind batch), `write` (restock, PATCH, confirm, cancel).
pub static CLUSTER_FENCED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        CLUSTER_FENCED_TOTAL,
        "Writes refused because the shard lease had moved on",
        &["write"]
    )
    .expect("metric")
});

/// Makes this area's series that must exist from the start exist (see
/// [`super::register_all`]).
pub(super) fn register() {
    LazyLock::force(&CLUSTER_SHARDS_OWNED);
    for event in ["renewed", "claimed", "released", "lost"] {
        CLUSTER_LEASES.with_label_values(&[event]);
    }
    for result in ["forwarded", "failed"] {
        CLUSTER_FORWARDS.with_label_values(&[result]);
    }
    for write in ["checkout", "write"] {
        CLUSTER_FENCED.with_label_values(&[write]);
    }
}
