//! Admin writes on a product: restock and PATCH go to the database first, then into
//! the actor's memory. Each is one statement in a transaction fenced on the product's
//! shard epoch (with the notification that tells the other instances' caches, sent
//! only at commit, see [`crate::cluster::notify`]), under the request's deadline ([`db::write_fenced`]): the mailbox waits for it, but never longer than the deadline, and
//! a write whose answer was lost is answered `outcome_unknown` and makes the actor
//! reload from the database.

use actix::prelude::*;
use chrono::Utc;

use super::{PatchFailure, PatchReply, ProductActor, SnapshotReply, State};
use crate::actors::mailbox::Deadline;
use crate::actors::Failure;
use crate::cluster::notify::{announce, Change, What};
use crate::db::products::Restocked;
use crate::db::{self, WriteError};
use crate::metrics::OUTCOME_UNKNOWN;

impl ProductActor {
    /// Adds stock in the database, then in memory; the mailbox waits for it.
    pub(super) fn restock(
        &mut self,
        quantity: i64,
        key: Option<String>,
        reply: SnapshotReply,
        deadline: Deadline,
        ctx: &mut Context<Self>,
    ) {
        let pool = self.shared.pool.clone();
        let (store_id, product_id) = (self.store_id.clone(), self.product_id.clone());
        let Some(fence) = self.fence else {
            return drop(reply.send(Err(Failure::Unavailable)));
        };
        let changed = self.catalog_change();
        let update = async move {
            db::write_fenced(&pool, deadline, fence, |tx| {
                Box::pin(async move {
                    let (restocked, announced) = futures_util::join!(
                        db::products::restock(tx, &store_id, &product_id, quantity, key.as_deref()),
                        announce(tx, &changed)
                    );
                    // The write's own error first (a refused write aborts the
                    // transaction, and so the notification after it).
                    let restocked = restocked?;
                    announced?;
                    Ok(restocked)
                })
            })
            .await
        };
        ctx.wait(update.into_actor(self).map(move |updated, act, ctx| {
            let State::Ready(loaded) = &mut act.state else {
                return drop(reply.send(Err(Failure::NotFound)));
            };
            match updated {
                Ok(Restocked::Applied(row)) => {
                    loaded.ledger.restock(quantity);
                    loaded.touch(row.updated_at);
                    let _ = reply.send(Ok(loaded.snapshot(Utc::now())));
                }
                // Applied by an earlier request with this key: this actor's ledger has it
                // (or gets it from the database on the reload an unknown outcome starts).
                Ok(Restocked::AlreadyApplied(_)) => {
                    let _ = reply.send(Ok(loaded.snapshot(Utc::now())));
                }
                Ok(Restocked::KeyReused) => drop(reply.send(Err(Failure::KeyReused))),
                Ok(Restocked::NotFound) => drop(reply.send(Err(Failure::NotFound))),
                Err(WriteError::NotMade(_)) => drop(reply.send(Err(Failure::Unavailable))),
                Err(WriteError::Unknown) => {
                    OUTCOME_UNKNOWN.with_label_values(&["restock"]).inc();
                    let _ = reply.send(Err(Failure::OutcomeUnknown));
                    act.reload_later(ctx);
                }
            }
        }));
    }
}

impl ProductActor {
    /// Writes a PATCH, then takes the stored product (stock stays the ledger's); the
    /// mailbox waits, so no reply after this one carries the old values.
    pub(super) fn patch(
        &mut self,
        patch: db::products::ProductPatch,
        reply: PatchReply,
        deadline: Deadline,
        ctx: &mut Context<Self>,
    ) {
        let pool = self.shared.pool.clone();
        let (store_id, product_id) = (self.store_id.clone(), self.product_id.clone());
        let Some(fence) = self.fence else {
            return drop(reply.send(Err(PatchFailure::Failure(Failure::Unavailable))));
        };
        let changed = self.catalog_change();
        let update = async move {
            db::write_fenced(&pool, deadline, fence, |tx| {
                Box::pin(async move {
                    let (updated, announced) = futures_util::join!(
                        db::products::update_product(tx, &store_id, &product_id, &patch),
                        announce(tx, &changed)
                    );
                    let updated = updated?;
                    announced?;
                    Ok(updated)
                })
            })
            .await
        };
        ctx.wait(update.into_actor(self).map(move |updated, act, ctx| {
            let State::Ready(loaded) = &mut act.state else {
                return drop(reply.send(Err(PatchFailure::Failure(Failure::NotFound))));
            };
            let answer = match updated {
                Ok(Some(row)) => {
                    loaded.replace_product(row);
                    Ok(loaded.snapshot(Utc::now()))
                }
                Ok(None) => Err(PatchFailure::Failure(Failure::NotFound)),
                Err(WriteError::NotMade(Some(e))) if db::violated_constraint(&e).is_some() => {
                    let name = db::violated_constraint(&e).unwrap_or_default();
                    Err(PatchFailure::Invalid(name.to_owned()))
                }
                Err(WriteError::NotMade(_)) => Err(PatchFailure::Failure(Failure::Unavailable)),
                Err(WriteError::Unknown) => {
                    OUTCOME_UNKNOWN.with_label_values(&["patch"]).inc();
                    act.reload_later(ctx);
                    Err(PatchFailure::Failure(Failure::OutcomeUnknown))
                }
            };
            let _ = reply.send(answer);
        }));
    }
}

impl ProductActor {
    /// The notification a catalog write of this product queues in its transaction, so
    /// that the other instances drop the store's listings once it commits.
    fn catalog_change(&self) -> Change {
        Change {
            from: self.shared.cluster.id.clone(),
            store: self.store_id.clone(),
            product: self.product_id.clone(),
            what: What::Changed,
        }
    }
}
