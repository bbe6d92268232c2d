//! The actor's life against PostgreSQL: loading its state when it starts (the mailbox
//! waits), reloading with backoff after a failure or a write whose outcome is unknown,
//! stock gauges for the loaded product, and stopping when its shard's lease goes.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;

use super::holds::Holds;
use super::keys::Keys;
use super::{missing_key, Loaded, ProductActor, Published, State};
use crate::db;
use crate::db::orders::HeldOrder;
use crate::domain::ledger::Ledger;

/// How long the actor of an id that names no product lingers, answering 404 to the
/// messages that reached it while it looked; from then on its store answers 404 from
/// its bounded negative cache ([`Shared::missing`]) without an actor. (The store looks
/// an id up before it starts an actor, so this is only a product deleted in between.)
///
/// [`Shared::missing`]: crate::actors::Shared::missing
const MISSING_LINGER: Duration = Duration::from_secs(1);
/// Backoff of a reload that failed (first and longest pause).
const RELOAD_PAUSE_MIN: Duration = Duration::from_millis(200);
const RELOAD_PAUSE_MAX: Duration = Duration::from_secs(5);

async fn load_product(
    pool: db::Pool,
    published: Arc<Published>,
    store_id: String,
    product_id: String,
    key_horizon: Duration,
    fence: crate::db::cluster::Fence,
) -> anyhow::Result<Option<(Loaded, Vec<HeldOrder>)>> {
    let client = pool.get().await?;
    let Some(product) = db::products::find_product(&**client, &store_id, &product_id).await? else {
        return Ok(None);
    };
    let held = db::products::held_by_customer(&**client, &product_id).await?;
    let stored = db::products::idempotency_keys(&**client, &product_id).await?;
    let keys = Keys::from_db(stored.iter().map(String::as_str), key_horizon);
    let reserved = db::orders::reserved_orders(&**client, &product_id).await?;
    let held = held
        .iter()
        .map(|(customer, units)| (customer.as_str(), *units));
    let ledger = Ledger::from_db(product.stock_total, product.stock_available, held);
    let mut loaded = Loaded {
        fence,
        product,
        ledger,
        keys,
        gate_closed: false,
        holds: Holds::default(),
        queue: None,
        stock_gauges: None,
        published,
    };
    // Whatever an earlier activation published is replaced by what the database says
    // now (under this lease): the gate from open, the page rendered again.
    loaded.published.gate().set(None);
    loaded.publish_gate();
    loaded.published.set_fence(fence);
    loaded.published.set_snapshot(None);
    loaded.snapshot(Utc::now());
    Ok(Some((loaded, reserved)))
}

impl ProductActor {
    /// Loads the state from PostgreSQL; the mailbox waits, never longer than the work
    /// budget. A failed first load stops the actor (its queued messages are answered
    /// 503 by their dropped channels); a failed reload tries again with backoff, so a
    /// product with payment holds never stops watching them.
    pub(super) fn load(&mut self, ctx: &mut Context<Self>) {
        let Some(fence) = self.fence else {
            return ctx.stop();
        };
        let load = load_product(
            self.shared.pool.clone(),
            self.published.clone(),
            self.store_id.clone(),
            self.product_id.clone(),
            // Every write the actor starts is over by then (answered by its deadline,
            // or resolved within the work budget after it).
            crate::actors::mailbox::request_deadline() + 2 * self.shared.work_budget,
            fence,
        );
        let budget = self.shared.work_budget;
        let load = async move {
            tokio::time::timeout(budget, load)
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("loading took longer than {budget:?}")))
        };
        // `wait`: no message is handled until the state is known.
        ctx.wait(load.into_actor(self).map(|loaded, act, ctx| match loaded {
            Ok(Some((mut loaded, reserved))) => {
                act.reload_pause = None;
                act.export_stock(&mut loaded);
                act.state = State::Ready(Box::new(loaded));
                // Holds that lapsed while nobody watched are released at once.
                for hold in reserved {
                    act.arm_hold(hold, ctx);
                }
            }
            Ok(None) => {
                act.state = State::Missing;
                act.shared
                    .missing
                    .insert(missing_key(&act.store_id, &act.product_id), ());
                ctx.run_later(MISSING_LINGER, |_, ctx| ctx.stop());
            }
            Err(e) => {
                tracing::warn!(product.id = %act.product_id, error = %e, "failed to load product");
                match act.reload_pause {
                    Some(pause) => {
                        act.reload_pause = Some((pause * 2).min(RELOAD_PAUSE_MAX));
                        ctx.run_later(pause, |act, ctx| act.load(ctx));
                    }
                    None => ctx.stop(),
                }
            }
        }));
    }

    /// Gives the product stock gauges if it has none and the series are not all taken
    /// (they stay with its catalog entry, which releases them).
    pub(super) fn export_stock(&self, loaded: &mut Loaded) {
        if loaded.published.export_stock(&self.shared) {
            let id = [self.product_id.as_str()];
            loaded.stock_gauges = Some((
                crate::metrics::STOCK_AVAILABLE.with_label_values(&id),
                crate::metrics::STOCK_TOTAL.with_label_values(&id),
            ));
            loaded.publish_stock();
        }
    }

    /// Stops the actor at once when its shard's lease is lost or given up (whatever is
    /// in flight under the old epoch is refused by the fence in the database).
    pub(super) fn watch_lease(
        &mut self,
        fence: crate::db::cluster::Fence,
        ctx: &mut Context<Self>,
    ) {
        let cluster = self.shared.cluster.clone();
        let mut losses = cluster.watch();
        let lost = async move {
            while losses.changed().await.is_ok() {
                if !cluster.holds(fence) {
                    return;
                }
            }
        };
        ctx.spawn(lost.into_actor(self).map(|_, act, ctx| {
            tracing::info!(product.id = %act.product_id, "shard lease gone; the product actor stops");
            // Whatever it published (even while still loading) may be stale now.
            act.published.clear();
            ctx.stop();
        }));
    }

    /// Forgets the loaded state and, unless the actor compacted, everything published
    /// from it (its catalog entry, now empty, is dropped by the store's next sweep).
    /// Only an actor that loaded its product published anything.
    pub(super) fn unload(&mut self) {
        if matches!(self.state, State::Ready(_)) && !self.compacted {
            self.published.clear();
        }
    }

    /// After a write whose outcome could not be learnt, the actor's memory may disagree
    /// with the database: once the statement can no longer be running (the work budget
    /// is past its `statement_timeout`), the actor reloads the truth in place (holds
    /// are armed again from the database).
    pub(super) fn reload_later(&mut self, ctx: &mut Context<Self>) {
        tracing::warn!(product.id = %self.product_id, "a write's outcome is unknown; the product reloads from the database");
        ctx.run_later(self.shared.work_budget, |act, ctx| {
            act.unload();
            act.state = State::Loading;
            act.reload_pause = Some(RELOAD_PAUSE_MIN);
            act.load(ctx);
        });
    }
}
