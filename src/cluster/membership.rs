//! The membership loop: one round every quarter lease (heartbeat, live members, then
//! renew, give up, claim), the way Quartz clusters check in. Each round is a few short
//! statements on the loop's own connection, all timed by the database's clock.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shards::{rendezvous, SHARDS};
use super::{Cluster, Slot};
use crate::db::{self, Pool};
use crate::metrics::{CLUSTER_LEASES, CLUSTER_SHARDS_OWNED};

/// How often a handover looks whether the requests being served are answered.
const DRAIN_POLL: Duration = Duration::from_millis(5);
/// How often a starting instance looks whether the shards it is to hold are free.
const SETTLE_POLL: Duration = Duration::from_millis(50);

/// What changed for this instance in a round.
#[derive(Debug, Default)]
pub struct Round {
    /// Shards claimed now (their products' actors may start; pending holds need arming).
    pub claimed: Vec<i32>,
    /// Shards this instance is to hold that another still holds after the round (their
    /// owner is handing them over, or is gone and its lease not over yet).
    pub awaited: usize,
}

impl Cluster {
    /// How often a round runs: a quarter of the lease, so that a renewal can fail twice
    /// and still land before the lease ends (at least every 50 ms, at most every 1 s).
    pub fn round_every(&self) -> Duration {
        (self.lease / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// One round of membership and leases. `first`: this process's first, which also
    /// supersedes a registration under our URL (only a dead process can have had it).
    pub async fn run_round(&self, pool: &Pool, first: bool) -> anyhow::Result<Round> {
        if self.left.load(Ordering::Acquire) {
            return Ok(Round::default());
        }
        let client = pool.get().await?;
        let lease_ms = self.lease.as_millis() as i64;
        let began = Instant::now();
        let products = crate::metrics::PRODUCT_ACTORS_GAUGE.get() as i32;
        let shards = self.held_shards().len() as i32;
        db::cluster::heartbeat(
            &**client,
            &self.id,
            &self.url,
            lease_ms,
            first,
            (products, shards),
        )
        .await?;
        let members = db::cluster::live_members(&**client).await?;
        let urls: Vec<&str> = members.iter().map(|m| m.url.as_str()).collect();
        let me = members.iter().position(|m| m.id == self.id);
        let wanted: BTreeSet<i32> = (0..SHARDS)
            .filter(|&s| me.is_some() && rendezvous(&urls, s) == me)
            .map(|s| s as i32)
            .collect();
        let held: BTreeSet<i32> = self.held_shards().into_iter().collect();

        let keep: Vec<i32> = held.intersection(&wanted).copied().collect();
        let renewed = db::cluster::renew(&**client, &self.id, &keep, lease_ms).await?;
        let until = began + self.lease;
        let lost: Vec<i32> = keep
            .iter()
            .copied()
            .filter(|s| !renewed.iter().any(|f| f.shard == *s))
            .collect();
        if !lost.is_empty() {
            tracing::warn!(
                shards.lost = lost.len(),
                "shard leases lost to another instance"
            );
            self.drop_shards(&lost, "lost");
        }
        CLUSTER_LEASES
            .with_label_values(&["renewed"])
            .inc_by(renewed.len() as u64);
        // Shards that belong elsewhere now (after the renewals, which the wait below must
        // not delay): new requests wait for the new owner, those being served here
        // finish, then the actors stop and the leases are freed, so that the new owner
        // claims at once and loads state that holds every write made here.
        let give: Vec<i32> = held.difference(&wanted).copied().collect();
        if !give.is_empty() {
            self.drain(&give).await;
            self.drop_shards(&give, "released");
            db::cluster::release(&**client, &self.id, &give).await?;
        }
        let want: Vec<i32> = wanted
            .iter()
            .copied()
            .filter(|s| !renewed.iter().any(|f| f.shard == *s))
            .collect();
        let claimed = if want.is_empty() {
            Vec::new()
        } else {
            db::cluster::claim(&**client, &self.id, &self.url, &want, lease_ms).await?
        };
        CLUSTER_LEASES
            .with_label_values(&["claimed"])
            .inc_by(claimed.len() as u64);
        // Joined, gave or took: the others look now (claims are seen by every instance's
        // next round; this makes it the next few milliseconds).
        if !give.is_empty() || !claimed.is_empty() {
            tracing::info!(
                shards.released = give.len(),
                shards.claimed = claimed.len(),
                "shard leases moved"
            );
        }
        if first || !give.is_empty() || !claimed.is_empty() {
            if let Err(e) = db::cluster::announce(&**client, &self.id).await {
                tracing::warn!(error = %e, "failed to announce a membership change");
            }
        }
        let leases = db::cluster::leases(&**client).await?;
        {
            let mut view = self.view.write().expect("cluster view");
            for f in renewed.iter().chain(claimed.iter()) {
                view.slots[f.shard as usize].held = Some((f.epoch, until));
            }
            for lease in &leases {
                let slot: &mut Slot = &mut view.slots[lease.shard as usize];
                slot.elsewhere = match (&lease.owner, &lease.owner_url) {
                    (Some(owner), Some(url)) if lease.valid && *owner != self.id => {
                        Some(Arc::from(url.as_str()))
                    }
                    _ => None,
                };
            }
            self.live.store(members.len(), Ordering::Release);
            view.members = members;
            let settled = view
                .slots
                .iter()
                .all(|s| s.held.is_some() || s.elsewhere.is_some());
            self.settled.store(settled, Ordering::Release);
            if settled {
                self.joined.store(true, Ordering::Release);
            }
            let owned = view.slots.iter().filter(|s| s.held.is_some()).count();
            CLUSTER_SHARDS_OWNED.set(owned as i64);
        }
        let awaited = wanted.len().saturating_sub(renewed.len() + claimed.len());
        Ok(Round {
            claimed: claimed.iter().map(|f| f.shard).collect(),
            awaited,
        })
    }

    /// Marks `shards` as being handed over (no new request is served here) and waits
    /// until the requests being served here are answered: at most a quarter lease, so
    /// that the new owner is not kept waiting by a stuck one (whose write, if any, the
    /// fence refuses once the new owner claims: a 503 that did nothing).
    async fn drain(&self, shards: &[i32]) {
        {
            let mut view = self.view.write().expect("cluster view");
            for &s in shards {
                view.slots[s as usize].draining = true;
            }
        }
        let until = Instant::now() + self.lease / 4;
        let began = Instant::now();
        while shards.iter().any(|&s| self.tickets_out(s as usize) > 0) && Instant::now() < until {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let out: usize = shards.iter().map(|&s| self.tickets_out(s as usize)).sum();
        tracing::info!(
            requests.unanswered = out,
            drained.ms = began.elapsed().as_millis() as u64,
            "shards drained for their handover"
        );
    }

    /// Forgets `shards` here and tells the actors (each stops if its shard is among them).
    fn drop_shards(&self, shards: &[i32], why: &str) {
        {
            let mut view = self.view.write().expect("cluster view");
            for &s in shards {
                let slot = &mut view.slots[s as usize];
                slot.held = None;
                slot.draining = false;
            }
        }
        CLUSTER_LEASES
            .with_label_values(&[why])
            .inc_by(shards.len() as u64);
        self.losses.send_modify(|n| *n += 1);
    }

    /// Rounds until every shard has a holder (bounded: at most `patience`), so that a
    /// process reports ready only once its shards are its own. A lone instance on a
    /// fresh database is settled after its first round; after a kill -9, it waits until
    /// the dead process's leases lapse (unless it had our address: superseded at once).
    pub async fn settle(&self, pool: &Pool, patience: Duration) -> anyhow::Result<Round> {
        let until = Instant::now() + patience;
        let mut all = self.run_round(pool, true).await?;
        // A registration whose address refuses connections is a dead process's (after
        // a kill -9 and a restart elsewhere): its shards are ours at once.
        if self.evict_dead_peers().await {
            let round = self.run_round(pool, false).await?;
            all.claimed.extend(round.claimed);
            all.awaited = round.awaited;
        }
        // Quick rounds: the shards we are to hold are claimable as soon as their
        // owners hear of us (see `announce`), finish what they serve and give them up
        // (within a quarter lease). Joining a running cluster, we wait for that too (up
        // to a lease), so that we serve from the moment the others forward to us.
        let handed_by = Instant::now() + self.lease;
        let mut awaited = all.awaited;
        while (!self.settled() || (awaited > 0 && Instant::now() < handed_by))
            && Instant::now() < until
        {
            tokio::time::sleep(SETTLE_POLL).await;
            let round = self.run_round(pool, false).await?;
            all.claimed.extend(round.claimed);
            awaited = round.awaited;
        }
        all.awaited = awaited;
        Ok(all)
    }

    /// Tries a connection to every other live member; those refused are evicted.
    /// Returns whether any was.
    async fn evict_dead_peers(&self) -> bool {
        let peers: Vec<String> = self
            .members()
            .into_iter()
            .filter(|(m, _)| m.id != self.id)
            .map(|(m, _)| m.url)
            .collect();
        let mut evicted = false;
        for url in peers {
            if super::forward::refuses_connections(&url).await {
                self.evict(&url).await;
                evicted = true;
            }
        }
        evicted
    }

    /// Tells the other instances that the membership or our leases changed (best
    /// effort: they find out in their next round anyway).
    pub(super) async fn announce(&self, pool: &Pool) {
        let told = async {
            let client = pool.get().await?;
            Ok::<_, anyhow::Error>(db::cluster::announce(&**client, &self.id).await?)
        };
        if let Err(e) = told.await {
            tracing::warn!(error = %e, "failed to announce a membership change");
        }
    }

    /// Leaves the cluster on a clean shutdown: shards freed for the others at once.
    pub async fn leave(&self, pool: &Pool) -> anyhow::Result<()> {
        self.left.store(true, Ordering::Release);
        let all = self.held_shards();
        self.drop_shards(&all, "released");
        let client = pool.get().await?;
        db::cluster::leave(&**client, &self.id).await?;
        self.announce(pool).await;
        Ok(())
    }
}

/// Runs rounds for as long as the cluster lives; `claimed` hears of every shard claimed.
/// A round that fails (database away) is logged and tried again on time: leases held
/// stay held in the database until they lapse, and our view stops serving them locally
/// once they would have (see [`super::Cluster::route`]).
pub async fn run(
    cluster: std::sync::Weak<Cluster>,
    pool: Pool,
    claimed: tokio::sync::mpsc::UnboundedSender<Vec<i32>>,
) {
    loop {
        let Some(c) = cluster.upgrade() else { return };
        if c.left.load(Ordering::Acquire) {
            return;
        }
        let every = c.round_every();
        match c.run_round(&pool, false).await {
            Ok(round) if !round.claimed.is_empty() => {
                if claimed.send(round.claimed).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cluster round failed"),
        }
        // Sooner while shards are moving (a handover finishes within a few rounds).
        let every = if c.settled() { every } else { every / 3 };
        let c2 = c.clone();
        drop(c);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = c2.kick.notified() => {}
        }
        drop(c2);
    }
}
