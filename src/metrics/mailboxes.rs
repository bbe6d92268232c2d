//! Actor mailbox metrics: depth and refusals by actor kind, and messages dropped unserved
//! (deadline passed or caller gone).

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, IntCounterVec};

pub const MAILBOX_REJECTIONS_TOTAL: &str = "flashsale_mailbox_rejections_total";
pub const MAILBOX_DEPTH: &str = "flashsale_mailbox_depth";
pub const DEADLINE_DROPS_TOTAL: &str = "flashsale_deadline_drops_total";

/// Messages refused because an actor's bounded mailbox was full, by actor kind.
pub static MAILBOX_REJECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        MAILBOX_REJECTIONS_TOTAL,
        "Messages refused by a full mailbox",
        &["actor"]
    )
    .expect("metric")
});

/// Messages dropped before they took stock or reached the database, by where (`store`,
/// `product`, `writer`, `database`) and why (`deadline`: its time to start passed;
/// `caller_gone`: nobody waits for the answer).
pub static DEADLINE_DROPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        DEADLINE_DROPS_TOTAL,
        "Messages dropped unserved because their deadline passed or their caller left",
        &["actor", "reason"]
    )
    .expect("metric")
});

static MAILBOX_DEPTHS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        MAILBOX_DEPTH,
        "Messages waiting in mailboxes, by actor kind",
        &["actor"]
    )
    .expect("metric")
});

static DEPTH_STORE: LazyLock<prometheus::IntGauge> =
    LazyLock::new(|| MAILBOX_DEPTHS.with_label_values(&["store"]));
static DEPTH_PRODUCT: LazyLock<prometheus::IntGauge> =
    LazyLock::new(|| MAILBOX_DEPTHS.with_label_values(&["product"]));
static DEPTH_WRITER: LazyLock<prometheus::IntGauge> =
    LazyLock::new(|| MAILBOX_DEPTHS.with_label_values(&["writer"]));
static DEPTH_DISPATCHER: LazyLock<prometheus::IntGauge> =
    LazyLock::new(|| MAILBOX_DEPTHS.with_label_values(&["dispatcher"]));

/// The depth gauge of one actor kind (`store`, `product`, `writer`, `dispatcher`): up on
/// send, down on handling. Resolved once: it is touched on every hop of every request.
pub fn mailbox_depth(actor: &str) -> &'static prometheus::IntGauge {
    match actor {
        "store" => &DEPTH_STORE,
        "product" => &DEPTH_PRODUCT,
        "dispatcher" => &DEPTH_DISPATCHER,
        _ => &DEPTH_WRITER,
    }
}

/// Makes this area's series that must exist from the start exist (see
/// [`super::register_all`]).
pub(super) fn register() {
    for actor in ["store", "product", "writer", "dispatcher"] {
        mailbox_depth(actor);
        MAILBOX_REJECTIONS.with_label_values(&[actor]);
    }
    for actor in ["store", "product", "writer", "database"] {
        for reason in ["deadline", "caller_gone"] {
            DEADLINE_DROPS.with_label_values(&[actor, reason]);
        }
    }
}
