//! The order writer: write-behind batching of checkouts into PostgreSQL.
//!
//! Taken orders queue here. A batch is written when it holds `batch_max` orders or when
//! the first of them has waited `batch_linger`, whichever comes first, in ONE transaction
//! (see [`crate::db::batch::insert_batch`]). One batch commits at a time while that
//! keeps up: the next forms meanwhile and grows (on two cores, a hot product's
//! PostgreSQL CPU per order was about a quarter lower with one batch in flight than with
//! four, each a quarter of the size). Beside a batch in flight another starts only when
//! a quarter of `batch_max` orders wait or the oldest has waited [`LANE_WAIT`] (a slow
//! or stuck batch holds up the others that long at most), up to `batches_in_flight`
//! at once. Each buyer is answered only after their batch commits. A batch that fails gives
//! its stock back to the product actors and answers 503 `unavailable`; a batch whose
//! COMMIT was lost on the wire is reconciled against the database before anyone is
//! answered, so a 201 is never sent for an order that is not there, nor stock given back
//! for one that is. Reconciling first ends the batch's old backend
//! ([`crate::db::batch::end_backend`]): until it is gone it could still commit.
//!
//! Deadlines: a write whose caller has gone or whose time to start has passed is dropped
//! (stock back, 503 `unavailable`) when it arrives and again when its batch is formed, so
//! no batch carries an order nobody will be told about. A batch runs within the work
//! budget; one whose outcome cannot be learnt before its buyers' answers are due answers
//! 503 `outcome_unknown` and goes on being reconciled in the background: its orders are
//! then either found (a retry replays them) or given back (a retry buys afresh).

mod outcome;

use outcome::{answer_batch, write_batch, Outcome, ANSWER_MARGIN};

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::Instrument;

use super::mailbox::{Deadline, Letter, Mail};
use super::product::{CheckoutReply, GiveBack, ProductActor};
use super::Failure;
use crate::config::Settings;
use crate::db::health::DbHealth;
use crate::db::Pool;
use crate::domain::order::NewOrder;
use crate::metrics::DEADLINE_DROPS;
use crate::telemetry::SPAN_WRITER_BATCH;

/// How long orders wait for the batch in flight before another batch starts beside it
/// (unless a quarter of `batch_max` are waiting: see [`OrderWriter::lane_due`]). Longer
/// than a batch's commit on a healthy database, far shorter than any deadline.
const LANE_WAIT: Duration = Duration::from_millis(10);

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
    /// The buyer's deadline: not written once it has passed.
    pub deadline: Deadline,
    /// The product's shard at the epoch its actor was loaded under: the batch commits
    /// only if every shard it writes for is still held at that epoch.
    pub fence: crate::db::cluster::Fence,
    /// When the product actor sent it (how long it has queued, for [`OrderWriter::lane_due`]).
    pub sent: Instant,
}

/// Returns an order's stock to its product.
fn give_back(product: &Addr<ProductActor>, order: &NewOrder) {
    // do_send: a give-back must never be dropped for a full mailbox; it is bounded by
    // the orders in flight, which the writer's own queue bounds.
    product.do_send(GiveBack {
        order_id: order.order.id.clone(),
        customer_id: order.order.customer_id.clone(),
        quantity: i64::from(order.order.quantity),
        idempotency_key: order.idempotency_key.clone(),
    });
}

impl Write {
    /// The order will not be written: stock back to its product, `failure` to the buyer.
    fn abandon(self, failure: Failure) {
        give_back(&self.product, &self.order);
        let _ = self.reply.send(Err(failure));
    }

    /// Whether it is too late to write it (nobody waits, or its time has passed).
    fn stale(&self) -> Option<&'static str> {
        if self.reply.is_closed() {
            Some("caller_gone")
        } else if self.deadline.passed() {
            Some("deadline")
        } else {
            None
        }
    }
}

impl Letter for Write {
    fn caller_gone(&self) -> bool {
        self.reply.is_closed()
    }

    fn fail(self, failure: Failure) {
        self.abandon(failure)
    }
}

pub struct OrderWriter {
    pool: Pool,
    /// Tripped when a batch cannot reach the database.
    health: Arc<DbHealth>,
    batch_max: usize,
    batch_linger: Duration,
    /// `FLASHSALE_BATCHES_IN_FLIGHT`: the cluster's, shared out among the live
    /// instances ([`OrderWriter::in_flight_limit`]).
    max_in_flight: usize,
    cluster: Arc<crate::cluster::Cluster>,
    /// How long a batch may take, once started.
    work_budget: Duration,
    /// Orders waiting for a batch, at most `queue_limit`.
    queue: Vec<Write>,
    queue_limit: usize,
    in_flight: usize,
    /// The linger timer of the oldest queued order, if one is set.
    timer: Option<SpawnHandle>,
}

