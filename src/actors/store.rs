//! The store actor: one per store, owning its catalog of product actors.
//!
//! Product actors are made on first use and placed on the arbiters round robin; a
//! catalog of a million products costs nothing until a product is touched. Before it
//! starts one, the store learns from PostgreSQL whether the id names one of its
//! products (off its mailbox: the lookup runs beside it, and the messages for that id
//! wait in [`StoreActor::pending`] meanwhile), so an unknown id costs an entry in the
//! bounded negative cache ([`Shared::missing`]), never an actor.
//!
//! The store's [`Catalog`] keeps each product in memory: its published page and gate,
//! and its actor while it runs. An idle actor compacts (stops, leaving its page and
//! gate); the store's sweep forgets a product once it is idle for the passivation time,
//! or its shard's lease is gone, so the catalog holds only products in use.
//!
//! [`Catalog`]: super::Catalog

use foldhash::{HashMap, HashMapExt};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;

use super::mailbox::{Deadline, Letter, Mail, Mailbox, Refused};
use super::product::{ProductActor, ProductMsg, Published};
use super::{CatalogEntry, Failure, Shared};
use crate::telemetry::SPAN_STORE;

/// A message for one of the store's products.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ToProduct {
    pub product_id: String,
    pub msg: ProductMsg,
}

impl Letter for ToProduct {
    fn caller_gone(&self) -> bool {
        self.msg.caller_gone()
    }

    fn fail(self, failure: Failure) {
        self.msg.fail(failure)
    }
}

pub struct StoreActor {
    store_id: String,
    shared: Arc<Shared>,
    /// The products in memory, shared with the directory (see [`super::Catalog`]); only
    /// this actor writes it.
    catalog: Arc<super::Catalog>,
    /// product id → the messages waiting for its existence lookup (one lookup per id,
    /// shared by every miss on it that arrives meanwhile).
    pending: HashMap<String, Vec<(ProductMsg, Deadline)>>,
    /// The ids of `pending` whose lookup has not started yet, oldest first.
    queued: VecDeque<String>,
    /// Lookups of this store in flight.
    looking: usize,
    /// Whether a later [`StoreActor::start_lookups`] is already due.
    retry_armed: bool,
}

impl StoreActor {
    pub fn new(store_id: String, shared: Arc<Shared>, catalog: Arc<super::Catalog>) -> Self {
        StoreActor {
            store_id,
            shared,
            catalog,
            pending: HashMap::new(),
            queued: VecDeque::new(),
            looking: 0,
            retry_armed: false,
        }
    }

    /// The product's actor, started (on the next arbiter) if it is not running.
    /// `warm`: started ahead of a drop, not by a request (counted apart: a request that
    /// has to start its product's actor is a cold read).
    /// A compacted product keeps its catalog entry (and what it published) for the new
    /// actor.
    fn product(&mut self, product_id: &str, warm: bool) -> Mailbox<ProductActor> {
        let published = {
            let catalog = self.catalog.read().expect("catalog");
            match catalog.get(product_id) {
                Some(CatalogEntry {
                    actor: Some(mailbox),
                    ..
                }) if mailbox.connected() => return (**mailbox).clone(),
                Some(entry) => Some(entry.published.clone()),
                None => None,
            }
        };
        let cause = if warm { "warm" } else { "request" };
        crate::metrics::PRODUCT_LOADS
            .with_label_values(&[cause])
            .inc();
        let published = published.unwrap_or_else(|| Arc::new(Published::new(product_id)));
        let actor = ProductActor::new(
            product_id.to_owned(),
            self.store_id.clone(),
            self.shared.clone(),
            published.clone(),
        );
        let addr = ProductActor::start_in_arbiter(self.shared.next_arbiter(), |_| actor);
        let mailbox = Mailbox::new(addr, self.shared.mailbox_capacity, "product");
        let entry = CatalogEntry {
            published,
            actor: Some(Box::new(mailbox.clone())),
        };
        self.catalog
            .write()
            .expect("catalog")
            .insert(product_id.into(), entry);
        mailbox
    }

    /// Whether the product is one of this store's in memory: its actor runs, or it
    /// compacted and its page is still published.
    fn knows(&self, product_id: &str) -> bool {
        let catalog = self.catalog.read().expect("catalog");
        catalog.get(product_id).is_some_and(|e| {
            e.actor.as_ref().is_some_and(|m| m.connected()) || e.published.has_snapshot()
        })
    }

