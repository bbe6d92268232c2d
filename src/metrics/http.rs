//! HTTP metrics: RED by route, method and status, and API-key lookups shed under a flood
//! of unknown tokens.

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, IntCounterVec};

use super::LATENCY_BUCKETS;

pub const HTTP_REQUESTS_TOTAL: &str = "flashsale_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "flashsale_http_request_duration_seconds";
pub const KEY_LOOKUPS_SHED_TOTAL: &str = "flashsale_key_lookups_shed_total";

/// The method label of every request whose method is not a standard one (RFC 9110 and
/// PATCH): labels come from closed sets, so no request can mint a series.
pub const OTHER_METHOD: &str = "other";

/// RED: requests by matched route (its template, or `unmatched`), method (standard, or
/// `other`) and status.
pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests, by route, method and status",
        &["route", "method", "status"]
    )
    .expect("metric")
});

pub static HTTP_DURATION: LazyLock<prometheus::HistogramVec> = LazyLock::new(|| {
    prometheus::register_histogram_vec!(
        HTTP_REQUEST_DURATION_SECONDS,
        "HTTP request latency, by route and method",
        &["route", "method"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("metric")
});

/// API-key lookups refused because too many were running (a flood of unknown tokens).
pub static KEY_LOOKUPS_SHED: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        KEY_LOOKUPS_SHED_TOTAL,
        "Unknown API keys refused without a lookup because the lookups were at their bound"
    )
    .expect("metric")
});

/// Makes this area's series that must exist from the start exist (see
/// [`super::register_all`]).
pub(super) fn register() {
    LazyLock::force(&KEY_LOOKUPS_SHED);
}
