//! Passivation (as Orleans does it): a product actor that has been idle for
//! `FLASHSALE_PRODUCT_IDLE_SECS` stops and gives back its memory; the next message for
//! the product starts it again from PostgreSQL, which holds everything it knew.
//!
//! Compaction comes first: idle for `FLASHSALE_PRODUCT_COMPACT_SECS` (shorter), the
//! actor stops but leaves its published page and sold-out gate (a few hundred bytes
//! instead of about 4 KiB with its actor): reads go on from memory, and only a write or
//! a checkout starts the actor again from PostgreSQL. An actix actor alone (its task,
//! context and mailbox) costs about as much as the whole 1 KiB budget of an idle
//! product, so an idle product keeps no actor.
//!
//! Idle means: no message, and no read of its published snapshot (reads of a hot page
//! never reach the mailbox, so they mark [`Activity`] instead), no payment hold to
//! watch and nobody in its waiting room. The idle time is at least twice the work
//! budget, so any write the actor started (every one has that deadline) is over, and
//! the database has the truth the next activation loads.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{ProductActor, State};

/// The most keys (orders) or customers of a product that compacts: one with more stays
/// active until the idle time, then passivates (see `costly_to_reload`).
const COMPACT_AT_MOST: usize = 10_000;

/// The process's clock origin for [`Activity`].
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_secs() -> u32 {
    EPOCH.elapsed().as_secs() as u32
}

/// When the product was last used, in whole seconds since the process started: shared
/// by the actor and every snapshot it publishes.
#[derive(Debug)]
pub struct Activity(AtomicU32);

impl Default for Activity {
    fn default() -> Self {
        Activity(AtomicU32::new(now_secs()))
    }
}

impl Activity {
    /// Marks a use now. A read of a hot page calls this on every request: the value is
    /// only written when the second changed, so the cache line stays shared.
    pub fn touch(&self) {
        let now = now_secs();
        if self.0.load(Ordering::Relaxed) != now {
            self.0.store(now, Ordering::Relaxed);
        }
    }

    pub(super) fn idle_for(&self) -> Duration {
        Duration::from_secs(u64::from(
            now_secs().saturating_sub(self.0.load(Ordering::Relaxed)),
        ))
    }
}

impl ProductActor {
    /// Checks now and then whether the actor may stop for idleness, and stops it if so:
    /// compacted (its page and gate stay published, see [`super::Published`]) once idle
    /// for the compaction time, passivated (nothing stays) once idle for the idle time.
    /// The store's sweep forgets a compacted product once it is idle that long too.
    pub(super) fn watch_idleness(&mut self, ctx: &mut Context<Self>) {
        let (idle, compact) = (self.shared.product_idle, self.shared.product_compact);
        let Some(first) = [idle, compact].into_iter().filter(|d| !d.is_zero()).min() else {
            return;
        };
        let every = (first / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
        ctx.run_interval(every, move |act, ctx| {
            if !act.may_stop(first) {
                return;
            }
            let forget = !idle.is_zero() && act.published.idle_for() >= idle;
            if !forget && act.costly_to_reload() {
                // Compaction would save little next to what the product holds, and
                // its next checkout would wait for all of it to load: a drop that
                // pauses longer than the compaction time would start again on a stall
                // (a quarter of a second for 300,000 orders). It passivates instead.
                return;
            }
            if forget || compact.is_zero() {
                crate::metrics::PRODUCT_PASSIVATIONS.inc();
            } else {
                crate::metrics::PRODUCT_COMPACTIONS.inc();
                act.compact();
            }
            ctx.stop();
        });
    }

    /// Leaves a current page behind for the readers (rendered now if a change made it
    /// stale), and the gate as it is.
    fn compact(&mut self) {
        // Only under the lease it was loaded with (else its stop clears it all).
        let held = self.fence.is_some_and(|f| self.shared.cluster.holds(f));
        if let (State::Ready(loaded), true) = (&mut self.state, held) {
            loaded.snapshot(chrono::Utc::now());
            self.compacted = true;
        }
    }

    /// Whether loading the product again would read more than [`COMPACT_AT_MOST`] orders'
    /// keys or customers.
    fn costly_to_reload(&self) -> bool {
        let State::Ready(loaded) = &self.state else {
            return false;
        };
        loaded.keys.len().max(loaded.ledger.customers()) > COMPACT_AT_MOST
    }

    fn may_stop(&self, idle: Duration) -> bool {
        let State::Ready(loaded) = &self.state else {
            return false;
        };
        self.published.idle_for() >= idle
            && loaded.holds.is_empty()
            && loaded.queue.as_ref().is_none_or(|q| q.is_empty())
    }
}
