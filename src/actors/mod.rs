//! The actors, and the directory that finds them.
//!
//! - [`store::StoreActor`], one per store: creates its product actors on first use (after
//!   looking the id up) and publishes the running ones (its [`Catalog`]), so that the
//!   directory sends to a running product without a hop through the store.
//! - [`product::ProductActor`], one per product in use: owns its stock, holds,
//!   per-customer counts and a compact filter of its orders' idempotency keys, and
//!   publishes its rendered page and sold-out gate ([`product::Published`]). Every
//!   decision about a product's stock is made in its mailbox, one message at a time. An
//!   idle one compacts: it stops, and its store's catalog keeps what it published.
//! - [`writer::OrderWriter`], one: the write-behind batcher that makes orders durable.
//! - [`dispatcher::Dispatcher`], one: delivers the outbox's events to webhook endpoints.
//!
//! Every mailbox is bounded, and every message carries its deadline: both are one
//! mechanism, [`mailbox`], used by the directory for every hop. Messages carry a oneshot
//! reply channel; a full mailbox is an immediate 503 `overloaded`, never a queue without
//! limit, and a message whose caller has gone or whose time has passed is dropped before
//! it takes stock or reaches the database.

mod directory;
pub mod dispatcher;
pub mod limits;
pub mod mailbox;
pub mod product;
pub mod store;
pub mod writer;

use foldhash::{HashMap, HashMapExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use actix::prelude::*;

use crate::db::Pool;
use crate::domain::ledger::Refusal;
use crate::domain::order::Order;
use mailbox::Mailbox;
use store::StoreActor;
use writer::OrderWriter;

/// How long an id found to name no product is answered 404 from memory.
pub const MISSING_TTL: std::time::Duration = std::time::Duration::from_secs(10);
/// Unknown ids remembered at most (a flood of random ids costs at most this many).
pub const MISSING_CAPACITY: u64 = 100_000;

/// Existence lookups in flight at once: half the main pool, so that lookups never take
/// every connection from reads and checkouts of running products.
fn lookup_permits(settings: &crate::config::Settings) -> usize {
    (settings.db_pool_size / 2).max(2)
}

/// Why a message to an actor did not get the answer it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No such product in this store.
    NotFound,
    /// A mailbox or the writer's queue is full.
    Overloaded,
    /// PostgreSQL could not be reached, the batch failed or the deadline passed first;
    /// nothing was done and nothing will be.
    Unavailable,
    /// The change was sent to PostgreSQL but whether it committed could not be learnt in
    /// time; a retry (with the same Idempotency-Key, for a checkout) learns it.
    OutcomeUnknown,
    /// The sale's rules said no.
    Refused(Refusal),
    /// The Idempotency-Key was used for another request.
    KeyReused,
}

/// What a checkout came to, short of failing.
#[derive(Debug, Clone)]
pub enum Checkout {
    /// Committed.
    Created(Order),
    /// The product already has an order under this key (from before a restart); the
    /// caller replays it or, if the request differs, refuses the key.
    KnownKey {
        order_id: String,
        request_hash: Vec<u8>,
    },
    /// The database already had an order under this key in the store.
    Duplicate,
    /// The product may have an older order under this key (its key filter says
    /// "maybe"): the caller asks the database, replays what it finds, and else sends
    /// this command back with [`product::CheckoutCommand::key_checked`] set. (Handed
    /// back rather than cloned before every send: only a "maybe" needs it again.)
    MaybeKnown(Box<product::CheckoutCommand>),
}

/// What actors share: the pool, the writer, the threads they run on.
pub struct Shared {
    pub pool: Pool,
    /// The writer's own pool (see [`Actors::start`]); here for its metrics.
    pub writer_pool: Pool,
    /// How many products export their stock as metrics (at most
    /// [`crate::metrics::MAX_STOCK_SERIES`]).
    pub stock_series: AtomicUsize,
    pub writer: Mailbox<OrderWriter>,
    pub mailbox_capacity: usize,
    /// How long database work may take once started (see
    /// [`crate::config::Settings::work_budget`]).
    pub work_budget: std::time::Duration,
    /// Signs waiting-room admission tokens.
    pub queue_secret: Vec<u8>,
    /// The database circuit breaker.
    pub health: Arc<crate::db::health::DbHealth>,
    /// `store \x1f product id` → an id that names no product of that store, for
    /// [`MISSING_TTL`]: an unknown id costs this entry, never a running actor (bounded).
    pub missing: crate::Cache<String, ()>,
    /// Bumped whenever this instance hears of a product created (here or elsewhere, see
    /// [`crate::cluster::notify`]): a lookup that began before and found nothing may
    /// have raced that creation, so its "missing" is not remembered.
    pub creations: std::sync::atomic::AtomicU64,
    /// How long a product stays idle before it passivates (see `product::passivate`);
    /// zero: never.
    pub product_idle: std::time::Duration,
    /// How long a product actor stays idle before it compacts (stops, leaving its
    /// page and gate in the catalog); zero: never.
    pub product_compact: std::time::Duration,
    /// Existence lookups of ids with no running actor, in flight at once (all stores):
    /// taken with `try_acquire`, so a flood of unknown ids is shed with 503 `overloaded`
    /// at once instead of queueing for the pool (and tripping the breaker for others).
    pub lookups: Arc<tokio::sync::Semaphore>,
    /// At most this many of [`Shared::lookups`] for one store, so that one store's flood
    /// leaves the others' lookups free.
    pub lookups_per_store: usize,
    /// Who owns which shard (only the owner runs a product's actor).
    pub cluster: Arc<crate::cluster::Cluster>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
}

