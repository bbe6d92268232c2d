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
pub const PRODUCT_PASSIVATIONS_TOTAL: &str = "flashsale_product_passivations_total";
pub const PRODUCT_COMPACTIONS_TOTAL: &str = "flashsale_product_compactions_total";
pub const PRODUCT_ACTORS: &str = "flashsale_product_actors";
pub const PRODUCT_LOOKUPS_TOTAL: &str = "flashsale_product_lookups_total";

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
pub const DEADLINE_DROPS_TOTAL: &str = "flashsale_deadline_drops_total";
pub const OUTCOME_UNKNOWN_TOTAL: &str = "flashsale_outcome_unknown_total";
pub const KEY_LOOKUPS_SHED_TOTAL: &str = "flashsale_key_lookups_shed_total";

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

/// API-key lookups refused because too many were running (a flood of unknown tokens).
pub static KEY_LOOKUPS_SHED: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        KEY_LOOKUPS_SHED_TOTAL,
        "Unknown API keys refused without a lookup because the lookups were at their bound"
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

/// 1 while the database answers, 0 while the circuit breaker is open.
pub static DB_UP_GAUGE: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(DB_UP, "Whether PostgreSQL answers (1) or not (0)")
        .expect("metric")
});

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

/// The registry in Prometheus text format.
pub fn render() -> String {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

pub const HTTP_REQUESTS_TOTAL: &str = "flashsale_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "flashsale_http_request_duration_seconds";
pub const CHECKOUT_DURATION_SECONDS: &str = "flashsale_checkout_duration_seconds";
pub const PRODUCT_STOCK_AVAILABLE: &str = "flashsale_product_stock_available";
pub const PRODUCT_STOCK_TOTAL: &str = "flashsale_product_stock_total";
pub const MAILBOX_DEPTH: &str = "flashsale_mailbox_depth";
pub const CACHE_REQUESTS_TOTAL: &str = "flashsale_cache_requests_total";
pub const DB_POOL_CONNECTIONS: &str = "flashsale_db_pool_connections";
pub const OVERSELL_GUARD_TOTAL: &str = "flashsale_oversell_guard_total";
pub const BUILD_INFO: &str = "flashsale_build_info";

/// Latency buckets, seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Products whose stock is exported, at most (label cardinality stays bounded).
pub const MAX_STOCK_SERIES: usize = 1000;

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

pub static CHECKOUT_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        CHECKOUT_DURATION_SECONDS,
        "Checkout latency, every outcome",
        LATENCY_BUCKETS.to_vec()
    )
    .expect("metric")
});

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

pub static DB_POOL: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        DB_POOL_CONNECTIONS,
        "Pool connections, by pool and state",
        &["pool", "state"]
    )
    .expect("metric")
});

/// Records a pool's size, idle connections and waiters.
pub fn record_pool(name: &str, pool: &crate::db::Pool) {
    let status = pool.status();
    DB_POOL
        .with_label_values(&[name, "size"])
        .set(status.size as i64);
    DB_POOL
        .with_label_values(&[name, "available"])
        .set(status.available as i64);
    DB_POOL
        .with_label_values(&[name, "waiting"])
        .set(status.waiting as i64);
}

/// The database refused a stock update that would have oversold: the last line of
/// defence fired, which means the in-memory decision was wrong. Alert on any.
pub static OVERSELL_GUARD: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        OVERSELL_GUARD_TOTAL,
        "Stock updates the database refused as an oversell"
    )
    .expect("metric")
});

pub static BUILD: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(BUILD_INFO, "Build information (always 1)", &["version"])
        .expect("metric")
});

/// Makes the series that must exist from the start exist (a dashboard should show 0,
/// not "no data").
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

pub const CACHE_NOTIFICATIONS_TOTAL: &str = "flashsale_cache_notifications_total";
pub const CACHE_LISTEN_RECONNECTS_TOTAL: &str = "flashsale_cache_listen_reconnects_total";

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

pub const REPLICA_READS_TOTAL: &str = "flashsale_replica_reads_total";
pub const REPLICA_LAG_SECONDS: &str = "flashsale_replica_lag_seconds";
pub const REPLICA_UP_NAME: &str = "flashsale_replica_up";
/// The `reason` of each `target` of [`REPLICA_READS`]: the replica serves what it is
/// fresh enough for; the primary serves the rest, saying why.
pub const REPLICA_READ_LABELS: [(&str, &str); 6] = [
    ("replica", "fresh"),
    ("primary", "down"),
    ("primary", "lagging"),
    ("primary", "own_write"),
    ("primary", "replica_failed"),
    ("primary", "replica_miss"),
];

/// Reads that could go to the replica (`DATABASE_REPLICA_URL` set), by where they were
/// served (`target`) and why (`reason`, see [`REPLICA_READ_LABELS`]).
pub static REPLICA_READS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        REPLICA_READS_TOTAL,
        "Listing, order and event reads by the database that served them, and why",
        &["target", "reason"]
    )
    .expect("metric")
});

/// How far behind the primary the replica is: now minus the newest moment of which it
/// holds every commit (grows while it is away; 0 without a replica).
pub static REPLICA_LAG: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    prometheus::register_gauge!(
        REPLICA_LAG_SECONDS,
        "Replication lag of the read replica, seconds"
    )
    .expect("metric")
});

/// 1 while the read replica answers as a standby, else 0.
pub static REPLICA_UP: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(REPLICA_UP_NAME, "Whether the read replica is usable")
        .expect("metric")
});

pub fn register_all() {
    BUILD.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    for (target, reason) in REPLICA_READ_LABELS {
        REPLICA_READS.with_label_values(&[target, reason]);
    }
    LazyLock::force(&REPLICA_LAG);
    LazyLock::force(&REPLICA_UP);
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
    for event in ["sent", "received", "applied"] {
        CACHE_NOTIFICATIONS.with_label_values(&[event]);
    }
    LazyLock::force(&CACHE_LISTEN_RECONNECTS);
    LazyLock::force(&OVERSELL_GUARD);
    LazyLock::force(&PRODUCT_PASSIVATIONS);
    LazyLock::force(&PRODUCT_COMPACTIONS);
    LazyLock::force(&PRODUCT_ACTORS_GAUGE);
    LazyLock::force(&DB_UP_GAUGE);
    LazyLock::force(&CHECKOUT_DURATION);
    LazyLock::force(&WRITER_BATCH_SIZE_HIST);
    LazyLock::force(&WRITER_COMMIT);
    for actor in ["store", "product", "writer", "dispatcher"] {
        mailbox_depth(actor);
        MAILBOX_REJECTIONS.with_label_values(&[actor]);
    }
    for actor in ["store", "product", "writer", "database"] {
        for reason in ["deadline", "caller_gone"] {
            DEADLINE_DROPS.with_label_values(&[actor, reason]);
        }
    }
    for operation in ["checkout", "restock", "patch", "confirm", "cancel"] {
        OUTCOME_UNKNOWN.with_label_values(&[operation]);
    }
    LazyLock::force(&KEY_LOOKUPS_SHED);
    for outcome in ["committed", "rolled_back", "unknown"] {
        WRITER_BATCHES.with_label_values(&[outcome]);
    }
    for outcome in ["committed", "duplicate", "failed", "unknown"] {
        WRITER_ORDERS.with_label_values(&[outcome]);
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
    LazyLock::force(&CACHE_COUNTERS);
    LazyLock::force(&STOCK_AVAILABLE);
    LazyLock::force(&STOCK_TOTAL);
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
