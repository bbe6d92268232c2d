//! Payment holds of a product actor: reserved orders that must be confirmed before they
//! expire, and what confirm, cancel and expiry do.
//!
//! Exactly one of confirm and expiry wins, decided in the product's mailbox: whichever
//! first takes the hold out of [`Holds`] goes on to the database, and the other finds it
//! gone. The database agrees because every transition is a conditional update
//! (`WHERE status = 'reserved'`), written with its stock, audit row and outbox event in
//! one statement ([`crate::db::orders::transition_orders`]). Stock comes back to the
//! ledger only after the database has taken it back.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::{Lifecycle, LifecycleReply, Loaded, ProductActor, State};
use crate::actors::mailbox::Deadline;
use crate::actors::Failure;
use crate::db::orders::{order_statuses, transition_orders, ChangedBy, HeldOrder};
use crate::db::{self, WriteError};
use crate::domain::ledger::Refusal;
use crate::domain::order::Order;
use crate::metrics::OUTCOME_UNKNOWN;

/// How long to wait before writing lapsed holds again after the database failed, or
/// while a lapsed hold's order is still on its way to the database.
const EXPIRY_RETRY: Duration = Duration::from_secs(1);
/// How long past its expiry a lapsed hold's order is looked for in the database. Beyond
/// it the writer has given up on the order (a batch whose outcome stayed unknown); the
/// stock stays taken, as the writer left it, until the actor is rebuilt.
const EXPIRY_PATIENCE: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

struct Hold {
    customer_id: String,
    quantity: i64,
    expires_at: DateTime<Utc>,
    timer: SpawnHandle,
}

/// The live holds of one product.
#[derive(Default)]
pub(super) struct Holds {
    /// order id → hold, with its expiry timer armed.
    live: HashMap<String, Hold>,
    /// Lapsed holds to be written as expired (order id → when the hold lapsed); their
    /// stock is still taken.
    expiring: HashMap<String, DateTime<Utc>>,
    /// Whether an expiry write is under way (one at a time, carrying all lapsed holds).
    writing: bool,
}

impl Holds {
    /// No hold to watch, none lapsed, no expiry write under way.
    pub(super) fn is_empty(&self) -> bool {
        self.live.is_empty() && self.expiring.is_empty() && !self.writing
    }

    /// Tracks a reserved order and arms its expiry.
    pub(super) fn arm(&mut self, hold: HeldOrder, ctx: &mut Context<ProductActor>) {
        let delay = (hold.expires_at - Utc::now()).to_std().unwrap_or_default();
        let id = hold.id.clone();
        let timer = ctx.run_later(delay, move |act, ctx| act.lapse(id, ctx));
        let hold_entry = Hold {
            customer_id: hold.customer_id,
            quantity: hold.quantity,
            expires_at: hold.expires_at,
            timer,
        };
        self.live.insert(hold.id, hold_entry);
    }

    /// Takes a hold out (its timer disarmed); `None` if it is not live.
    fn take(&mut self, order_id: &str, ctx: &mut Context<ProductActor>) -> Option<HeldOrder> {
        let hold = self.live.remove(order_id)?;
        ctx.cancel_future(hold.timer);
        Some(HeldOrder {
            id: order_id.to_owned(),
            customer_id: hold.customer_id,
            quantity: hold.quantity,
            expires_at: hold.expires_at,
        })
    }

    /// The order never became durable: no hold to keep.
    pub(super) fn forget(&mut self, order_id: &str, ctx: &mut Context<ProductActor>) {
        self.take(order_id, ctx);
        self.expiring.remove(order_id);
    }
}

impl ProductActor {
    fn loaded(&mut self) -> Option<&mut Loaded> {
        match &mut self.state {
            State::Ready(loaded) => Some(loaded),
            _ => None,
        }
    }

    pub(super) fn arm_hold(&mut self, hold: HeldOrder, ctx: &mut Context<Self>) {
        if let Some(loaded) = self.loaded() {
            loaded.holds.arm(hold, ctx);
        }
    }

    /// A hold's time is up: it can no longer be confirmed; write it as expired.
    fn lapse(&mut self, order_id: String, ctx: &mut Context<Self>) {
        let Some(loaded) = self.loaded() else { return };
        if let Some(hold) = loaded.holds.live.remove(&order_id) {
            loaded.holds.expiring.insert(order_id, hold.expires_at);
            self.write_expiries(ctx);
        }
    }

