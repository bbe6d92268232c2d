//! What became of a batch, and every buyer's answer from it: committed, rolled back,
//! or (a COMMIT lost on the wire) reconciled against the database first.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::{give_back, Write};
use crate::actors::{Checkout, Failure};
use crate::db::batch::{
    end_backend, existing_ids, insert_batch, Backend, BatchError, BatchProgress,
};
use crate::db::Pool;
use crate::domain::order::NewOrder;
use crate::metrics::{
    OUTCOME_UNKNOWN, WRITER_BATCHES, WRITER_BATCH_SIZE_HIST, WRITER_COMMIT, WRITER_ORDERS,
};

/// Kept between giving up on learning a batch's outcome and the answer deadline, so
/// that the `outcome_unknown` answer arrives before the caller stops waiting.
pub(super) const ANSWER_MARGIN: Duration = Duration::from_millis(100);

/// What became of a batch.
pub(super) enum Outcome {
    /// Committed; the ids inserted (the rest were duplicate keys).
    Committed(HashSet<String>),
    /// Not committed. `reachable`: PostgreSQL answered (it refused a statement, say on a
    /// lock timeout), as opposed to a connection that failed.
    RolledBack { reachable: bool },
    /// COMMIT sent, and what it did could not be learnt in time: the batch's backend,
    /// if known, to end before asking again.
    Unknown(Option<Backend>),
}

pub(super) async fn write_batch(
    pool: &Pool,
    batch: &[Write],
    budget: Duration,
    give_up: Option<Instant>,
) -> Outcome {
    let orders: Vec<&NewOrder> = batch.iter().map(|w| &w.order).collect();
    let fences: Vec<_> = batch.iter().map(|w| w.fence).collect();
    let started = Instant::now();
    let client = match pool.get().await {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(batch.size = batch.len(), error = %e, "order batch failed: no connection");
            return Outcome::RolledBack { reachable: false };
        }
    };
    let progress = BatchProgress::default();
    let result =
        tokio::time::timeout(budget, insert_batch(&client, &orders, &fences, &progress)).await;
    WRITER_COMMIT.observe(started.elapsed().as_secs_f64());
    let result = match result {
        Ok(result) => {
            drop(client);
            result
        }
        Err(_) => {
            // No answer within the budget. The connection may be mid-transaction: it
            // must not go back to the pool, and closing it aborts whatever did not
            // reach COMMIT.
            drop(deadpool_postgres::Object::take(client));
            tracing::warn!(
                batch.size = batch.len(),
                "order batch took longer than its budget"
            );
            if !progress.commit_sent.get() {
                return Outcome::RolledBack { reachable: false };
            }
            return reconcile(pool, progress.backend.get(), &orders, give_up).await;
        }
    };
    match result {
        Ok(ids) => Outcome::Committed(ids),
        Err(BatchError::RolledBack(e)) => {
            if crate::db::cluster::is_fenced(&e) {
                crate::metrics::CLUSTER_FENCED
                    .with_label_values(&["checkout"])
                    .inc();
            }
            if crate::db::violated_constraint(&e) == Some("products_stock_available_range") {
                crate::metrics::OVERSELL_GUARD.inc();
                tracing::error!(
                    batch.size = batch.len(),
                    "the database refused an oversell; batch rolled back"
                );
            }
            tracing::warn!(
                batch.size = batch.len(),
                error = %crate::db::error_text(&e),
                "order batch rolled back"
            );
            Outcome::RolledBack {
                reachable: e.as_db_error().is_some(),
            }
        }
        Err(BatchError::Unknown(e)) => {
            tracing::warn!(batch.size = batch.len(), error = %e, "order batch COMMIT lost; reconciling");
            reconcile(pool, progress.backend.get(), &orders, give_up).await
        }
    }
}

/// Asks the database which orders of a batch with a lost COMMIT are there, once the
/// batch's backend is gone (while it runs it could still commit); until `give_up`, or
/// for as long as it takes without one.
async fn reconcile(
    pool: &Pool,
    backend: Option<Backend>,
    orders: &[&NewOrder],
    give_up: Option<Instant>,
) -> Outcome {
    let ids: Vec<&str> = orders.iter().map(|o| o.order.id.as_str()).collect();
    let mut pause = Duration::from_millis(50);
    let ask = async {
        loop {
            if let Ok(client) = pool.get().await {
                let found = async {
                    if let Some(backend) = backend {
                        end_backend(&**client, backend).await?;
                    }
                    existing_ids(&**client, &ids).await
                };
                if let Ok(found) = found.await {
                    // A transaction commits whole: all of the batch is there, or none.
                    return if found.is_empty() {
                        Outcome::RolledBack { reachable: true }
                    } else {
                        Outcome::Committed(found)
                    };
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    };
    match give_up {
        Some(at) => tokio::time::timeout_at(at.into(), ask)
            .await
            .unwrap_or(Outcome::Unknown(backend)),
        None => ask.await,
    }
}

/// Answers every buyer of a batch. A batch whose outcome is unknown is answered
/// `outcome_unknown`; the future returned resolves it against the database and then
/// gives back the stock of every order that is not there.
pub(super) fn answer_batch(
    batch: Vec<Write>,
    outcome: Outcome,
    pool: Pool,
) -> Option<impl std::future::Future<Output = ()>> {
    let size = batch.len();
    WRITER_BATCH_SIZE_HIST.observe(size as f64);
    match outcome {
        Outcome::Committed(ids) => {
            WRITER_BATCHES.with_label_values(&["committed"]).inc();
            let mut committed = 0;
            for w in batch {
                if ids.contains(&w.order.order.id) {
                    committed += 1;
                    let _ = w.reply.send(Ok(Checkout::Created(w.order.order)));
                } else {
                    WRITER_ORDERS.with_label_values(&["duplicate"]).inc();
                    give_back(&w.product, &w.order);
                    let _ = w.reply.send(Ok(Checkout::Duplicate));
                }
            }
            WRITER_ORDERS
                .with_label_values(&["committed"])
                .inc_by(committed);
            None
        }
        Outcome::RolledBack { .. } => {
            WRITER_BATCHES.with_label_values(&["rolled_back"]).inc();
            WRITER_ORDERS
                .with_label_values(&["failed"])
                .inc_by(size as u64);
            for w in batch {
                w.abandon(Failure::Unavailable);
            }
            None
        }
        Outcome::Unknown(backend) => {
            // The stock stays taken until the database says what happened: giving back
            // what may have been sold could oversell.
            WRITER_BATCHES.with_label_values(&["unknown"]).inc();
            WRITER_ORDERS
                .with_label_values(&["unknown"])
                .inc_by(size as u64);
            OUTCOME_UNKNOWN
                .with_label_values(&["checkout"])
                .inc_by(size as u64);
            let mut pending = Vec::with_capacity(size);
            for w in batch {
                let _ = w.reply.send(Err(Failure::OutcomeUnknown));
                pending.push((w.product, w.order));
            }
            Some(async move {
                let orders: Vec<&NewOrder> = pending.iter().map(|(_, o)| o).collect();
                let found = match reconcile(&pool, backend, &orders, None).await {
                    Outcome::Committed(ids) => ids,
                    _ => HashSet::new(),
                };
                tracing::info!(
                    batch.size = size,
                    orders.found = found.len(),
                    "a batch with a lost COMMIT is resolved"
                );
                for (product, order) in &pending {
                    if !found.contains(&order.order.id) {
                        give_back(product, order);
                    }
                }
            })
        }
    }
}