    /// Drops the entries of products no longer in memory: stopped actors that left no
    /// page (passivated, failed, an unknown id's), compacted ones idle for the
    /// passivation time, and (`leases`) those whose shard lease this instance lost
    /// since they were rendered.
    fn sweep(&mut self, leases: bool) {
        let idle = self.shared.product_idle;
        let cluster = &self.shared.cluster;
        let mut catalog = self.catalog.write().expect("catalog");
        let mut forgotten = Vec::new();
        catalog.retain(|id, entry| {
            let lost = leases
                && entry
                    .published
                    .fence()
                    .is_some_and(|fence| !cluster.holds(fence));
            if entry.actor.as_ref().is_some_and(|m| m.connected()) {
                // A running actor stops itself when its lease goes.
                return true;
            }
            entry.actor = None;
            let idled = !idle.is_zero() && entry.published.idle_for() >= idle;
            let keep = !lost && !idled && entry.published.has_snapshot();
            if idled && entry.published.has_snapshot() {
                // A compacted product passivates here (its actor stopped already).
                crate::metrics::PRODUCT_PASSIVATIONS.inc();
            }
            if !keep {
                entry.published.clear();
                if entry.published.has_stock_gauges() {
                    forgotten.push(id.clone());
                }
            }
            keep
        });
        if catalog.capacity() > 2 * catalog.len() + 64 {
            catalog.shrink_to_fit();
        }
        drop(catalog);
        for id in forgotten {
            super::product::release_stock_series(&self.shared, &id);
        }
    }

    /// Forgets the compacted products of shards this instance no longer holds, as soon
    /// as it loses one (their pages may be stale: another instance sells them now).
    fn watch_leases(&mut self, ctx: &mut Context<Self>) {
        let mut losses = self.shared.cluster.watch();
        let lost = async move {
            let changed = losses.changed().await.is_ok();
            changed.then_some(losses)
        };
        ctx.spawn(lost.into_actor(self).map(|losses, act, ctx| {
            if losses.is_some() {
                act.sweep(true);
                act.watch_leases(ctx);
            }
        }));
    }
}

/// Ids of one store waiting for (or in) an existence lookup at most; past it a new
/// unknown id is answered 503 `overloaded` at once.
const LOOKUP_QUEUE: usize = 256;
/// When other stores hold every lookup, how soon a store with ids waiting looks again.
const LOOKUP_RETRY: std::time::Duration = std::time::Duration::from_millis(5);

/// How often the catalog drops the entries of products no longer in memory (see
/// [`StoreActor::sweep`]): one sweep a store, no timer a product.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SWEEP_EVERY, |act, _| act.sweep(true));
        self.watch_leases(ctx);
    }
}

impl Handler<Mail<ToProduct>> for StoreActor {
    type Result = ();

    fn handle(&mut self, mail: Mail<ToProduct>, ctx: &mut Self::Context) {
        let Some((ToProduct { product_id, msg }, deadline)) = mail.open() else {
            return;
        };
        let mut msg = msg;
        // The hop through the store, in the checkout's trace.
        let span = msg.span().map(
            |parent| tracing::debug_span!(parent: parent, SPAN_STORE, product.id = %product_id),
        );
        let _entered = span.as_ref().map(|s| s.enter());
        if let Some(span) = &span {
            msg.set_span(span.clone());
        }
        // A warm-up names a product the database just listed for this store: no lookup.
        if matches!(msg, ProductMsg::Warm) || self.knows(&product_id) {
            return self.deliver(&product_id, msg, deadline);
        }
        // An id this store already found to name nothing: 404 from memory, no actor.
        if self
            .shared
            .missing
            .contains_key(&super::product::missing_key(&self.store_id, &product_id))
        {
            return msg.fail(Failure::NotFound);
        }
        self.look_up(product_id, msg, deadline, ctx);
    }
}

impl StoreActor {
    /// Sends `msg` to the product's actor, started if need be. Once more if the actor
    /// stopped between our check and the send (a passivating actor stops itself; a
    /// failed load stops it at once).
    fn deliver(&mut self, product_id: &str, mut msg: ProductMsg, deadline: Deadline) {
        for _ in 0..2 {
            let warm = matches!(msg, ProductMsg::Warm);
            match self.product(product_id, warm).send(msg, deadline) {
                Ok(()) => return,
                Err(Refused::Full(m)) => return m.fail(Failure::Overloaded),
                Err(Refused::Closed(m)) => {
                    if let Some(entry) = self.catalog.write().expect("catalog").get_mut(product_id)
                    {
                        entry.actor = None;
                    }
                    msg = m;
                }
            }
        }
        msg.fail(Failure::Unavailable);
    }