impl Shared {
    /// Spreads actors over the arbiters, round robin.
    pub fn next_arbiter(&self) -> &ArbiterHandle {
        &self.arbiters[self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len()]
    }
}

/// The products one store has in memory, by product id: kept by the store's actor, its
/// only writer. Only ids the store found to be its own products are ever in it: a
/// product actor is still started by its store alone. One entry a product holds
/// everything the HTTP workers need without a mailbox: its page and gate (so they are
/// found by store and product, and no other store's key reaches them), and the mailbox
/// of its actor while it runs, so that a message goes straight there (see
/// [`Actors::to_product`]).
pub type Catalog = RwLock<HashMap<Box<str>, CatalogEntry>>;

/// A product of a store's [`Catalog`].
pub struct CatalogEntry {
    /// Shared with its actor, and kept when that compacts.
    pub published: Arc<product::Published>,
    /// Its actor, while one runs (boxed: most entries are of compacted products).
    pub actor: Option<Box<Mailbox<product::ProductActor>>>,
}

/// A store in the directory: its actor and the catalog it publishes.
struct StoreEntry {
    mailbox: Mailbox<StoreActor>,
    catalog: Arc<Catalog>,
}

/// The directory of store actors. Product actors are found through their store.
pub struct Actors {
    shared: Arc<Shared>,
    stores: RwLock<HashMap<String, StoreEntry>>,
    /// Each store's rate limits, kept beside its actor in the directory so that the HTTP
    /// workers check them without a mailbox hop.
    limits: RwLock<HashMap<String, Arc<limits::StoreLimits>>>,
    settings: crate::config::Settings,
    /// The threads actors run on; stopped with the directory.
    arbiters: Vec<Arbiter>,
    /// The webhook dispatcher, once started ([`Actors::start_dispatcher`]).
    dispatcher: Option<Addr<dispatcher::Dispatcher>>,
}

impl Actors {
    /// Starts the writer and the arbiters. Must run inside an actix `System`.
    ///
    /// The writer gets a pool of its own: a tokio-postgres connection is driven by the
    /// thread that opened it, so the writer's connections are opened (lazily) on the
    /// writer's thread and its batches never wait for a busy HTTP worker to do their I/O.
    /// `probe_pool`: the database probes' own connection (see [`crate::db::health`]).
    pub fn start(
        pool: Pool,
        writer_pool: Pool,
        probe_pool: Pool,
        settings: &crate::config::Settings,
        cluster: Arc<crate::cluster::Cluster>,
    ) -> Self {
        let arbiters: Vec<Arbiter> = (0..settings.arbiter_count())
            .map(|_| Arbiter::new())
            .collect();
        let writer_arbiter = Arbiter::new();
        let health = Arc::new(crate::db::health::DbHealth::new(probe_pool));
        let writer_actor = OrderWriter::new(
            writer_pool.clone(),
            health.clone(),
            settings,
            cluster.clone(),
        );
        let writer = Mailbox::new(
            OrderWriter::start_in_arbiter(&writer_arbiter.handle(), |_| writer_actor),
            settings.mailbox_capacity,
            "writer",
        );
        mailbox::configure_deadlines(settings);
        let shared = Arc::new(Shared {
            pool,
            writer_pool,
            stock_series: AtomicUsize::new(0),
            writer,
            mailbox_capacity: settings.mailbox_capacity,
            work_budget: settings.work_budget(),
            health,
            queue_secret: settings
                .queue_secret
                .clone()
                .map(String::into_bytes)
                .unwrap_or_else(|| rand::random::<[u8; 32]>().to_vec()),
            missing: moka::sync::Cache::builder()
                .max_capacity(MISSING_CAPACITY)
                .time_to_live(MISSING_TTL)
                .build_with_hasher(Default::default()),
            creations: std::sync::atomic::AtomicU64::new(0),
            product_idle: settings.product_idle(),
            product_compact: settings.product_compact(),
            lookups: Arc::new(tokio::sync::Semaphore::new(lookup_permits(settings))),
            lookups_per_store: (lookup_permits(settings) / 2).max(1),
            cluster,
            arbiters: arbiters.iter().map(Arbiter::handle).collect(),
            next_arbiter: AtomicUsize::new(0),
        });
        let mut all = arbiters;
        all.push(writer_arbiter);
        Actors {
            shared,
            stores: RwLock::new(HashMap::new()),
            limits: RwLock::new(HashMap::new()),
            settings: settings.clone(),
            arbiters: all,
            dispatcher: None,
        }
    }

