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

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Weak;
use std::time::{Duration, Instant};

use super::Pool;
use crate::metrics::{REPLICA_LAG, REPLICA_READS, REPLICA_UP};

/// How often the replica's position is compared with the primary's.
pub const TICK: Duration = Duration::from_millis(250);
/// How long one position query may take before its side counts as away.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection to the replica may take (as long as the primary's): what a
/// replica that went away costs the reads in flight at most, before the primary answers
/// them (a refused connection costs nothing, and the first failure marks it away).
const CONNECT_WAIT: Duration = Duration::from_secs(2);
/// How long a read may take on the replica before the primary is asked instead.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Primary samples kept while the replica has not reached them (a minute of ticks);
/// dropping the oldest only makes the watermark coarser, never wrong.
const MAX_SAMPLES: usize = 240;
/// Callers (and stores) whose last write is remembered, at most.
const REMEMBERED_WRITES: u64 = 100_000;
/// The longest WAL page header (the first page of a segment): see [`replica_holds`].
const LONG_PAGE_HEADER: i64 = 40;

/// Whose writes a read must see.
#[derive(Debug, Clone, Copy)]
pub enum Reader<'a> {
    /// A listing of this store's catalog (products, drops): its catalog writes.
    Catalog(&'a str),
    /// A caller, by the hash of its bearer token: the writes answered to it here.
    Caller(Option<&'a [u8; 32]>),
}

/// Where a read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Replica,
    /// The primary, and why (a `reason` of [`crate::metrics::REPLICA_READS`]).
    Primary(&'static str),
}

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

    /// Where a read for `reader` goes now.
    pub fn route(&self, reader: Reader<'_>) -> Route {
        let last_write = match reader {
            Reader::Catalog(store) => self.catalogs.get(store),
            Reader::Caller(Some(caller)) => self.writes.get(caller),
            Reader::Caller(None) => None,
        };
        choose_route(
            self.up.load(Ordering::Acquire),
            self.watermark.load(Ordering::Acquire),
            self.now(),
            self.max_lag,
            last_write,
        )
    }

    /// `read` on the replica, bounded; `None` if it failed (logged here).
    async fn try_read<T, F, Fut>(&self, read: &F) -> Option<T>
    where
        F: Fn(deadpool_postgres::Client) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let attempt = async {
            let client = self.pool.get().await.map_err(ReadError::from)?;
            read(client).await.map_err(ReadError::from)
        };
        match tokio::time::timeout(READ_TIMEOUT, attempt).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                // A refused statement (a conflict with recovery, say) is this read's
                // problem; a lost connection is the replica's, until the next probe.
                if !matches!(&e, ReadError::Db(db) if db.as_db_error().is_some()) {
                    self.up.store(false, Ordering::Release);
                }
                tracing::warn!(error = %e, "replica read failed; asking the primary");
                None
            }
            Err(_) => {
                tracing::warn!("replica read timed out; asking the primary");
                None
            }
        }
    }

    /// One comparison of positions: a new primary sample, the replica's replay
    /// position, and from them the watermark, `up`, and the metrics.
    async fn probe(&self, primary: &Pool, samples: &mut VecDeque<(u64, i64)>, block: &mut i64) {
        let asked = self.now();
        match tokio::time::timeout(PROBE_TIMEOUT, primary_position(primary)).await {
            Ok(Ok((position, block_size))) => {
                *block = block_size;
                if samples.back().is_none_or(|&(_, last)| last != position) {
                    samples.push_back((asked, position));
                } else if let Some(back) = samples.back_mut() {
                    // The same position, asked later: still all it takes.
                    back.0 = asked;
                }
                if samples.len() > MAX_SAMPLES {
                    samples.pop_front();
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "no WAL position from the primary"),
            Err(_) => tracing::debug!("no WAL position from the primary in time"),
        }
        let replayed = tokio::time::timeout(PROBE_TIMEOUT, replay_position(&self.pool)).await;
        let usable = match replayed {
            Ok(Ok(Some(replayed))) => {
                let mut reached = None;
                while let Some(&(at, position)) = samples.front() {
                    if !replica_holds(position, replayed, *block) {
                        break;
                    }
                    reached = Some(at);
                    samples.pop_front();
                }
                if let Some(at) = reached {
                    self.watermark.fetch_max(at, Ordering::AcqRel);
                }
                !self.foreign.load(Ordering::Acquire)
            }
            Ok(Ok(None)) => {
                if self.up.load(Ordering::Acquire) {
                    tracing::warn!(
                        "the read replica is not in recovery (promoted?); reads go to the primary"
                    );
                }
                false
            }
            Ok(Err(e)) => {
                if self.up.load(Ordering::Acquire) {
                    tracing::warn!(error = %e, "the read replica is away; reads go to the primary");
                }
                false
            }
            Err(_) => {
                if self.up.load(Ordering::Acquire) {
                    tracing::warn!("the read replica does not answer; reads go to the primary");
                }
                false
            }
        };
        if usable && !self.up.load(Ordering::Acquire) {
            tracing::info!("the read replica serves reads");
        }
        self.up.store(usable, Ordering::Release);
        REPLICA_UP.set(i64::from(usable));
        let watermark = self.watermark.load(Ordering::Acquire);
        let lag = Duration::from_nanos(self.now().saturating_sub(watermark.max(1)));
        REPLICA_LAG.set(lag.as_secs_f64());
    }

    /// Refuses the replica for good if it streams from another cluster than `primary`
    /// (its positions would mean nothing); `true` once the check is over (made, or
    /// refused by a server: `pg_control_system()` may be out of the role's reach).
    async fn check_identity(&self, primary: &Pool) -> bool {
        let (ours, theirs) = tokio::join!(system_id(primary), system_id(&self.pool));
        match (ours, theirs) {
            (Ok(ours), Ok(theirs)) => {
                if ours != theirs {
                    tracing::error!(
                        primary = ours,
                        replica = theirs,
                        "DATABASE_REPLICA_URL is not a replica of DATABASE_URL; it is never used"
                    );
                    self.foreign.store(true, Ordering::Release);
                }
                true
            }
            (Err(ReadError::Db(e)), _) | (_, Err(ReadError::Db(e)))
                if e.as_db_error().is_some() =>
            {
                tracing::warn!(error = %e, "cannot compare the replica's system identifier with the primary's; trusting DATABASE_REPLICA_URL");
                true
            }
            // Someone is away: again next time.
            _ => false,
        }
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

/// Where a read goes, given the replica's state and the last write it must see (pure:
/// instants in nanoseconds of one clock).
pub fn choose_route(
    up: bool,
    watermark: u64,
    now: u64,
    max_lag: Duration,
    last_write: Option<u64>,
) -> Route {
    if !up {
        return Route::Primary("down");
    }
    if watermark == 0 || now.saturating_sub(watermark) > max_lag.as_nanos() as u64 {
        return Route::Primary("lagging");
    }
    // The watermark is the instant a primary sample was asked for: a write answered at
    // that instant or later may not be in it.
    if last_write.is_some_and(|written| written >= watermark) {
        return Route::Primary("own_write");
    }
    Route::Replica
}

/// Whether a replica that replayed WAL up to `replayed` holds everything written before
/// the primary's insert position `sampled` (WAL byte positions; `block`: WAL page size).
/// An idle primary whose last record ended at a page boundary reports its insert
/// position past the next page's header, where no record can be: that counts as held.
pub fn replica_holds(sampled: i64, replayed: i64, block: i64) -> bool {
    replayed >= sampled
        || (block > 0 && replayed % block == 0 && sampled - replayed <= LONG_PAGE_HEADER)
}

/// The primary's WAL insert position and WAL page size.
async fn primary_position(primary: &Pool) -> Result<(i64, i64), ReadError> {
    let client = primary.get().await?;
    let row = client
        .query_one(
            "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8, \
                    current_setting('wal_block_size')::int8",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// The replica's replay position; `None` if it is not a standby.
async fn replay_position(replica: &Pool) -> Result<Option<i64>, ReadError> {
    let client = replica.get().await?;
    let row = client
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() \
                    THEN (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8 END",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

async fn system_id(pool: &Pool) -> Result<i64, ReadError> {
    let client = pool.get().await?;
    let row = client
        .query_one("SELECT system_identifier FROM pg_control_system()", &[])
        .await?;
    Ok(row.get(0))
}

/// Compares the replica with the primary every [`TICK`] for as long as it lives.
/// `primary`: a pool of its own (one connection), so that a busy serving pool does not
/// make the replica look behind.
pub async fn watch(replica: Weak<Replica>, primary: Pool) {
    let mut samples = VecDeque::new();
    let mut block = 0;
    let mut identified = false;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(replica) = replica.upgrade() else {
            return;
        };
        if !identified {
            identified = replica.check_identity(&primary).await;
        }
        replica.probe(&primary, &mut samples, &mut block).await;
    }
}

/// Runs `read` where [`Replica::route`] sends it: on the replica when it is fresh
/// enough, else (or if it fails there) on the primary. Every read is counted once.
pub async fn read<T, F, Fut>(
    primary: &Pool,
    replica: Option<&Replica>,
    reader: Reader<'_>,
    read: F,
) -> Result<T, ReadError>
where
    F: Fn(deadpool_postgres::Client) -> Fut,
    Fut: Future<Output = Result<T, tokio_postgres::Error>>,
{
    read_unless(primary, replica, reader, |_| false, read).await
}

/// [`read`] of one row: one the replica does not have (yet) is looked for on the
/// primary, so that a row just written is found wherever it was written.
pub async fn read_found<T, F, Fut>(
    primary: &Pool,
    replica: Option<&Replica>,
    reader: Reader<'_>,
    read: F,
) -> Result<Option<T>, ReadError>
where
    F: Fn(deadpool_postgres::Client) -> Fut,
    Fut: Future<Output = Result<Option<T>, tokio_postgres::Error>>,
{
    read_unless(primary, replica, reader, Option::is_none, read).await
}

async fn read_unless<T, F, Fut>(
    primary: &Pool,
    replica: Option<&Replica>,
    reader: Reader<'_>,
    missing: impl Fn(&T) -> bool,
    read: F,
) -> Result<T, ReadError>
where
    F: Fn(deadpool_postgres::Client) -> Fut,
    Fut: Future<Output = Result<T, tokio_postgres::Error>>,
{
    if let Some(replica) = replica {
        let reason = match replica.route(reader) {
            Route::Replica => match replica.try_read(&read).await {
                Some(value) if !missing(&value) => {
                    count_read("replica", "fresh");
                    return Ok(value);
                }
                Some(_) => "replica_miss",
                None => "replica_failed",
            },
            Route::Primary(reason) => reason,
        };
        count_read("primary", reason);
    }
    let client = primary.get().await?;
    Ok(read(client).await?)
}

fn count_read(target: &str, reason: &str) {
    REPLICA_READS.with_label_values(&[target, reason]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: Duration = Duration::from_secs(1);
    const S: u64 = 1_000_000_000;

    #[test]
    fn a_fresh_replica_serves_reads_that_need_no_newer_write() {
        assert_eq!(
            choose_route(true, 10 * S, 10 * S, LAG, None),
            Route::Replica
        );
        assert_eq!(
            choose_route(true, 10 * S, 10 * S + S / 2, LAG, Some(9 * S)),
            Route::Replica
        );
    }

    #[test]
    fn an_own_write_the_replica_may_lack_goes_to_the_primary() {
        // Answered at the very instant the sample was asked for: maybe not in it.
        for written in [10 * S, 10 * S + 1] {
            assert_eq!(
                choose_route(true, 10 * S, 10 * S + 2, LAG, Some(written)),
                Route::Primary("own_write")
            );
        }
    }

    #[test]
    fn a_replica_behind_the_bound_or_away_is_not_used() {
        assert_eq!(
            choose_route(true, 10 * S, 11 * S + 1, LAG, None),
            Route::Primary("lagging")
        );
        assert_eq!(
            choose_route(true, 0, 1, LAG, None),
            Route::Primary("lagging")
        );
        assert_eq!(
            choose_route(false, 10 * S, 10 * S, LAG, None),
            Route::Primary("down")
        );
    }

    #[test]
    fn replay_up_to_the_sample_holds_it() {
        assert!(replica_holds(1000, 1000, 8192));
        assert!(replica_holds(1000, 2000, 8192));
        assert!(!replica_holds(1001, 1000, 8192));
    }

    #[test]
    fn an_idle_insert_position_past_a_page_header_is_held_at_the_boundary() {
        let page = 3 * 8192;
        assert!(replica_holds(page + 24, page, 8192));
        assert!(replica_holds(page + 40, page, 8192));
        // A record after the header: not held.
        assert!(!replica_holds(page + 24 + 32, page, 8192));
        // Not at a boundary: every byte counts.
        assert!(!replica_holds(page + 100 + 24, page + 100, 8192));
        assert!(!replica_holds(page + 24, page, 0));
    }
}
