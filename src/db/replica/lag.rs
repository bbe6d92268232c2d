//! How far behind the primary the replica is: the probe every [`TICK`] that samples the
//! primary's WAL insert position and the replica's replay position, moves the watermark,
//! and decides whether the replica is usable (a standby of our own primary).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use super::{ReadError, Replica};
use crate::db::Pool;
use crate::metrics::{REPLICA_LAG, REPLICA_UP};

/// How often the replica's position is compared with the primary's.
pub const TICK: Duration = Duration::from_millis(250);
/// How long one position query may take before its side counts as away.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Primary samples kept while the replica has not reached them (a minute of ticks);
/// dropping the oldest only makes the watermark coarser, never wrong.
const MAX_SAMPLES: usize = 240;
/// The longest WAL page header (the first page of a segment): see [`replica_holds`].
const LONG_PAGE_HEADER: i64 = 40;

impl Replica {
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

#[cfg(test)]
mod tests {
    use super::*;

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
