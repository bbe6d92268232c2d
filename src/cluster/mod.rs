//! Several instances, one cluster: membership, shard leases and fencing epochs,
//! forwarding (docs/ARCHITECTURE.md, "Cluster").
//!
//! Ownership lives in PostgreSQL ([`crate::db::cluster`]); this is each instance's view
//! of it. Products map to [`shards::SHARDS`] shards; the membership loop
//! ([`membership`]) heartbeats, spreads the shards over the live instances by
//! rendezvous hashing, and claims, renews and releases leases. Actors ask the view who
//! owns a shard (and at what epoch, the fence their writes carry); it never reaches into
//! an actor's state: an actor whose shard is lost sees it through [`Cluster::watch`] and
//! stops itself.

pub mod forward;
pub mod haproxy_map;
pub mod membership;
pub mod notify;
pub mod shards;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

pub use crate::db::cluster::Fence;
use crate::db::cluster::Member;
pub use shards::{shard_of, SHARDS};

/// Where a request about a product is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Here: this instance owns the shard, at this fence.
    Local(Fence),
    /// By the owner at this URL.
    Forward(Arc<str>),
    /// Nobody holds the shard right now (it is moving): ask again shortly.
    Unsettled,
}

/// One shard as this instance sees it.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// Held here at this epoch, and believed held until then (the renewal that set it
    /// began `lease` before; the database's lease ends later).
    held: Option<(i64, Instant)>,
    /// Being handed over: still held (requests already served here finish under its
    /// epoch), but new ones wait for the new owner (see [`Cluster::admit`]).
    draining: bool,
    /// Held by another instance (its URL), as of the last round.
    elsewhere: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct View {
    slots: Vec<Slot>,
    members: Vec<Member>,
}

/// This instance's view of the cluster, shared by the HTTP workers and the actors.
pub struct Cluster {
    /// Random per process.
    pub id: String,
    /// `FLASHSALE_ADVERTISE_URL`: where the others reach us.
    pub url: String,
    pub lease: Duration,
    view: RwLock<View>,
    /// Bumped whenever a shard held here is lost or given up: actors look whether theirs
    /// is among them.
    losses: tokio::sync::watch::Sender<u64>,
    /// Every shard has a live holder in our view (`/readyz`).
    settled: AtomicBool,
    /// Settled at least once.
    joined: AtomicBool,
    /// Live members as of the last round (0 before the first): each enforces its share
    /// of a store's rate limits ([`Cluster::live_instances`]).
    live: AtomicUsize,
    /// Left the cluster (clean shutdown): no more rounds, so that a process whose server
    /// stopped never registers again.
    left: AtomicBool,
    /// Forwards requests to other instances (pooled keep-alive connections).
    pub forwarder: forward::Forwarder,
    /// The cluster's forwarding secret and its hash, once read from the database.
    pub secret: OnceLock<(String, [u8; 32])>,
    /// The database circuit breaker, once the actors run: while the database is away
    /// nobody can take a shard from us, so our pages are served from memory still.
    pub health: OnceLock<Arc<crate::db::health::DbHealth>>,
    /// The membership loop's connections (also for evicting a dead peer).
    pool: OnceLock<crate::db::Pool>,
    /// Wakes the membership loop for a round now (a peer was found dead, or another
    /// instance changed the membership or its leases).
    kick: tokio::sync::Notify,
    /// Requests being served here, by shard: a shard is handed over once its count is
    /// back to zero (their writes are committed or refused by then).
    tickets: Vec<AtomicUsize>,
}

/// A request served here about a product of `shard`: while it lives, the shard is not
/// released (bounded, see [`membership`]). Kept in the request's extensions, so it ends
/// with the request, after its answer (a 201 is committed by then).
pub struct Ticket {
    cluster: Arc<Cluster>,
    shard: usize,
}

impl Ticket {
    /// Whether this ticket admits requests about `product_id`.
    pub fn covers(&self, product_id: &str) -> bool {
        self.shard == shard_of(product_id)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.cluster.tickets[self.shard].fetch_sub(1, Ordering::SeqCst);
    }
}

