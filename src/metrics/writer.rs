//! The order writer's metrics: write-behind transactions and the orders they carry,
//! batch sizes and commit time.

use std::sync::LazyLock;

use prometheus::{register_histogram, register_int_counter_vec, Histogram, IntCounterVec};

pub const WRITER_BATCHES_TOTAL: &str = "flashsale_writer_batches_total";
pub const WRITER_ORDERS_TOTAL: &str = "flashsale_writer_orders_total";
pub const WRITER_BATCH_SIZE: &str = "flashsale_writer_batch_size";
pub const WRITER_COMMIT_SECONDS: &str = "flashsale_writer_commit_seconds";

/// Write-behind batches by outcome: `committed`, `rolled_back`, `reconciled`.
pub static WRITER_BATCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        WRITER_BATCHES_TOTAL,
        "Order-writer transactions, by outcome",
        &["outcome"]
    )
    .expect("metric")
});

/// Orders carried by those batches: `committed`, `duplicate`, `failed`.
pub static WRITER_ORDERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        WRITER_ORDERS_TOTAL,
        "Orders written by the order writer, by outcome",
        &["outcome"]
    )
    .expect("metric")
});

pub static WRITER_BATCH_SIZE_HIST: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        WRITER_BATCH_SIZE,
        "Orders per write-behind transaction",
        vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0]
    )
    .expect("metric")
});

pub static WRITER_COMMIT: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        WRITER_COMMIT_SECONDS,
        "Time to write and commit one batch",
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
    )
    .expect("metric")
});

/// Makes this area's series that must exist from the start exist (see
/// [`super::register_all`]).
pub(super) fn register() {
    LazyLock::force(&WRITER_BATCH_SIZE_HIST);
    LazyLock::force(&WRITER_COMMIT);
    for outcome in ["committed", "rolled_back", "unknown"] {
        WRITER_BATCHES.with_label_values(&[outcome]);
    }
    for outcome in ["committed", "duplicate", "failed", "unknown"] {
        WRITER_ORDERS.with_label_values(&[outcome]);
    }
}
