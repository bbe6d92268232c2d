//! The product actor: the single owner of one product's stock.
//!
//! Checkouts on a hot product queue in this actor's mailbox and are decided one at a
//! time, in memory: sale window, idempotency key, per-customer limit, stock. A taken
//! order goes to the order writer, which answers the buyer once its batch commits, or
//! sends the stock back here ([`GiveBack`]) if it does not.
//!
//! State is loaded from PostgreSQL when the actor starts (its mailbox waits meanwhile),
//! so after a restart the actor knows exactly what was committed: stock, per-customer
//! counts, the idempotency keys already used on this product and its payment holds.
//!
//! This file holds the messages, the state and the dispatch; each concern the actor owns
//! has its own file:
//! - [`checkout`]: deciding one checkout and handing it to the writer;
//! - [`admin`]: restock and PATCH, written to the database first;
//! - [`holds`]: payment holds, confirm, cancel and expiry;
//! - [`gate`]: the sold-out gate published for the HTTP workers;
//! - [`snapshot`]: the rendered representation published for reads;
//! - [`published`]: what the product publishes (page, gate, use), which outlives an
//!   idle actor that compacts;
//! - [`letter`]: how a message travels the mailbox (span, caller gone, failing it);
//! - [`load`]: loading the state, reloading it, and stopping with the shard lease;
//! - [`passivate`]: when an idle actor compacts or passivates;
//! - [`queue`]: the drop's waiting room.

mod admin;
mod checkout;
mod gate;
mod holds;
mod keys;
mod letter;
mod load;
mod passivate;
mod published;
mod queue;
mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::mailbox::Mail;
use super::{Checkout, Failure, Shared};
use crate::db;
pub use crate::db::orders::ChangedBy;
use crate::domain::ledger::Ledger;
use crate::domain::order::{CheckoutBody, Order};
use crate::domain::product::Product;
use crate::domain::waiting_room::Queue;
pub use gate::Gate;
use holds::Holds;
use keys::Keys;
pub use published::{release_stock_series, Published};
pub use queue::QueueAnswer;
pub use snapshot::Snapshot;

/// A checkout, validated, on its way to the product.
#[derive(Debug, Clone)]
pub struct CheckoutCommand {
    /// The span of the hop that sent it; the next hop's span is its child.
    pub span: tracing::Span,
    pub body: CheckoutBody,
    pub idempotency_key: String,
    pub request_hash: [u8; 32],
    pub api_key_id: String,
    pub client_addr: Option<String>,
    /// `Waiting-Room-Token`, for a drop with a waiting room.
    pub queue_token: Option<String>,
    /// The caller asked the database, which has no order under this key: the product's
    /// "maybe" of its key filter is settled (see [`Checkout::MaybeKnown`]).
    pub key_checked: bool,
}

pub type CheckoutReply = oneshot::Sender<Result<Checkout, Failure>>;
pub type SnapshotReply = oneshot::Sender<Result<Snapshot, Failure>>;
pub type LifecycleReply = oneshot::Sender<Result<Lifecycle, Failure>>;
pub type QueueReply = oneshot::Sender<Result<Option<QueueAnswer>, Failure>>;

pub type PatchReply = oneshot::Sender<Result<Snapshot, PatchFailure>>;

/// Why a PATCH did not apply.
#[derive(Debug)]
pub enum PatchFailure {
    Failure(Failure),
    /// The database refused the new values (constraint name).
    Invalid(String),
}

/// What a confirm or cancel came to, short of failing.
#[derive(Debug)]
pub enum Lifecycle {
    /// The order moved; here it is.
    Changed(Order),
    /// The order is not a live hold of this product (already confirmed, cancelled,
    /// expired, or unknown): the caller answers from the database.
    NotHeld,
}

/// The messages a product answers.
#[derive(Message)]
#[rtype(result = "()")]
pub enum ProductMsg {
    Checkout {
        cmd: CheckoutCommand,
        reply: CheckoutReply,
    },
    Read {
        reply: SnapshotReply,
    },
    /// Adds stock; with an Idempotency-Key, at most once per key.
    Restock {
        quantity: i64,
        idempotency_key: Option<String>,
        reply: SnapshotReply,
    },
    /// Applies a PATCH in the database, then here; the old representation is gone once
    /// this answers.
    Patch {
        patch: db::products::ProductPatch,
        reply: PatchReply,
    },
    /// Joins the drop's waiting room (or finds the customer's place again).
    Queue {
        customer_id: String,
        reply: QueueReply,
    },
    /// Where a waiting-room ticket stands (with a token once admitted).
    QueueStatus {
        ticket: String,
        reply: QueueReply,
    },
    /// Nothing but start (load and render) the actor: before a drop, or at boot for
    /// pending payment holds.
    Warm,
    /// reserved → confirmed, unless the hold expired first.
    Confirm {
        order_id: String,
        payment_reference: String,
        by: ChangedBy,
        reply: LifecycleReply,
    },
    /// reserved or confirmed → cancelled, stock back.
    Cancel {
        order_id: String,
        by: ChangedBy,
        reply: LifecycleReply,
    },
}

/// The key of `product_id` asked for by `store_id` in [`Shared::missing`].
pub fn missing_key(store_id: &str, product_id: &str) -> String {
    format!("{store_id}\u{1f}{product_id}")
}

/// Stock taken for an order that did not become durable (failed batch, duplicate key).
#[derive(Message)]
#[rtype(result = "()")]
pub struct GiveBack {
    pub order_id: String,
    pub customer_id: String,
    pub quantity: i64,
    pub idempotency_key: String,
}

