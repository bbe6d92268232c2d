//! Admin writes on a product: restock and PATCH go to the database first, then into
//! the actor's memory.

use actix::prelude::*;
use chrono::Utc;

use super::{PatchFailure, PatchReply, ProductActor, SnapshotReply, State};
use crate::actors::Failure;
use crate::db;

impl ProductActor {
    /// Adds stock in the database, then in memory; the mailbox waits for it.
    pub(super) fn restock(&mut self, quantity: i64, reply: SnapshotReply, ctx: &mut Context<Self>) {
        let pool = self.shared.pool.clone();
        let (store_id, product_id) = (self.store_id.clone(), self.product_id.clone());
        let update = async move {
            let client = pool.get().await?;
            Ok::<_, anyhow::Error>(
                db::products::restock(&**client, &store_id, &product_id, quantity).await?,
            )
        };
        ctx.wait(update.into_actor(self).map(move |updated, act, _| {
            let State::Ready(loaded) = &mut act.state else {
                return drop(reply.send(Err(Failure::NotFound)));
            };
            match updated {
                Ok(Some(row)) => {
                    loaded.ledger.restock(quantity);
                    loaded.touch(row.updated_at);
                    let _ = reply.send(Ok(loaded.snapshot(Utc::now())));
                }
                Ok(None) => drop(reply.send(Err(Failure::NotFound))),
                Err(e) => {
                    tracing::warn!(product.id = %act.product_id, error = %e, "restock failed");
                    let _ = reply.send(Err(Failure::Unavailable));
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
        ctx: &mut Context<Self>,
    ) {
        let pool = self.shared.pool.clone();
        let (store_id, product_id) = (self.store_id.clone(), self.product_id.clone());
        let update = async move {
            let client = pool.get().await.map_err(|e| {
                tracing::warn!(error = %e, "no database connection");
                PatchFailure::Failure(Failure::Unavailable)
            })?;
            db::products::update_product(&**client, &store_id, &product_id, &patch)
                .await
                .map_err(|e| match db::violated_constraint(&e) {
                    Some(name) => PatchFailure::Invalid(name.to_owned()),
                    None => {
                        tracing::warn!(error = %e, "product update failed");
                        PatchFailure::Failure(Failure::Unavailable)
                    }
                })
        };
        ctx.wait(update.into_actor(self).map(move |updated, act, _| {
            let State::Ready(loaded) = &mut act.state else {
                return drop(reply.send(Err(PatchFailure::Failure(Failure::NotFound))));
            };
            let answer = match updated {
                Ok(Some(row)) => {
                    loaded.replace_product(row);
                    Ok(loaded.snapshot(Utc::now()))
                }
                Ok(None) => Err(PatchFailure::Failure(Failure::NotFound)),
                Err(e) => Err(e),
            };
            let _ = reply.send(answer);
        }));
    }
}
