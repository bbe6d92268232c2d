//! The cluster's tables (migration V14): membership, shard leases, and the fence every
//! write transaction of an owner starts with. Times are the database's (`now()`), so
//! the instances' clocks never have to agree.

use tokio_postgres::GenericClient;

/// The SQLSTATE `cluster_fence` raises when a shard's epoch moved on.
pub const FENCED: &str = "FS001";

/// A shard and the epoch its owner holds it at: what a write is conditioned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fence {
    pub shard: i32,
    pub epoch: i64,
}

/// Refuses the transaction `client` is in unless every shard of `fences` is still held
/// at its epoch; holds their shared fence locks until it ends (see `cluster_fence` in
/// migrations/V15). Called first in every write transaction of an owner. Duplicates
/// are fine.
pub async fn fence(
    client: &impl GenericClient,
    fences: &[Fence],
) -> Result<(), tokio_postgres::Error> {
    fence_with(client, FENCE, fences).await
}

/// The fence's statement, for a caller that prepares it once per connection (the order
/// writer: unprepared, each batch paid a parse and a round trip for it).
pub const FENCE: &str = "SELECT cluster_fence($1, $2)";

/// [`fence`] with `statement`: [`FENCE`] or the statement prepared from it.
pub async fn fence_with<S>(
    client: &impl GenericClient,
    statement: &S,
    fences: &[Fence],
) -> Result<(), tokio_postgres::Error>
where
    S: tokio_postgres::ToStatement + Sync + Send + ?Sized,
{
    let mut fences = fences.to_vec();
    fences.sort_unstable();
    fences.dedup();
    let shards: Vec<i32> = fences.iter().map(|f| f.shard).collect();
    let epochs: Vec<i64> = fences.iter().map(|f| f.epoch).collect();
    client.execute(statement, &[&shards, &epochs]).await?;
    Ok(())
}

/// Whether an error is the fence's refusal.
pub fn is_fenced(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|d| d.code().code() == FENCED)
}

/// Joins (or heartbeats in) the cluster for `lease_ms` more. `supersede`: first
/// registration of this process; another registration with the same URL can only be a
/// dead process's (the address is ours now), so it is removed and its shards freed at
/// once, instead of lapsing after a lease (a restart on the same address does not wait).
pub async fn heartbeat(
    client: &impl GenericClient,
    id: &str,
    url: &str,
    lease_ms: i64,
    supersede: bool,
    owned: (i32, i32),
) -> Result<(), tokio_postgres::Error> {
    if supersede {
        client
            .execute(
                "WITH gone AS (
                    DELETE FROM cluster_instances WHERE url = $2 AND id <> $1 RETURNING id
                 )
                 UPDATE shard_leases SET expires_at = '-infinity'
                 WHERE owner IN (SELECT id FROM gone)",
                &[&id, &url],
            )
            .await?;
    }
    client
        .execute(
            "INSERT INTO cluster_instances (id, url, expires_at, products_owned, shards_owned)
             VALUES ($1, $2, now() + $3 * interval '1 millisecond', $4, $5)
             ON CONFLICT (id) DO UPDATE
             SET last_seen = now(), expires_at = EXCLUDED.expires_at, url = EXCLUDED.url,
                 products_owned = EXCLUDED.products_owned, shards_owned = EXCLUDED.shards_owned",
            &[&id, &url, &(lease_ms as f64), &owned.0, &owned.1],
        )
        .await?;
    Ok(())
}

/// A live member of the cluster.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub url: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub last_seen: chrono::DateTime<chrono::Utc>,
    /// Product actors it ran at its last heartbeat.
    pub products_owned: i32,
}

/// The instances whose membership has not lapsed (and, by the way, forgets the rows of
/// those gone for a minute).
pub async fn live_members(
    client: &impl GenericClient,
) -> Result<Vec<Member>, tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM cluster_instances WHERE expires_at < now() - interval '1 minute'",
            &[],
        )
        .await?;
    let rows = client
        .query(
            "SELECT id, url, started_at, last_seen, products_owned FROM cluster_instances
             WHERE expires_at > now() ORDER BY started_at, id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Member {
            id: r.get(0),
            url: r.get(1),
            started_at: r.get(2),
            last_seen: r.get(3),
            products_owned: r.get(4),
        })
        .collect())
}

