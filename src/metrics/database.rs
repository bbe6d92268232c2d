//! Database metrics: whether the primary answers, pool connections, and the read
//! replica (which database served a read and why, its lag, whether it is usable).

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, IntCounterVec};

pub const DB_UP: &str = "flashsale_db_up";
pub const DB_POOL_CONNECTIONS: &str = "flashsale_db_pool_connections";
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

/// 1 while the database answers, 0 while the circuit breaker is open.
pub static DB_UP_GAUGE: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(DB_UP, "Whether PostgreSQL answers (1) or not (0)")
        .expect("metric")
});

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

/// Makes this area's series that must exist from the start exist (see
/// [`super::register_all`]).
pub(super) fn register() {
    LazyLock::force(&DB_UP_GAUGE);
    for (target, reason) in REPLICA_READ_LABELS {
        REPLICA_READS.with_label_values(&[target, reason]);
    }
    LazyLock::force(&REPLICA_LAG);
    LazyLock::force(&REPLICA_UP);
}
