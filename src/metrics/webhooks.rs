//! Webhook metrics: deliveries finished, attempts by result, delivery lag, endpoints
//! disabled, and the backlog.

use std::sync::LazyLock;

use prometheus::{register_histogram, register_int_counter_vec, Histogram, IntCounterVec};

pub const WEBHOOK_DELIVERIES_TOTAL: &str = "flashsale_webhook_deliveries_total";
pub const WEBHOOK_ATTEMPTS_TOTAL: &str = "flashsale_webhook_attempts_total";
pub const WEBHOOK_LAG_SECONDS: &str = "flashsale_webhook_lag_seconds";
pub const WEBHOOK_ENDPOINTS_DISABLED_TOTAL: &str = "flashsale_webhook_endpoints_disabled_total";
pub const WEBHOOK_BACKLOG: &str = "flashsale_webhook_backlog";

/// Deliveries finished, by outcome: `delivered` (a 2xx) or `failed` (schedule
/// exhausted, or the endpoint answered 410).
pub static WEBHOOK_DELIVERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        WEBHOOK_DELIVERIES_TOTAL,
        "Webhook deliveries finished, by outcome",
        &["outcome"]
    )
    .expect("metric")
});

/// Attempts (POSTs), by result: `success`, `http_error`, `timeout`, `error` (no
/// response), `forbidden` (the URL guard refused the address).
pub static WEBHOOK_ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        WEBHOOK_ATTEMPTS_TOTAL,
        "Webhook delivery attempts, by result",
        &["result"]
    )
    .expect("metric")
});

/// From an event's commit to the 2xx that delivered it.
pub static WEBHOOK_LAG: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        WEBHOOK_LAG_SECONDS,
        "Seconds from an event to the 2xx that delivered it",
        vec![
            0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
            7200.0
        ]
    )
    .expect("metric")
});

/// Endpoints the dispatcher disabled, by reason: `gone` (410) or `failing`.
pub static WEBHOOK_ENDPOINTS_DISABLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        WEBHOOK_ENDPOINTS_DISABLED_TOTAL,
        "Webhook endpoints disabled by the dispatcher, by reason",
        &["reason"]
    )
    .expect("metric")
});

/// Work waiting: `outbox` (events not handed over yet) and `deliveries` (pending).
pub static WEBHOOK_BACKLOG_GAUGE: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        WEBHOOK_BACKLOG,
        "Webhook work waiting, by queue",
        &["queue"]
    )
    .expect("metric")
});

/// Makes this area's series that must exist from the start exist (see
/// [`super::register_all`]).
pub(super) fn register() {
    LazyLock::force(&WEBHOOK_LAG);
    for outcome in ["delivered", "failed"] {
        WEBHOOK_DELIVERIES.with_label_values(&[outcome]);
    }
    for result in ["success", "http_error", "timeout", "error", "forbidden"] {
        WEBHOOK_ATTEMPTS.with_label_values(&[result]);
    }
    for reason in ["gone", "failing"] {
        WEBHOOK_ENDPOINTS_DISABLED.with_label_values(&[reason]);
    }
    for queue in ["outbox", "deliveries"] {
        WEBHOOK_BACKLOG_GAUGE.with_label_values(&[queue]);
    }
}
