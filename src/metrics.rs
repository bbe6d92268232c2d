//! Prometheus metrics. Names are written once, here, and shared by code, dashboards and
//! alert rules.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter_vec, Encoder, Histogram, IntCounterVec, TextEncoder,
};

pub const CHECKOUTS_TOTAL: &str = "flashsale_checkouts_total";
pub const WRITER_BATCHES_TOTAL: &str = "flashsale_writer_batches_total";
pub const WRITER_ORDERS_TOTAL: &str = "flashsale_writer_orders_total";
pub const WRITER_BATCH_SIZE: &str = "flashsale_writer_batch_size";
pub const WRITER_COMMIT_SECONDS: &str = "flashsale_writer_commit_seconds";
pub const MAILBOX_REJECTIONS_TOTAL: &str = "flashsale_mailbox_rejections_total";
pub const IDEMPOTENT_REPLAYS_TOTAL: &str = "flashsale_idempotent_replays_total";
pub const PRODUCT_LOADS_TOTAL: &str = "flashsale_product_loads_total";
pub const DB_UP: &str = "flashsale_db_up";

/// Checkouts by outcome: `created`, `replayed`, or the error code.
pub static CHECKOUTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        CHECKOUTS_TOTAL,
        "Checkouts answered, by outcome",
        &["outcome"]
    )
    .expect("metric")
});

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

/// Messages refused because an actor's bounded mailbox was full, by actor kind.
pub static MAILBOX_REJECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        MAILBOX_REJECTIONS_TOTAL,
        "Messages refused by a full mailbox",
        &["actor"]
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

/// Product actors started, by cause: `request` (a cold read: the request waited for the
/// product to load from the database) or `warm` (ahead of its drop).
pub static PRODUCT_LOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        PRODUCT_LOADS_TOTAL,
        "Product actors started, by cause",
        &["cause"]
    )
    .expect("metric")
});

/// 1 while the database answers, 0 while the circuit breaker is open.
pub static DB_UP_GAUGE: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(DB_UP, "Whether PostgreSQL answers (1) or not (0)")
        .expect("metric")
});

/// The registry in Prometheus text format.
pub fn render() -> String {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}
