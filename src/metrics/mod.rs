//! Prometheus metrics. Names are written once, here, and shared by code, dashboards and
//! alert rules.
//!
//! One file per area: `http`, `checkout`, `writer`, `mailboxes` (actor mailboxes and
//! deadlines), `products`, `database` (pool, breaker, read replica), `cache`, `cluster`
//! and `webhooks`. Every name is re-exported here, so code, tests and dashboards keep
//! saying `metrics::NAME`; a new metric goes in its area's file, with its startup series
//! in that file's `register`.

use std::sync::LazyLock;

use prometheus::{Encoder, TextEncoder};

mod cache;
mod checkout;
mod cluster;
mod database;
mod http;
mod mailboxes;
mod products;
mod webhooks;
mod writer;

pub use cache::*;
pub use checkout::*;
pub use cluster::*;
pub use database::*;
pub use http::*;
pub use mailboxes::*;
pub use products::*;
pub use webhooks::*;
pub use writer::*;

pub const BUILD_INFO: &str = "flashsale_build_info";

/// Latency buckets, seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub static BUILD: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(BUILD_INFO, "Build information (always 1)", &["version"])
        .expect("metric")
});

/// The registry in Prometheus text format.
pub fn render() -> String {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Makes the series that must exist from the start exist (a dashboard should show 0,
/// not "no data").
pub fn register_all() {
    BUILD.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    cache::register();
    checkout::register();
    cluster::register();
    database::register();
    http::register();
    mailboxes::register();
    products::register();
    webhooks::register();
    writer::register();
}