    /// Starts the webhook dispatcher on a thread of its own, with its own `pool` (like
    /// the writer's: its connections are driven by its thread).
    pub fn start_dispatcher(&mut self, pool: Pool) {
        let arbiter = Arbiter::new();
        let actor = dispatcher::Dispatcher::new(pool, &self.settings, self.shared.cluster.clone());
        let addr = dispatcher::Dispatcher::start_in_arbiter(&arbiter.handle(), |_| actor);
        self.arbiters.push(arbiter);
        self.dispatcher = Some(addr);
    }

    /// Makes the dispatcher look for due deliveries now; a full mailbox is fine (it is
    /// about to look anyway).
    pub fn wake_dispatcher(&self) {
        if let Some(d) = &self.dispatcher {
            // One long-lived address: actix's bound holds for it (unlike fresh clones).
            if d.try_send(dispatcher::Wake).is_ok() {
                crate::metrics::mailbox_depth("dispatcher").inc();
            }
        }
    }

    pub fn settings(&self) -> &crate::config::Settings {
        &self.settings
    }

    pub fn cluster(&self) -> &Arc<crate::cluster::Cluster> {
        &self.shared.cluster
    }

    pub fn pool(&self) -> &Pool {
        &self.shared.pool
    }

    /// Records both pools' use in the metrics.
    pub fn record_pools(&self) {
        crate::metrics::record_pool("main", &self.shared.pool);
        crate::metrics::record_pool("writer", &self.shared.writer_pool);
    }

    pub fn health(&self) -> &crate::db::health::DbHealth {
        &self.shared.health
    }

    pub fn health_handle(&self) -> Arc<crate::db::health::DbHealth> {
        self.shared.health.clone()
    }

    /// The rate limits of the store behind `grant` (made on first use, by its plan),
    /// this instance's share of them: made again whenever the number of live instances
    /// changed (the new share starts with a full burst).
    pub fn limits(&self, grant: &crate::db::stores::KeyGrant) -> Arc<limits::StoreLimits> {
        let instances = self.shared.cluster.live_instances();
        if let Some(l) = self.limits.read().expect("limits").get(&grant.store_id) {
            if l.instances() == instances {
                return l.clone();
            }
        }
        let mut all = self.limits.write().expect("limits");
        let entry = all.entry(grant.store_id.clone()).or_insert_with(|| {
            Arc::new(limits::StoreLimits::for_plan(
                &grant.plan,
                &self.settings,
                instances,
            ))
        });
        if entry.instances() != instances {
            *entry = Arc::new(limits::StoreLimits::for_plan(
                &grant.plan,
                &self.settings,
                instances,
            ));
        }
        entry.clone()
    }

    /// Lets the limiters forget idle buyers (bounded memory).
    pub fn forget_idle_limits(&self) {
        for l in self.limits.read().expect("limits").values() {
            l.forget_idle();
        }
    }

    /// `product_id` names a product of `store_id` from now on (created here or on
    /// another instance): no "missing" remembered for it stays, nor is one made by a
    /// lookup that raced the creation.
    pub fn product_created(&self, store_id: &str, product_id: &str) {
        self.shared.creations.fetch_add(1, Ordering::AcqRel);
        self.shared
            .missing
            .invalidate(&product::missing_key(store_id, product_id));
    }

    /// Forgets every id remembered as missing (the cache listener may have missed
    /// creations).
    pub fn forget_missing(&self) {
        self.shared.creations.fetch_add(1, Ordering::AcqRel);
        self.shared.missing.invalidate_all();
    }
}

impl Drop for Actors {
    /// Stops the arbiters, and with them every store and product actor (and so their
    /// pooled connections), when the application goes away.
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}