    /// Learns whether `product_id` is one of this store's products before any actor is
    /// started for it. The query runs beside the mailbox (which goes on serving the
    /// store's other products), within the message's deadline; misses on the same id
    /// meanwhile wait for the same answer. Lookups are bounded, for the process
    /// ([`Shared::lookups`]) and per store ([`Shared::lookups_per_store`]); ids beyond
    /// that wait their turn in a short queue ([`LOOKUP_QUEUE`] ids), and past it the
    /// request is answered 503 `overloaded` (Retry-After) at once. Nothing else is
    /// touched: not the pool other requests need, not the circuit breaker (a failed
    /// lookup is that request's 503, never a verdict on the database).
    fn look_up(
        &mut self,
        product_id: String,
        msg: ProductMsg,
        deadline: Deadline,
        ctx: &mut Context<Self>,
    ) {
        if let Some(waiting) = self.pending.get_mut(&product_id) {
            if waiting.len() >= self.shared.mailbox_capacity {
                return msg.fail(Failure::Overloaded);
            }
            return waiting.push((msg, deadline));
        }
        if deadline.passed() {
            return msg.fail(Failure::Unavailable);
        }
        if self.pending.len() >= LOOKUP_QUEUE {
            crate::metrics::PRODUCT_LOOKUPS
                .with_label_values(&["shed"])
                .inc();
            return msg.fail(Failure::Overloaded);
        }
        self.pending
            .insert(product_id.clone(), vec![(msg, deadline)]);
        self.queued.push_back(product_id);
        self.start_lookups(ctx);
    }

    /// Starts the queued lookups that may start now: as many as the bounds allow, the
    /// oldest first; those whose callers' time has passed are answered and skipped.
    fn start_lookups(&mut self, ctx: &mut Context<Self>) {
        while self.looking < self.shared.lookups_per_store {
            let Some(product_id) = self.queued.front() else {
                return;
            };
            let Some(waiting) = self.pending.get_mut(product_id) else {
                self.queued.pop_front();
                continue;
            };
            // The latest deadline of the messages waiting: the answer is due by then.
            waiting.retain(|(msg, _)| !msg.caller_gone());
            let deadline = waiting
                .iter()
                .map(|(_, d)| *d)
                .filter(|d| !d.passed())
                .max_by_key(|d| d.answer_by);
            let Some(deadline) = deadline else {
                let product_id = self.queued.pop_front().expect("front");
                for (msg, _) in self.pending.remove(&product_id).unwrap_or_default() {
                    msg.fail(Failure::Unavailable);
                }
                continue;
            };
            let Ok(permit) = self.shared.lookups.clone().try_acquire_owned() else {
                // Other stores hold every lookup: look again shortly (nothing of ours is
                // in flight to wake us when it ends).
                if self.looking == 0 && !self.retry_armed {
                    self.retry_armed = true;
                    ctx.run_later(LOOKUP_RETRY, |act, ctx| {
                        act.retry_armed = false;
                        act.start_lookups(ctx);
                    });
                }
                return;
            };
            let product_id = self.queued.pop_front().expect("front");
            self.looking += 1;
            self.spawn_lookup(product_id, deadline, permit, ctx);
        }
    }

    fn spawn_lookup(
        &mut self,
        product_id: String,
        deadline: Deadline,
        permit: tokio::sync::OwnedSemaphorePermit,
        ctx: &mut Context<Self>,
    ) {
        let pool = self.shared.pool.clone();
        let (store_id, id) = (self.store_id.clone(), product_id.clone());
        let creations = self.shared.creations.load(Ordering::Acquire);
        let lookup = async move {
            let _permit = permit;
            let ask = async {
                let client = pool.get().await?;
                Ok::<_, anyhow::Error>(
                    crate::db::products::product_exists(&**client, &store_id, &id).await?,
                )
            };
            tokio::time::timeout(deadline.left(), ask)
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer by the deadline")))
        };
        ctx.spawn(lookup.into_actor(self).map(move |found, act, ctx| {
            act.looking -= 1;
            // A creation heard of meanwhile may be this id's: its "missing" is not kept.
            let remember = act.shared.creations.load(Ordering::Acquire) == creations;
            act.answer_lookup(&product_id, found, remember);
            act.start_lookups(ctx);
        }));
    }

    /// Hands the messages that waited for `product_id`'s lookup on (or answers them).
    fn answer_lookup(&mut self, product_id: &str, found: anyhow::Result<bool>, remember: bool) {
        let waiting = self.pending.remove(product_id).unwrap_or_default();
        let result = match &found {
            Ok(true) => "found",
            Ok(false) => "missing",
            Err(_) => "failed",
        };
        crate::metrics::PRODUCT_LOOKUPS
            .with_label_values(&[result])
            .inc();
        match found {
            Ok(true) => {
                for (msg, deadline) in waiting {
                    self.deliver(product_id, msg, deadline);
                }
            }
            Ok(false) => {
                if remember {
                    self.shared
                        .missing
                        .insert(super::product::missing_key(&self.store_id, product_id), ());
                }
                for (msg, _) in waiting {
                    msg.fail(Failure::NotFound);
                }
            }
            Err(e) => {
                tracing::warn!(product.id = %product_id, error = %e, "product lookup failed");
                for (msg, _) in waiting {
                    msg.fail(Failure::Unavailable);
                }
            }
        }
    }
}