impl OrderWriter {
    pub fn new(
        pool: Pool,
        health: Arc<DbHealth>,
        settings: &Settings,
        cluster: Arc<crate::cluster::Cluster>,
    ) -> Self {
        OrderWriter {
            pool,
            health,
            batch_max: settings.batch_max.max(1),
            batch_linger: settings.batch_linger(),
            max_in_flight: settings.batches_in_flight.max(1),
            cluster,
            work_budget: settings.work_budget(),
            queue: Vec::new(),
            queue_limit: settings.mailbox_capacity.max(1),
            in_flight: 0,
            timer: None,
        }
    }

    /// Drops the queued writes nobody will be told about (stock back, counted).
    fn drop_stale(&mut self) {
        if !self.queue.iter().any(|w| w.stale().is_some()) {
            return;
        }
        let (stale, live): (Vec<Write>, Vec<Write>) =
            self.queue.drain(..).partition(|w| w.stale().is_some());
        self.queue = live;
        for w in stale {
            let reason = w.stale().unwrap_or("deadline");
            DEADLINE_DROPS.with_label_values(&["writer", reason]).inc();
            w.abandon(Failure::Unavailable);
        }
    }

    /// Orders that open another lane at once: a quarter of a full batch.
    fn lane_size(&self) -> usize {
        (self.batch_max / 4).max(1)
    }

    /// Whether a batch may start beside those in flight: the queue holds a quarter of a
    /// full batch, or its oldest order has waited [`LANE_WAIT`] (the time left, if not).
    fn lane_due(&self) -> Result<(), Duration> {
        if self.in_flight == 0 || self.queue.len() >= self.lane_size() {
            return Ok(());
        }
        let waited = self.queue.first().map_or(LANE_WAIT, |w| w.sent.elapsed());
        match LANE_WAIT.checked_sub(waited) {
            Some(left) if !left.is_zero() => Err(left),
            _ => Ok(()),
        }
    }

    /// How many batches this instance commits at once, at most: its share of the
    /// limit, which is the database's (at least one). Each instance of a cluster
    /// sees a share of the buyers; with the whole limit each, the database would run
    /// as many more transactions, each that much smaller, for the same orders.
    fn in_flight_limit(&self) -> usize {
        (self.max_in_flight / self.cluster.live_instances()).max(1)
    }

    /// Starts as many batches as the in-flight limit allows.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        self.drop_stale();
        let limit = self.in_flight_limit();
        while !self.queue.is_empty() && self.in_flight < limit {
            if let Err(left) = self.lane_due() {
                // The batch in flight takes them when it ends, unless it is slow.
                self.timer = Some(ctx.run_later(left, |act, ctx| {
                    act.timer = None;
                    act.flush(ctx);
                }));
                break;
            }
            let n = self.queue.len().min(self.batch_max);
            let batch: Vec<Write> = self.queue.drain(..n).collect();
            self.in_flight += 1;
            let pool = self.pool.clone();
            let budget = self.work_budget;
            // One span per batch, linked to every checkout it carries (each checkout's
            // own trace shows where its order went).
            let span =
                tracing::debug_span!(parent: None, SPAN_WRITER_BATCH, batch.size = batch.len());
            for w in &batch {
                span.follows_from(&w.span);
            }
            // The outcome must be known before the first of its buyers' answers is due.
            let give_up = batch
                .iter()
                .map(|w| w.deadline.answer_by)
                .min()
                .map(|t| t.checked_sub(ANSWER_MARGIN).unwrap_or(t));
            let write = async move {
                let outcome = write_batch(&pool, &batch, budget, give_up).await;
                (batch, outcome)
            }
            .instrument(span);
            ctx.spawn(write.into_actor(self).map(|(batch, outcome), act, ctx| {
                act.in_flight -= 1;
                match &outcome {
                    Outcome::Committed(_) => act.health.set(true),
                    Outcome::RolledBack { reachable: true } => {}
                    // A real database failure: the breaker opens.
                    Outcome::RolledBack { reachable: false } | Outcome::Unknown(_) => {
                        act.health.set(false)
                    }
                }
                if let Some(resolve) = answer_batch(batch, outcome, act.pool.clone()) {
                    ctx.spawn(resolve.into_actor(act));
                }
                act.flush(ctx);
            }));
        }
        // Full in-flight: what is queued goes when a batch finishes.
    }
}

impl Actor for OrderWriter {
    type Context = Context<Self>;
}

impl Handler<Mail<Write>> for OrderWriter {
    type Result = ();

    fn handle(&mut self, mail: Mail<Write>, ctx: &mut Self::Context) {
        let Some((write, _)) = mail.open() else {
            return;
        };
        if self.queue.len() >= self.queue_limit {
            return write.abandon(Failure::Overloaded);
        }
        self.queue.push(write);
        let lane = self.in_flight > 0 && self.queue.len() == self.lane_size();
        if self.queue.len() >= self.batch_max || lane {
            self.flush(ctx);
        } else if self.timer.is_none() {
            self.timer = Some(ctx.run_later(self.batch_linger, |act, ctx| {
                act.timer = None;
                act.flush(ctx);
            }));
        }
    }
}
