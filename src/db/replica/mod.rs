//! The read replica (`DATABASE_REPLICA_URL`): which database a read goes to, and how far
//! behind the replica is.
//!
//! **Lag** is measured by WAL position, the way PostgreSQL's own monitoring compares a
//! standby with its primary: every [`TICK`] the primary's WAL insert position is
//! sampled, with the instant it was asked for, and the replica's replay position is
//! read. Once the replica has replayed past a sample, it holds every transaction that
//! committed before that instant: the replica's *watermark*. Its lag is now minus the
//! watermark. An idle primary's position does not move, so an idle replica stays fresh
//! (a replay timestamp would grow stale instead); a stuck replica's watermark stops
//! while the primary's position moves on, so its lag grows.
//!
//! **Routing**: a read goes to the replica when the replica answers as a standby, its lag
//! is within `FLASHSALE_REPLICA_MAX_LAG_MS`, and its watermark is past the last write the
//! read must see (read-your-own-writes): for listings, the store's last catalog write
//! known here; for order and event reads, the last write this instance answered to the
//! same API key. Anything else, and any read the replica fails, goes to the primary: a
//! client never sees an error for the replica.
//!
//! The lag probe is `lag.rs` ([`watch`]); the choice of database per read, and running
//! it there, is `routing.rs` ([`read`], [`read_found`]). This file holds the replica's
//! shared state and what it remembers of recent writes.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use super::Pool;

mod lag;
mod routing;

pub use lag::{replica_holds, watch, TICK};
pub use routing::{choose_route, read, read_found, Reader, Route};

/// How long a connection to the replica may take (as long as the primary's): what a
/// replica that went away costs the reads in flight at most, before the primary answers
/// them (a refused connection costs nothing, and the first failure marks it away).
const CONNECT_WAIT: Duration = Duration::from_secs(2);
/// Callers (and stores) whose last write is remembered, at most.
const REMEMBERED_WRITES: u64 = 100_000;

/// Why a read failed (on the primary: the replica's failures are not the client's).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// The replica, its freshness, and the writes reads must see.
pub struct Replica {
    pool: Pool,
    max_lag: Duration,
    /// Where this process's instants (below, in nanoseconds) count from.
    epoch: Instant,
    /// The watermark: the replica holds every commit acknowledged before it (0: none yet).
    watermark: AtomicU64,
    /// It answered the last probe as a standby of our primary.
    up: AtomicBool,
    /// It is a standby of another cluster: never used.
    foreign: AtomicBool,
    /// Bearer token hash → when a write was last answered to it. Kept for the lag bound:
    /// past it the replica either has the write or is too far behind to be used.
    writes: crate::Cache<[u8; 32], u64>,
    /// Store id → when its catalog last changed (kept the same way).
    catalogs: crate::Cache<String, u64>,
}

impl Replica {
    /// The replica at `url`, with the serving session settings; connections are made
    /// lazily, so a replica that is away does not stop the start.
    pub fn new(url: &str, settings: &crate::config::Settings) -> anyhow::Result<Self> {
        let mut config = super::session_config(url, settings)?;
        config.connect_timeout(CONNECT_WAIT);
        let max_lag = settings.replica_max_lag();

        Ok(Replica {
            pool: super::pool_waiting(config, settings.db_pool_size, CONNECT_WAIT)?,
            max_lag,
            epoch: Instant::now(),
            watermark: AtomicU64::new(0),
            up: AtomicBool::new(false),
            foreign: AtomicBool::new(false),
            writes: remembered(max_lag),
            catalogs: remembered(max_lag),
        })
    }

    /// Nanoseconds since `epoch`, never 0.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// A write was answered to the caller with this token hash.
    pub fn note_write(&self, caller: [u8; 32]) {
        self.writes.insert(caller, self.now());
    }

    /// The store's catalog changed (a write here, or news of one made elsewhere).
    pub fn note_catalog_write(&self, store_id: &str) {
        self.catalogs.insert(store_id.to_owned(), self.now());
    }
}

/// A bounded memory of writes, each kept for the lag bound.
fn remembered<K>(max_lag: Duration) -> crate::Cache<K, u64>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
{
    moka::sync::Cache::builder()
        .max_capacity(REMEMBERED_WRITES)
        .time_to_live(max_lag.max(Duration::from_millis(1)))
        .build_with_hasher(Default::default())
}
