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
//! Holds, confirm, cancel and expiry live in [`super::holds`].

use foldhash::{HashMap, HashSet};

use actix_web::http::header::HeaderValue;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::oneshot;

use super::holds::Holds;
use super::writer::Write;
use super::{Checkout, Failure, Shared};
use crate::db;
pub use crate::db::orders::ChangedBy;
use crate::db::orders::HeldOrder;
use crate::domain::ids::new_id;
use crate::domain::ledger::{Ledger, Refusal};
use crate::domain::order::{CheckoutBody, NewOrder, Order};
use crate::domain::product::{Product, StockView};
use crate::domain::waiting_room::{self, Place, Queue};
use crate::metrics::MAILBOX_REJECTIONS;
use crate::telemetry::SPAN_PRODUCT_CHECKOUT;

/// How long the actor of an id that names no product lingers, answering 404 without
/// asking the database again.
const MISSING_LINGER: Duration = Duration::from_secs(10);

/// A checkout, validated, on its way to the product.
#[derive(Debug)]
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
}

pub type CheckoutReply = oneshot::Sender<Result<Checkout, Failure>>;
pub type SnapshotReply = oneshot::Sender<Result<Arc<Snapshot>, Failure>>;
pub type LifecycleReply = oneshot::Sender<Result<Lifecycle, Failure>>;
pub type QueueReply = oneshot::Sender<Result<Option<QueueAnswer>, Failure>>;

/// A place in a waiting room, and the admission token once it is the buyer's turn.
#[derive(Debug, Clone)]
pub struct QueueAnswer {
    pub place: Place,
    pub token: Option<String>,
}