    /// Writes every lapsed hold as expired in one statement, then gives their stock back.
    fn write_expiries(&mut self, ctx: &mut Context<Self>) {
        let pool = self.shared.pool.clone();
        // Loaded state always has its fence (see `ProductActor::started`).
        let Some(fence) = self.fence else { return };
        let Some(loaded) = self.loaded() else { return };
        if loaded.holds.writing || loaded.holds.expiring.is_empty() {
            return;
        }
        loaded.holds.writing = true;
        let ids: Vec<String> = loaded.holds.expiring.keys().cloned().collect();
        let budget = self.shared.work_budget;
        let write = async move {
            let mut client = pool.get().await?;
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            // Its own transaction, fenced: a former owner's timer expires nothing.
            let tx = client.transaction().await?;
            let inner: &tokio_postgres::Transaction<'_> = &tx;
            let (fences, by) = ([fence], ChangedBy::default());
            let (fenced, expired) = tokio::join!(
                db::cluster::fence(inner, &fences),
                transition_orders(inner, &refs, &["reserved"], "expired", None, &by)
            );
            fenced?;
            let expired = expired?;
            tx.commit().await?;
            // An order not expired is either settled already (confirmed, cancelled) or not
            // in the database yet: its batch is still on its way (the hold lapsed first).
            // The latter are tried again until the batch commits or gives them back. An
            // order found `reserved` now committed after the update above looked: it is
            // not settled, and is expired on the next round.
            let changed: HashSet<&str> = expired.iter().map(|o| o.id.as_str()).collect();
            let unsettled: Vec<&str> = refs
                .iter()
                .copied()
                .filter(|id| !changed.contains(id))
                .collect();
            let statuses = if unsettled.is_empty() {
                Default::default()
            } else {
                order_statuses(&**client, &unsettled).await?
            };
            let not_yet: Vec<String> = unsettled
                .into_iter()
                .filter(|id| statuses.get(*id).is_none_or(|s| s == "reserved"))
                .map(str::to_owned)
                .collect();
            Ok::<_, anyhow::Error>((ids, expired, not_yet))
        };
        let write = async move {
            tokio::time::timeout(budget, write)
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("expiry took longer than {budget:?}")))
        };
        ctx.spawn(write.into_actor(self).map(|written, act, ctx| {
            let product_id = act.product_id.clone();
            let Some(loaded) = act.loaded() else { return };
            loaded.holds.writing = false;
            match written {
                Ok((ids, expired, not_yet)) => {
                    let patience = Utc::now() - EXPIRY_PATIENCE;
                    let mut waiting = false;
                    for id in &ids {
                        // Gone meanwhile: its batch failed and gave the stock back.
                        let Some(lapsed_at) = loaded.holds.expiring.get(id).copied() else {
                            continue;
                        };
                        if not_yet.contains(id) {
                            if lapsed_at > patience {
                                waiting = true;
                                continue;
                            }
                            tracing::warn!(product.id = %product_id, order.id = %id, "a lapsed hold's order never reached the database; its stock stays taken until the product reloads");
                        }
                        loaded.holds.expiring.remove(id);
                    }
                    for order in &expired {
                        loaded.ledger.give_back(&order.customer_id, i64::from(order.quantity));
                    }
                    if !expired.is_empty() {
                        loaded.touch(Utc::now());
                        tracing::debug!(product.id = %product_id, orders.expired = expired.len(), "holds expired");
                    }
                    if waiting {
                        ctx.run_later(EXPIRY_RETRY, |act, ctx| act.write_expiries(ctx));
                    } else {
                        act.write_expiries(ctx);
                    }
                }
                Err(e) => {
                    tracing::warn!(product.id = %product_id, error = %e, "failed to expire holds; retrying");
                    ctx.run_later(EXPIRY_RETRY, |act, ctx| act.write_expiries(ctx));
                }
            }
        }));
    }

    /// reserved → confirmed, if the hold is still live; the mailbox waits for the write.
    pub(super) fn confirm(
        &mut self,
        order_id: String,
        payment_reference: String,
        by: ChangedBy,
        reply: LifecycleReply,
        deadline: Deadline,
        ctx: &mut Context<Self>,
    ) {
        let pool = self.shared.pool.clone();
        let Some(fence) = self.fence else {
            return drop(reply.send(Err(Failure::Unavailable)));
        };
        let Some(loaded) = self.loaded() else {
            return drop(reply.send(Err(Failure::Unavailable)));
        };
        if loaded.holds.expiring.contains_key(&order_id) {
            return drop(reply.send(Err(Failure::Refused(Refusal::HoldExpired))));
        }
        let Some(hold) = loaded.holds.take(&order_id, ctx) else {
            return drop(reply.send(Ok(Lifecycle::NotHeld)));
        };
        if Utc::now() >= hold.expires_at {
            // Its timer has not run yet, but its time is up: expiry wins.
            loaded.holds.expiring.insert(order_id, hold.expires_at);
            self.write_expiries(ctx);
            return drop(reply.send(Err(Failure::Refused(Refusal::HoldExpired))));
        }
        let write = async move {
            db::write_fenced(&pool, deadline, fence, |tx| {
                Box::pin(async move {
                    transition_orders(
                        tx,
                        &[&order_id],
                        &["reserved"],
                        "confirmed",
                        Some(&payment_reference),
                        &by,
                    )
                    .await
                })
            })
            .await
        };
        ctx.wait(write.into_actor(self).map(move |written, act, ctx| {
            let answer = match written {
                Ok(moved) => Ok(changed_or_not_held(moved)),
                Err(WriteError::NotMade(_)) => {
                    tracing::warn!(order.id = %hold.id, "confirm not made");
                    // Nothing changed: the hold is live again (and lapses on time).
                    act.arm_hold(hold, ctx);
                    Err(Failure::Unavailable)
                }
                Err(WriteError::Unknown) => {
                    // Repeating a confirm is harmless, so a retry learns the outcome.
                    OUTCOME_UNKNOWN.with_label_values(&["confirm"]).inc();
                    act.reload_later(ctx);
                    Err(Failure::OutcomeUnknown)
                }
            };
            let _ = reply.send(answer);
        }));
    }

    /// reserved or confirmed → cancelled, stock back once written.
    pub(super) fn cancel(
        &mut self,
        order_id: String,
        by: ChangedBy,
        reply: LifecycleReply,
        deadline: Deadline,
        ctx: &mut Context<Self>,
    ) {
        let pool = self.shared.pool.clone();
        let Some(fence) = self.fence else {
            return drop(reply.send(Err(Failure::Unavailable)));
        };
        let Some(loaded) = self.loaded() else {
            return drop(reply.send(Err(Failure::Unavailable)));
        };
        if loaded.holds.expiring.contains_key(&order_id) {
            return drop(reply.send(Err(Failure::Refused(Refusal::HoldExpired))));
        }
        let hold = loaded.holds.take(&order_id, ctx);
        // A live hold is reserved; anything else can only be cancelled if confirmed.
        let from = if hold.is_some() {
            "reserved"
        } else {
            "confirmed"
        };
        let write = async move {
            db::write_fenced(&pool, deadline, fence, |tx| {
                Box::pin(async move {
                    transition_orders(tx, &[&order_id], &[from], "cancelled", None, &by).await
                })
            })
            .await
        };
        ctx.wait(write.into_actor(self).map(move |written, act, ctx| {
            let answer = match written {
                Ok(moved) => {
                    if let Some(loaded) = act.loaded() {
                        for order in &moved {
                            loaded
                                .ledger
                                .give_back(&order.customer_id, i64::from(order.quantity));
                        }
                        if !moved.is_empty() {
                            loaded.touch(Utc::now());
                        }
                    }
                    Ok(changed_or_not_held(moved))
                }
                Err(WriteError::NotMade(_)) => {
                    if let Some(hold) = hold {
                        act.arm_hold(hold, ctx);
                    }
                    Err(Failure::Unavailable)
                }
                Err(WriteError::Unknown) => {
                    // Repeating a cancel is harmless, so a retry learns the outcome.
                    OUTCOME_UNKNOWN.with_label_values(&["cancel"]).inc();
                    act.reload_later(ctx);
                    Err(Failure::OutcomeUnknown)
                }
            };
            let _ = reply.send(answer);
        }));
    }
}

fn changed_or_not_held(moved: Vec<Order>) -> Lifecycle {
    moved
        .into_iter()
        .next()
        .map_or(Lifecycle::NotHeld, Lifecycle::Changed)
}