struct Loaded {
    /// The product's shard at the epoch this instance held it when loading: every
    /// write made from this state is fenced on it.
    fence: crate::db::cluster::Fence,
    product: Product,
    ledger: Ledger,
    /// The idempotency keys of this product's orders, compactly (see [`keys`]).
    keys: Keys,
    /// Whether the published gate says sold out.
    gate_closed: bool,
    /// Payment holds: reserved orders, each with its expiry timer.
    holds: Holds,
    /// Where the page, the gate and the stock gauges are published for the HTTP
    /// workers (the page only there: rendered once per change, kept once).
    published: Arc<Published>,
    /// (available, total) gauges, for the first products loaded (bounded cardinality).
    stock_gauges: Option<(prometheus::IntGauge, prometheus::IntGauge)>,
    /// The drop's waiting room (in memory: a restart empties it), made when the first
    /// buyer joins: most products have none.
    queue: Option<Box<Queue>>,
}

enum State {
    Loading,
    /// No such product in this store.
    Missing,
    Ready(Box<Loaded>),
}

pub struct ProductActor {
    product_id: String,
    store_id: String,
    shared: Arc<Shared>,
    state: State,
    /// While reloading after a failure, the pause before the next try.
    reload_pause: Option<Duration>,
    /// What it publishes, with its use (messages here, reads of its page elsewhere);
    /// its store's catalog keeps it too.
    published: Arc<Published>,
    /// The shard lease it runs under (set when started by the shard's owner).
    fence: Option<crate::db::cluster::Fence>,
    /// It stops compacted: what it published stays (see [`passivate`]).
    compacted: bool,
}

impl ProductActor {
    pub fn new(
        product_id: String,
        store_id: String,
        shared: Arc<Shared>,
        published: Arc<Published>,
    ) -> Self {
        ProductActor {
            product_id,
            store_id,
            shared,
            state: State::Loading,
            reload_pause: None,
            published,
            fence: None,
            compacted: false,
        }
    }
}

impl Actor for ProductActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        crate::metrics::PRODUCT_ACTORS_GAUGE.inc();
        // Only the owner of the product's shard runs its actor; the state it loads is
        // read after its lease was claimed, so it holds every write of former owners.
        let Some(fence) = self.shared.cluster.held_fence(&self.product_id) else {
            // Another instance holds the product now: a page an earlier actor left here
            // may be stale.
            self.published.clear();
            return ctx.stop();
        };
        self.fence = Some(fence);
        self.watch_lease(fence, ctx);
        self.load(ctx);
        self.watch_idleness(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        crate::metrics::PRODUCT_ACTORS_GAUGE.dec();
        self.unload();
    }
}

impl Handler<Mail<ProductMsg>> for ProductActor {
    type Result = ();

    fn handle(&mut self, mail: Mail<ProductMsg>, ctx: &mut Self::Context) {
        let Some((msg, deadline)) = mail.open() else {
            return;
        };
        self.published.activity().touch();
        let loaded = match &mut self.state {
            State::Ready(loaded) => loaded,
            State::Missing => return msg.fail(Failure::NotFound),
            State::Loading => return msg.fail(Failure::Unavailable),
        };
        match msg {
            ProductMsg::Checkout { cmd, reply } => {
                checkout::checkout(loaded, cmd, reply, deadline, &self.shared, ctx)
            }
            ProductMsg::Read { reply } => {
                let _ = reply.send(Ok(loaded.snapshot(Utc::now())));
            }
            ProductMsg::Restock {
                quantity,
                idempotency_key,
                reply,
            } => self.restock(quantity, idempotency_key, reply, deadline, ctx),
            ProductMsg::Confirm {
                order_id,
                payment_reference,
                by,
                reply,
            } => self.confirm(order_id, payment_reference, by, reply, deadline, ctx),
            ProductMsg::Cancel {
                order_id,
                by,
                reply,
            } => self.cancel(order_id, by, reply, deadline, ctx),
            ProductMsg::Patch { patch, reply } => self.patch(patch, reply, deadline, ctx),
            ProductMsg::Queue { customer_id, reply } => {
                let _ = reply.send(
                    loaded
                        .join_queue(&customer_id, &self.shared.queue_secret)
                        .map(Some),
                );
            }
            ProductMsg::QueueStatus { ticket, reply } => {
                let _ = reply.send(Ok(loaded.queue_place(&ticket, &self.shared.queue_secret)));
            }
            ProductMsg::Warm => {}
        }
    }
}

impl Handler<GiveBack> for ProductActor {
    type Result = ();

    fn handle(&mut self, msg: GiveBack, ctx: &mut Self::Context) {
        let State::Ready(loaded) = &mut self.state else {
            return;
        };
        loaded.holds.forget(&msg.order_id, ctx);
        loaded.ledger.give_back(&msg.customer_id, msg.quantity);
        loaded.keys.forget(&msg.idempotency_key, &msg.order_id);
        loaded.touch(Utc::now());
    }
}

impl Loaded {
    /// Stock changed: the snapshot must be rendered again, the gate perhaps moved.
    pub(super) fn touch(&mut self, now: DateTime<Utc>) {
        self.product.updated_at = now;
        self.published.set_snapshot(None);
        self.publish_gate();
        self.publish_stock();
    }

    /// New stored values (a PATCH); the stock numbers stay the ledger's.
    pub(super) fn replace_product(&mut self, row: Product) {
        let updated_at = row.updated_at;
        self.product = row;
        self.touch(updated_at);
    }
}
