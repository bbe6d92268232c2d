//! The order writer: write-behind batching of checkouts into PostgreSQL.
//!
//! Taken orders queue here. A batch is written when it holds `batch_max` orders or when
//! the first of them has waited `batch_linger`, whichever comes first, in ONE transaction
//! (see [`crate::db::orders::insert_batch`]); up to `batches_in_flight` batches commit at
//! once. Each buyer is answered only after their batch commits. A batch that fails gives
//! its stock back to the product actors and answers 503 `unavailable`; a batch whose
//! COMMIT was lost on the wire is reconciled against the database before anyone is
//! answered, so a 201 is never sent for an order that is not there, nor stock given back
//! for one that is.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::Instrument;

use super::product::{CheckoutReply, GiveBack, ProductActor};
use super::{Checkout, Failure};
use crate::config::Settings;
use crate::db::health::DbHealth;
use crate::db::orders::{existing_ids, insert_batch, BatchError};
use crate::db::Pool;
use crate::domain::order::NewOrder;
use crate::metrics::{WRITER_BATCHES, WRITER_BATCH_SIZE_HIST, WRITER_COMMIT, WRITER_ORDERS};
use crate::telemetry::SPAN_WRITER_BATCH;

/// How long to keep asking whether a batch with a lost COMMIT is in the database.
const RECONCILE_FOR: Duration = Duration::from_secs(30);

/// An order taken by a product actor, to be made durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Write {
    pub order: NewOrder,
    /// Where the stock goes back if the order does not become durable.
    pub product: Addr<ProductActor>,
    pub reply: CheckoutReply,
    /// The product actor's checkout span; the batch span links to it.
    pub span: tracing::Span,
}

impl Write {
    /// Returns the order's stock to its product.
    fn give_back(&self) {
        // do_send: a give-back must never be dropped for a full mailbox; it is bounded by
        // the orders in flight, which the writer's own queue bounds.
        self.product.do_send(GiveBack {
            order_id: self.order.order.id.clone(),
            customer_id: self.order.order.customer_id.clone(),
            quantity: i64::from(self.order.order.quantity),
            idempotency_key: self.order.idempotency_key.clone(),
        });
    }

    /// The order will not be written: stock back to its product, `failure` to the buyer.
    fn abandon(self, failure: Failure) {
        self.give_back();
        let _ = self.reply.send(Err(failure));
    }
}

pub struct OrderWriter {
    pool: Pool,
    /// Tripped when a batch cannot reach the database.
    health: Arc<DbHealth>,
    batch_max: usize,
    batch_linger: Duration,
    max_in_flight: usize,
    /// Orders waiting for a batch, at most `queue_limit`.
    queue: Vec<Write>,
    queue_limit: usize,
    in_flight: usize,
    /// The linger timer of the oldest queued order, if one is set.
    timer: Option<SpawnHandle>,
    mailbox_capacity: usize,
}

impl OrderWriter {
    pub fn new(pool: Pool, health: Arc<DbHealth>, settings: &Settings) -> Self {
        OrderWriter {
            pool,
            health,
            batch_max: settings.batch_max.max(1),
            batch_linger: settings.batch_linger(),
            max_in_flight: settings.batches_in_flight.max(1),
            queue: Vec::new(),
            queue_limit: settings.mailbox_capacity.max(1),
            in_flight: 0,
            timer: None,
            mailbox_capacity: settings.mailbox_capacity,
        }
    }

    /// Starts as many batches as the in-flight limit allows.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        while !self.queue.is_empty() && self.in_flight < self.max_in_flight {
            let n = self.queue.len().min(self.batch_max);
            let batch: Vec<Write> = self.queue.drain(..n).collect();
            self.in_flight += 1;
            let pool = self.pool.clone();
            // One span per batch, linked to every checkout it carries (each checkout's
            // own trace shows where its order went).
            let span =
                tracing::debug_span!(parent: None, SPAN_WRITER_BATCH, batch.size = batch.len());
            for w in &batch {
                span.follows_from(&w.span);
            }
            let write = async move {
                let outcome = write_batch(&pool, &batch).await;
                (batch, outcome)
            }
            .instrument(span);
            ctx.spawn(write.into_actor(self).map(|(batch, outcome), act, ctx| {
                act.in_flight -= 1;
                if !matches!(outcome, Outcome::Committed(_)) {
                    act.health.set(false);
                }
                answer_batch(batch, outcome);
                act.flush(ctx);
            }));
        }
        // Full in-flight: what is queued goes when a batch finishes.
    }
}

