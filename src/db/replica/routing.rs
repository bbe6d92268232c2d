//! Which database serves a read (the replica when it is up, fresh enough and past the
//! last write the reader must see; else the primary, with the reason), and running the
//! read there, falling back to the primary when the replica fails or lacks the row.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{ReadError, Replica};
use crate::db::Pool;
use crate::metrics::REPLICA_READS;

/// How long a read may take on the replica before the primary is asked instead.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

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

impl Replica {
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
}