/// One shard's lease as the database has it now.
#[derive(Debug, Clone)]
pub struct Lease {
    pub shard: i32,
    pub owner: Option<String>,
    pub owner_url: Option<String>,
    pub epoch: i64,
    /// Unexpired now.
    pub valid: bool,
}

pub async fn leases(client: &impl GenericClient) -> Result<Vec<Lease>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT shard, owner, owner_url, epoch, expires_at > now() FROM shard_leases",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Lease {
            shard: r.get(0),
            owner: r.get(1),
            owner_url: r.get(2),
            epoch: r.get(3),
            valid: r.get(4),
        })
        .collect())
}

/// Renews the leases `id` still holds among `shards` (a lapsed one too: nobody claimed
/// it, so its epoch, and the state loaded under it, is still good). Returns those
/// renewed; any other is lost.
pub async fn renew(
    client: &impl GenericClient,
    id: &str,
    shards: &[i32],
    lease_ms: i64,
) -> Result<Vec<Fence>, tokio_postgres::Error> {
    let rows = client
        .query(
            "UPDATE shard_leases SET expires_at = now() + $3 * interval '1 millisecond'
             WHERE owner = $1 AND shard = ANY($2)
             RETURNING shard, epoch",
            &[&id, &shards, &(lease_ms as f64)],
        )
        .await?;
    Ok(rows.iter().map(fence_from_row).collect())
}

/// Claims those of `shards` whose lease is free or lapsed, bumping their epoch (the
/// claim waits for writes fenced under the old epoch to finish). Returns those claimed.
pub async fn claim(
    client: &impl GenericClient,
    id: &str,
    url: &str,
    shards: &[i32],
    lease_ms: i64,
) -> Result<Vec<Fence>, tokio_postgres::Error> {
    // cluster_claim (migration V15) takes each claimable shard's exclusive fence lock
    // first: the claim waits for the writes fenced under the old epoch.
    let rows = client
        .query(
            "SELECT shard, epoch FROM cluster_claim($1, $2, $3, $4)",
            &[&id, &url, &shards, &(lease_ms as f64)],
        )
        .await?;
    Ok(rows.iter().map(fence_from_row).collect())
}

/// The channel on which an instance tells the others that it joined, left, claimed or
/// released shards (payload: its id), so that they run a round at once
/// ([`crate::cluster::notify`]).
pub const CHANNEL: &str = "flashsale_cluster";

/// Tells every listening instance that `id` changed the membership or its leases.
pub async fn announce(client: &impl GenericClient, id: &str) -> Result<(), tokio_postgres::Error> {
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &id])
        .await?;
    Ok(())
}

/// Gives up `shards` at once (their actors are stopped already), so that their new
/// owner need not wait for the lease to lapse.
pub async fn release(
    client: &impl GenericClient,
    id: &str,
    shards: &[i32],
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE shard_leases SET expires_at = '-infinity' WHERE owner = $1 AND shard = ANY($2)",
            &[&id, &shards],
        )
        .await?;
    Ok(())
}

/// Leaves the cluster (clean shutdown): every lease freed, the membership ended.
pub async fn leave(client: &impl GenericClient, id: &str) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE shard_leases SET expires_at = '-infinity' WHERE owner = $1",
            &[&id],
        )
        .await?;
    client
        .execute("DELETE FROM cluster_instances WHERE id = $1", &[&id])
        .await?;
    Ok(())
}

fn fence_from_row(r: &tokio_postgres::Row) -> Fence {
    Fence {
        shard: r.get(0),
        epoch: r.get(1),
    }
}

/// The cluster's forwarding secret (migration V14).
pub async fn secret(client: &impl GenericClient) -> Result<String, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT secret FROM cluster_secret", &[])
        .await?
        .get(0))
}

/// Ends the membership of the instance at `url` and frees its shards at once: it
/// refused a connection, so nothing listens there (a dead process). Safe even if it
/// were alive: a claim bumps the epoch, and its writes are fenced from then on.
pub async fn evict(client: &impl GenericClient, url: &str) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "WITH gone AS (
                UPDATE cluster_instances SET expires_at = now()
                WHERE url = $1 AND expires_at > now() RETURNING id
             )
             UPDATE shard_leases SET expires_at = '-infinity'
             WHERE owner IN (SELECT id FROM gone)",
            &[&url],
        )
        .await
}
