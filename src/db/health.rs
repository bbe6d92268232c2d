//! The database circuit breaker: whether PostgreSQL answers, as last seen.
//!
//! Tripped by a write-behind batch that could not reach the database (not by one that
//! PostgreSQL refused, say on a lock timeout) or a failed probe; closed again by a probe
//! that succeeds (the background ticker probes every second). While it is open,
//! checkouts are refused at once with 503 `unavailable` instead of piling up on a pool
//! that cannot connect, product reads are served from the actors' memory marked as
//! possibly stale, and `/readyz` answers 503.
//!
//! Probes run on a connection of their own (a pool of one), so that a flood that fills
//! the request pool cannot make the database look down; `/readyz` answers from the last
//! probe and never queries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Pool;
use crate::metrics::DB_UP_GAUGE;

/// How long a probe may take before the database counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct DbHealth {
    up: AtomicBool,
    /// The probes' own connection.
    probe_pool: Pool,
}

impl DbHealth {
    /// `probe_pool`: one connection, used by nothing but the probes.
    pub fn new(probe_pool: Pool) -> Self {
        DB_UP_GAUGE.set(1);
        DbHealth {
            up: AtomicBool::new(true),
            probe_pool,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn set(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            if up {
                tracing::info!("database reachable again; circuit breaker closed");
            } else {
                tracing::warn!("database unreachable; circuit breaker open");
            }
        }
        DB_UP_GAUGE.set(i64::from(up));
    }

    /// Asks the database on the probes' own connection, and records the answer.
    pub async fn probe(&self) -> bool {
        let ask = async {
            let client = self.probe_pool.get().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        };
        let up = tokio::time::timeout(PROBE_TIMEOUT, ask)
            .await
            .ok()
            .flatten()
            .is_some();
        self.set(up);
        up
    }
}