pub type PatchReply = oneshot::Sender<Result<Arc<Snapshot>, PatchFailure>>;

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
    Restock {
        quantity: i64,
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

impl ProductMsg {
    /// The span a traced message carries (checkouts).
    pub fn span(&self) -> Option<&tracing::Span> {
        match self {
            ProductMsg::Checkout { cmd, .. } => Some(&cmd.span),
            _ => None,
        }
    }

    pub fn set_span(&mut self, span: tracing::Span) {
        if let ProductMsg::Checkout { cmd, .. } = self {
            cmd.span = span;
        }
    }

    /// Answers the message with `failure` (it was not delivered or cannot be served).
    pub fn fail(self, failure: Failure) {
        match self {
            ProductMsg::Checkout { reply, .. } => drop(reply.send(Err(failure))),
            ProductMsg::Read { reply } | ProductMsg::Restock { reply, .. } => {
                drop(reply.send(Err(failure)))
            }
            ProductMsg::Confirm { reply, .. } | ProductMsg::Cancel { reply, .. } => {
                drop(reply.send(Err(failure)))
            }
            ProductMsg::Patch { reply, .. } => {
                drop(reply.send(Err(PatchFailure::Failure(failure))))
            }
            ProductMsg::Queue { reply, .. } | ProductMsg::QueueStatus { reply, .. } => {
                drop(reply.send(Err(failure)))
            }
            ProductMsg::Warm => {}
        }
    }
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

/// What the product actor publishes for the sold-out fast path: while the product is
/// sold out, the keys of its orders; a checkout with any other key can be refused by the
/// HTTP worker without entering this actor's mailbox (or touching the database). Only
/// the actor writes it.
#[derive(Debug)]
pub struct Gate {
    pub store_id: String,
    sold_out_keys: RwLock<Option<Arc<HashSet<String>>>>,
}

impl Gate {
    /// Whether a checkout with `key` is refused as sold out right now. A key the product
    /// already has an order for is not: it goes on to be replayed.
    pub fn refuses(&self, key: &str) -> bool {
        let keys = self.sold_out_keys.read().unwrap_or_else(|e| e.into_inner());
        keys.as_ref().is_some_and(|keys| !keys.contains(key))
    }

    fn set(&self, keys: Option<Arc<HashSet<String>>>) {
        *self
            .sold_out_keys
            .write()
            .unwrap_or_else(|e| e.into_inner()) = keys;
    }
}

/// The rendered representation of the product, made once per change.
#[derive(Debug)]
pub struct Snapshot {
    /// `GET /products/{id}` body (cheap to clone: shared bytes).
    pub body: actix_web::web::Bytes,
    /// `GET /products/{id}/stock` body.
    pub stock_body: actix_web::web::Bytes,
    /// Strong validator: a hash of `body`, quoted, ready to send.
    pub etag: HeaderValue,
    pub last_modified: DateTime<Utc>,
    /// `last_modified` as an HTTP date, formatted once, ready to send.
    pub last_modified_http: HeaderValue,
    /// The status in `body` changes at this instant (a sale window edge).
    valid_until: Option<DateTime<Utc>>,
    /// Whose product this is (a reader from another store must not get it).
    pub store_id: String,
}

/// A header value made of visible ASCII (a hex ETag, an HTTP date).
fn header_value(ascii: String) -> HeaderValue {
    HeaderValue::try_from(ascii).expect("visible ASCII")
}

impl Snapshot {
    /// Whether the representation still holds now (no sale-window edge passed); the
    /// clock is read only for a snapshot that has such an edge ahead.
    pub fn is_current(&self) -> bool {
        self.valid_until.is_none_or(|t| Utc::now() < t)
    }
}

pub(super) struct Loaded {
    pub(super) product: Product,
    pub(super) ledger: Ledger,
    /// Idempotency keys used on this product → (order id, request hash).
    keys: HashMap<String, (String, Vec<u8>)>,
    snapshot: Option<Arc<Snapshot>>,
    /// Published for the HTTP workers; see [`Gate`].
    gate: Arc<Gate>,
    /// Whether `gate` says sold out.
    gate_closed: bool,
    /// Payment holds: reserved orders, each with its expiry timer.
    pub(super) holds: Holds,
    /// Where the current snapshot is published for readers, and whether it is there now.
    published: crate::Cache<String, Arc<Snapshot>>,
    is_published: bool,
    /// The drop's waiting room (in memory: a restart empties it).
    queue: Queue,
    /// (available, total) gauges, for the first products loaded (bounded cardinality).
    stock_gauges: Option<(prometheus::IntGauge, prometheus::IntGauge)>,
}

pub(super) enum State {
    Loading,
    /// No such product in this store.
    Missing,
    Ready(Box<Loaded>),
}

pub struct ProductActor {
    pub(super) product_id: String,
    store_id: String,
    pub(super) shared: Arc<Shared>,
    pub(super) state: State,
}

impl ProductActor {
    pub fn new(product_id: String, store_id: String, shared: Arc<Shared>) -> Self {
        ProductActor {
            product_id,
            store_id,
            shared,
            state: State::Loading,
        }
    }
}

async fn load_product(
    pool: db::Pool,
    snapshots: crate::Cache<String, Arc<Snapshot>>,
    store_id: String,
    product_id: String,
) -> anyhow::Result<Option<(Loaded, Vec<HeldOrder>)>> {
    let client = pool.get().await?;
    let Some(product) = db::products::find_product(&**client, &store_id, &product_id).await? else {
        return Ok(None);
    };
    let held = db::products::held_by_customer(&**client, &product_id).await?;
    let keys = db::products::idempotency_keys(&**client, &product_id).await?;
    let published = snapshots;
    let reserved = db::orders::reserved_orders(&**client, &product_id).await?;
    let ledger = Ledger::from_db(product.stock_total, product.stock_available, held);
    let gate = Arc::new(Gate {
        store_id,
        sold_out_keys: RwLock::new(None),
    });
    let mut loaded = Loaded {
        product,
        ledger,
        keys,
        snapshot: None,
        gate,
        gate_closed: false,
        holds: Holds::default(),
        stock_gauges: None,
        queue: Queue::default(),
        published,
        is_published: false,
    };
    loaded.publish_gate();
    Ok(Some((loaded, reserved)))
}

impl Actor for ProductActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.shared.mailbox_capacity);
        let load = load_product(
            self.shared.pool.clone(),
            self.shared.snapshots.clone(),
            self.store_id.clone(),
            self.product_id.clone(),
        );
        // `wait`: no message is handled until the state is known.
        ctx.wait(load.into_actor(self).map(|loaded, act, ctx| match loaded {
            Ok(Some((mut loaded, reserved))) => {
                let series = act
                    .shared
                    .stock_series
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if series < crate::metrics::MAX_STOCK_SERIES {
                    let id = [act.product_id.as_str()];
                    loaded.stock_gauges = Some((
                        crate::metrics::STOCK_AVAILABLE.with_label_values(&id),
                        crate::metrics::STOCK_TOTAL.with_label_values(&id),
                    ));
                    loaded.publish_stock();
                }
                act.shared
                    .gates
                    .insert(act.product_id.clone(), loaded.gate.clone());
                act.state = State::Ready(Box::new(loaded));
                // Holds that lapsed while nobody watched are released at once.
                for hold in reserved {
                    act.arm_hold(hold, ctx);
                }
            }
            Ok(None) => {
                act.state = State::Missing;
                ctx.run_later(MISSING_LINGER, |_, ctx| ctx.stop());
            }
            Err(e) => {
                // Queued messages are dropped with the actor; their senders see 503.
                tracing::warn!(product.id = %act.product_id, error = %e, "failed to load product");
                ctx.stop();
            }
        }));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.shared.gates.invalidate(&self.product_id);
        self.shared.snapshots.invalidate(&self.product_id);
        if let State::Ready(loaded) = &self.state {
            if loaded.stock_gauges.is_some() {
                let _ = crate::metrics::STOCK_AVAILABLE.remove_label_values(&[&self.product_id]);
                let _ = crate::metrics::STOCK_TOTAL.remove_label_values(&[&self.product_id]);
                self.shared
                    .stock_series
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

impl Handler<ProductMsg> for ProductActor {
    type Result = ();

    fn handle(&mut self, msg: ProductMsg, ctx: &mut Self::Context) {
        crate::metrics::mailbox_depth("product").dec();
        let loaded = match &mut self.state {
            State::Ready(loaded) => loaded,
            State::Missing => return msg.fail(Failure::NotFound),
            State::Loading => return msg.fail(Failure::Unavailable),
        };
        match msg {
            ProductMsg::Checkout { cmd, reply } => checkout(loaded, cmd, reply, &self.shared, ctx),
            ProductMsg::Read { reply } => {
                let _ = reply.send(Ok(loaded.snapshot(Utc::now())));
            }
            ProductMsg::Restock { quantity, reply } => self.restock(quantity, reply, ctx),
            ProductMsg::Confirm {
                order_id,
                payment_reference,
                by,
                reply,
            } => self.confirm(order_id, payment_reference, by, reply, ctx),
            ProductMsg::Cancel {
                order_id,
                by,
                reply,
            } => self.cancel(order_id, by, reply, ctx),
            ProductMsg::Patch { patch, reply } => self.patch(patch, reply, ctx),
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

/// Decides one checkout and, if it takes stock, hands the order to the writer.
fn checkout(
    loaded: &mut Loaded,
    cmd: CheckoutCommand,
    reply: CheckoutReply,
    shared: &Shared,
    ctx: &mut Context<ProductActor>,
) {
    let span = tracing::debug_span!(parent: &cmd.span, SPAN_PRODUCT_CHECKOUT, product.id = %loaded.product.id);
    let _entered = span.enter();
    if let Some((order_id, request_hash)) = loaded.keys.get(&cmd.idempotency_key) {
        let known = Checkout::KnownKey {
            order_id: order_id.clone(),
            request_hash: request_hash.clone(),
        };
        let _ = reply.send(Ok(known));
        return;
    }
    // Microseconds: what PostgreSQL keeps, so a replay from the database is byte-equal.
    let now = Utc::now().trunc_subsecs(6);
    let product = &loaded.product;
    let body = cmd.body;
    let max = product.max_per_customer.map(i64::from);
    if product.waiting_room.is_some() {
        let admitted = cmd.queue_token.as_deref().is_some_and(|token| {
            waiting_room::verify(
                &shared.queue_secret,
                token,
                &product.id,
                &body.customer_id,
                now,
            )
        });
        if !admitted {
            let _ = reply.send(Err(Failure::Refused(Refusal::WaitingRoomTokenRequired)));
            return;
        }
    }
    if let Err(refusal) = loaded.ledger.take(
        &body.customer_id,
        body.quantity,
        max,
        &product.window(),
        now,
    ) {
        let _ = reply.send(Err(Failure::Refused(refusal)));
        return;
    }
    let held = product.hold_seconds > 0;
    let quantity = body.quantity as i32;
    let order = Order {
        id: new_id("ord"),
        store_id: product.store_id.clone(),
        product_id: product.id.clone(),
        customer_id: body.customer_id.clone(),
        quantity,
        unit_price_cents: product.price_cents,
        currency: product.currency.clone(),
        total_cents: product.price_cents * i64::from(quantity),
        status: if held { "reserved" } else { "confirmed" }.to_owned(),
        expires_at: held.then(|| now + chrono::Duration::seconds(product.hold_seconds.into())),
        created_at: now,
    };
    let order_id = order.id.clone();
    let hold = order.expires_at.map(|expires_at| HeldOrder {
        id: order.id.clone(),
        customer_id: order.customer_id.clone(),
        quantity: i64::from(quantity),
        expires_at,
    });
    let new_order = NewOrder {
        order,
        idempotency_key: cmd.idempotency_key.clone(),
        request_hash: cmd.request_hash,
        api_key_id: cmd.api_key_id,
        client_addr: cmd.client_addr,
        consent: body.consent,
    };
    match shared.writer.try_send(Write {
        order: new_order,
        product: ctx.address(),
        reply,
        span: span.clone(),
    }) {
        Ok(()) => {
            crate::metrics::mailbox_depth("writer").inc();
            loaded
                .keys
                .insert(cmd.idempotency_key, (order_id, cmd.request_hash.to_vec()));
            loaded.touch(now);
            if let Some(hold) = hold {
                loaded.holds.arm(hold, ctx);
            }
        }
        Err(SendError::Full(w) | SendError::Closed(w)) => {
            MAILBOX_REJECTIONS.with_label_values(&["writer"]).inc();
            loaded.ledger.give_back(&body.customer_id, body.quantity);
            let _ = w.reply.send(Err(Failure::Overloaded));
        }
    }
}

impl ProductActor {
    /// Adds stock in the database, then in memory; the mailbox waits for it.
    fn restock(&mut self, quantity: i64, reply: SnapshotReply, ctx: &mut Context<Self>) {
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
    fn patch(
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

impl Handler<GiveBack> for ProductActor {
    type Result = ();

    fn handle(&mut self, msg: GiveBack, ctx: &mut Self::Context) {
        let State::Ready(loaded) = &mut self.state else {
            return;
        };
        loaded.holds.forget(&msg.order_id, ctx);
        loaded.ledger.give_back(&msg.customer_id, msg.quantity);
        if loaded
            .keys
            .get(&msg.idempotency_key)
            .is_some_and(|(id, _)| *id == msg.order_id)
        {
            loaded.keys.remove(&msg.idempotency_key);
        }
        loaded.touch(Utc::now());
    }
}

impl Loaded {
    /// Stock changed: the snapshot must be rendered again, the gate perhaps moved.
    pub(super) fn touch(&mut self, now: DateTime<Utc>) {
        self.product.updated_at = now;
        self.snapshot = None;
        if self.is_published {
            self.published.invalidate(&self.product.id);
            self.is_published = false;
        }
        self.publish_gate();
        self.publish_stock();
    }

    fn publish_stock(&self) {
        if let Some((available, total)) = &self.stock_gauges {
            available.set(self.ledger.available());
            total.set(self.ledger.total());
        }
    }

    fn join_queue(&mut self, customer_id: &str, secret: &[u8]) -> Result<QueueAnswer, Failure> {
        let (Some(room), Some(starts_at)) =
            (self.product.waiting_room, self.product.sale_starts_at)
        else {
            return Err(Failure::Refused(Refusal::NoWaitingRoom));
        };
        let place = self
            .queue
            .join(&room, starts_at, customer_id, Utc::now())
            .map_err(|_| Failure::Refused(Refusal::QueueNotOpen))?;
        Ok(self.admit(place, secret))
    }

    fn queue_place(&mut self, ticket: &str, secret: &[u8]) -> Option<QueueAnswer> {
        let (room, starts_at) = (self.product.waiting_room?, self.product.sale_starts_at?);
        let place = self.queue.place(&room, starts_at, ticket, Utc::now())?;
        Some(self.admit(place, secret))
    }

    /// The place, with a token if its time has come.
    fn admit(&self, place: Place, secret: &[u8]) -> QueueAnswer {
        let now = Utc::now();
        let token = place.admit_at.filter(|at| *at <= now).map(|_| {
            let expires = now + chrono::Duration::seconds(waiting_room::TOKEN_TTL_SECS);
            waiting_room::sign(secret, &self.product.id, &place.customer_id, expires)
        });
        QueueAnswer { place, token }
    }

    /// New stored values (a PATCH); the stock numbers stay the ledger's.
    fn replace_product(&mut self, row: Product) {
        let updated_at = row.updated_at;
        self.product = row;
        self.touch(updated_at);
    }

    /// Closes the gate when the last unit goes, opens it when stock comes back.
    fn publish_gate(&mut self) {
        let sold_out = self.ledger.available() == 0;
        if sold_out != self.gate_closed {
            self.gate_closed = sold_out;
            self.gate
                .set(sold_out.then(|| Arc::new(self.keys.keys().cloned().collect())));
        }
    }

    /// The current snapshot, rendered if stale.
    fn snapshot(&mut self, now: DateTime<Utc>) -> Arc<Snapshot> {
        if let Some(s) = &self.snapshot {
            if s.valid_until.is_none_or(|t| now < t) {
                return s.clone();
            }
        }
        self.product.stock_total = self.ledger.total();
        self.product.stock_available = self.ledger.available();
        let view = self.product.to_view(now);
        let body = serde_json::to_vec(&view).unwrap_or_default();
        let stock = StockView {
            stock_available: view.stock_available,
            status: view.status,
        };
        let stock_body = serde_json::to_vec(&stock).unwrap_or_default();
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&body);
        let window = self.product.window();
        let valid_until = [window.starts_at, window.ends_at]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min();
        let snapshot = Arc::new(Snapshot {
            etag: header_value(format!("\"{}\"", hex::encode(&digest[..12]))),
            last_modified: self.product.updated_at,
            last_modified_http: header_value(
                self.product
                    .updated_at
                    .format("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string(),
            ),
            body: body.into(),
            stock_body: stock_body.into(),
            valid_until,
            store_id: self.product.store_id.clone(),
        });
        self.snapshot = Some(snapshot.clone());
        self.published
            .insert(self.product.id.clone(), snapshot.clone());
        self.is_published = true;
        snapshot
    }
}