impl Cluster {
    pub fn new(url: String, lease: Duration) -> Arc<Self> {
        Arc::new(Cluster {
            id: crate::domain::ids::new_id("ins"),
            url,
            lease,
            view: RwLock::new(View {
                slots: vec![Slot::default(); SHARDS],
                members: Vec::new(),
            }),
            losses: tokio::sync::watch::channel(0).0,
            settled: AtomicBool::new(false),
            joined: AtomicBool::new(false),
            live: AtomicUsize::new(0),
            left: AtomicBool::new(false),
            forwarder: forward::Forwarder::new(lease),
            secret: OnceLock::new(),
            health: OnceLock::new(),
            pool: OnceLock::new(),
            kick: tokio::sync::Notify::new(),
            tickets: (0..SHARDS).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    /// Where a request about `product_id` is served now.
    pub fn route(&self, product_id: &str) -> Route {
        self.route_shard(shard_of(product_id))
    }

    fn route_shard(&self, shard: usize) -> Route {
        let view = self.view.read().expect("cluster view");
        let slot = &view.slots[shard];
        match (&slot.held, &slot.elsewhere) {
            (Some((epoch, until)), _)
                if !slot.draining && (Instant::now() < *until || !self.db_up()) =>
            {
                Route::Local(Fence {
                    shard: shard as i32,
                    epoch: *epoch,
                })
            }
            (Some(_), _) => Route::Unsettled,
            (None, Some(url)) => Route::Forward(url.clone()),
            (None, None) => Route::Unsettled,
        }
    }

    /// A ticket to serve a request about `product_id` here, if its shard is held here
    /// and not being handed over. Counted before the view is read, so that a handover
    /// (which marks the shard draining, then waits for the count to fall to zero) either
    /// sees this request or this request sees the handover.
    pub fn admit(self: &Arc<Self>, product_id: &str) -> Option<Ticket> {
        let shard = shard_of(product_id);
        self.tickets[shard].fetch_add(1, Ordering::SeqCst);
        let ticket = Ticket {
            cluster: self.clone(),
            shard,
        };
        matches!(self.route_shard(shard), Route::Local(_)).then_some(ticket)
    }

    /// Requests being served here about products of `shard`.
    fn tickets_out(&self, shard: usize) -> usize {
        self.tickets[shard].load(Ordering::SeqCst)
    }

    fn db_up(&self) -> bool {
        self.health.get().is_none_or(|h| h.is_up())
    }

    /// Reads the cluster's forwarding secret (once), and keeps `pool` for the rounds.
    pub async fn load_secret(&self, pool: &crate::db::Pool) -> anyhow::Result<()> {
        let _ = self.pool.set(pool.clone());
        let client = pool.get().await?;
        let secret = crate::db::cluster::secret(&**client).await?;
        let hash = crate::domain::ids::hash_secret(&secret);
        let _ = self.secret.set((secret, hash));
        Ok(())
    }

    /// The peer at `url` refused a connection: nothing listens there, so it is dead.
    /// Its membership and leases end now (see [`crate::db::cluster::evict`]) and a
    /// round runs at once, instead of waiting out its lease.
    pub async fn evict(&self, url: &str) {
        let Some(pool) = self.pool.get() else { return };
        let evicted = async {
            let client = pool.get().await?;
            Ok::<_, anyhow::Error>(crate::db::cluster::evict(&**client, url).await?)
        };
        match evicted.await {
            Ok(n) if n > 0 => {
                tracing::warn!(peer = %url, "peer refuses connections; its shards are taken over");
                self.announce(pool).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(peer = %url, error = %e, "failed to evict a dead peer"),
        }
        self.kick.notify_one();
    }

    /// Another instance joined, left, claimed or released shards (heard over
    /// LISTEN/NOTIFY, [`notify`]): a round runs now, so that a handover does not wait
    /// for the next one on either side.
    pub fn changed_elsewhere(&self) {
        self.kick.notify_one();
    }

    /// The fence of `product_id`'s shard if this instance holds it now.
    pub fn fence_of(&self, product_id: &str) -> Option<Fence> {
        match self.route(product_id) {
            Route::Local(fence) => Some(fence),
            _ => None,
        }
    }

    /// The fence of `product_id`'s shard if this instance holds it, even past the local
    /// validity of its last renewal (a late round is no loss: the database fences any
    /// write made under an epoch that moved on). For starting an actor that a request
    /// already routed here, or a warm-up, asks for.
    pub fn held_fence(&self, product_id: &str) -> Option<Fence> {
        let shard = shard_of(product_id);
        let view = self.view.read().expect("cluster view");
        view.slots[shard].held.map(|(epoch, _)| Fence {
            shard: shard as i32,
            epoch,
        })
    }

    /// Whether this instance still holds `fence` (its epoch included).
    pub fn holds(&self, fence: Fence) -> bool {
        let view = self.view.read().expect("cluster view");
        view.slots
            .get(fence.shard as usize)
            .and_then(|s| s.held)
            .is_some_and(|(epoch, _)| epoch == fence.epoch)
    }

    /// Changes whenever a shard held here is lost or given up.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.losses.subscribe()
    }

    /// Whether every shard has a live holder in this instance's view.
    pub fn settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// Whether this instance has been settled once (it joined the cluster): `/readyz`.
    /// Not whether it is settled now: shards moving between live instances (one came or
    /// went) are no reason to take this one out of a load balancer.
    pub fn joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }

    /// The live members, and how many shards each held as of the last round.
    pub fn members(&self) -> Vec<(Member, usize)> {
        let view = self.view.read().expect("cluster view");
        view.members
            .iter()
            .map(|m| {
                let held = if m.id == self.id {
                    view.slots.iter().filter(|s| s.held.is_some()).count()
                } else {
                    view.slots
                        .iter()
                        .filter(|s| s.elsewhere.as_deref() == Some(m.url.as_str()))
                        .count()
                };
                (m.clone(), held)
            })
            .collect()
    }

    /// How many instances are live (this one included, so at least 1), as of the
    /// last round: a store's rate limits are shared out among them.
    pub fn live_instances(&self) -> usize {
        self.live.load(Ordering::Acquire).max(1)
    }

    /// Shards held here now.
    pub fn held_shards(&self) -> Vec<i32> {
        let view = self.view.read().expect("cluster view");
        (0..SHARDS)
            .filter(|&s| view.slots[s].held.is_some())
            .map(|s| s as i32)
            .collect()
    }
}
