//! Passivation (as Orleans does it): a product actor that has been idle for
//! `FLASHSALE_PRODUCT_IDLE_SECS` stops and gives back its memory; the next message for
//! the product starts it again from PostgreSQL, which holds everything it knew.
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

    fn idle_for(&self) -> Duration {
        Duration::from_secs(u64::from(
            now_secs().saturating_sub(self.0.load(Ordering::Relaxed)),
        ))
    }
}

impl ProductActor {
    /// Checks now and then whether the actor may passivate, and stops it if so.
    pub(super) fn watch_idleness(&mut self, ctx: &mut Context<Self>) {
        let idle = self.shared.product_idle;
        if idle.is_zero() {
            return;
        }
        let every = (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
        ctx.run_interval(every, move |act, ctx| {
            if act.may_passivate(idle) {
                crate::metrics::PRODUCT_PASSIVATIONS.inc();
                ctx.stop();
            }
        });
    }

    fn may_passivate(&self, idle: Duration) -> bool {
        let State::Ready(loaded) = &self.state else {
            return false;
        };
        self.activity.idle_for() >= idle && loaded.holds.is_empty() && loaded.queue.is_empty()
    }
}