/// What became of a batch.
enum Outcome {
    /// Committed; the ids inserted (the rest were duplicate keys).
    Committed(HashSet<String>),
    /// Not committed.
    RolledBack,
    /// COMMIT lost and the database unreachable since: nobody knows.
    Unknown,
}

async fn write_batch(pool: &Pool, batch: &[Write]) -> Outcome {
    let orders: Vec<&NewOrder> = batch.iter().map(|w| &w.order).collect();
    let started = Instant::now();
    let client = match pool.get().await {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(batch.size = batch.len(), error = %e, "order batch failed: no connection");
            return Outcome::RolledBack;
        }
    };
    let result = insert_batch(&client, &orders).await;
    drop(client);
    WRITER_COMMIT.observe(started.elapsed().as_secs_f64());
    match result {
        Ok(ids) => Outcome::Committed(ids),
        Err(BatchError::RolledBack(e)) => {
            if crate::db::violated_constraint(&e) == Some("products_stock_available_range") {
                crate::metrics::OVERSELL_GUARD.inc();
                tracing::error!(
                    batch.size = batch.len(),
                    "the database refused an oversell; batch rolled back"
                );
            }
            tracing::warn!(batch.size = batch.len(), error = %e, "order batch rolled back");
            Outcome::RolledBack
        }
        Err(BatchError::Unknown(e)) => {
            tracing::warn!(batch.size = batch.len(), error = %e, "order batch COMMIT lost; reconciling");
            reconcile(pool, &orders).await
        }
    }
}

/// Asks the database which orders of a batch with a lost COMMIT are there.
async fn reconcile(pool: &Pool, orders: &[&NewOrder]) -> Outcome {
    let ids: Vec<&str> = orders.iter().map(|o| o.order.id.as_str()).collect();
    let deadline = Instant::now() + RECONCILE_FOR;
    let mut pause = Duration::from_millis(100);
    while Instant::now() < deadline {
        if let Ok(client) = pool.get().await {
            if let Ok(found) = existing_ids(&**client, &ids).await {
                // A transaction commits whole: all of the batch is there, or none.
                return if found.is_empty() {
                    Outcome::RolledBack
                } else {
                    Outcome::Committed(found)
                };
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
    Outcome::Unknown
}

fn answer_batch(batch: Vec<Write>, outcome: Outcome) {
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
                    w.give_back();
                    let _ = w.reply.send(Ok(Checkout::Duplicate));
                }
            }
            WRITER_ORDERS
                .with_label_values(&["committed"])
                .inc_by(committed);
        }
        Outcome::RolledBack => {
            WRITER_BATCHES.with_label_values(&["rolled_back"]).inc();
            WRITER_ORDERS
                .with_label_values(&["failed"])
                .inc_by(size as u64);
            for w in batch {
                w.abandon(Failure::Unavailable);
            }
        }
        Outcome::Unknown => {
            // The stock stays taken: giving back what may have been sold could oversell.
            // The product actors are rebuilt from the database on the next start.
            WRITER_BATCHES.with_label_values(&["unknown"]).inc();
            WRITER_ORDERS
                .with_label_values(&["unknown"])
                .inc_by(size as u64);
            for w in batch {
                let _ = w.reply.send(Err(Failure::Unavailable));
            }
        }
    }
}

impl Actor for OrderWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
    }
}

impl Handler<Write> for OrderWriter {
    type Result = ();

    fn handle(&mut self, write: Write, ctx: &mut Self::Context) {
        crate::metrics::mailbox_depth("writer").dec();
        if self.queue.len() >= self.queue_limit {
            return write.abandon(Failure::Overloaded);
        }
        self.queue.push(write);
        if self.queue.len() >= self.batch_max {
            self.flush(ctx);
        } else if self.timer.is_none() {
            self.timer = Some(ctx.run_later(self.batch_linger, |act, ctx| {
                act.timer = None;
                act.flush(ctx);
            }));
        }
    }
}
