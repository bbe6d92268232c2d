//! PostgreSQL: the pool, migrations, and the queries, one module per table group.
//! Queries are plain SQL over a client so that what runs is what you read.

pub mod batch;
pub mod cluster;
pub mod embedded;
pub mod health;
pub mod orders;
pub mod products;
pub mod replica;
pub mod stores;
pub mod webhooks;

use std::future::Future;

use crate::actors::mailbox::Deadline;
use crate::metrics::DEADLINE_DROPS;

use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

pub type Pool = deadpool_postgres::Pool;

/// How long a request waits for a pooled connection before it gives up with 503.
const POOL_WAIT: Duration = Duration::from_secs(2);

mod embedded_migrations {
    refinery::embed_migrations!("migrations");
}

/// A pool of `size` connections to `url`, without session deadlines (migrations, the
/// command line). Connections are made lazily.
pub fn create_pool(url: &str, size: usize) -> anyhow::Result<Pool> {
    let config: tokio_postgres::Config = url.parse().context("Failed to parse the database URL")?;
    pool_from_config(config, size)
}

/// The connection settings of the serving pools: `statement_timeout`, `lock_timeout`
/// and `idle_in_transaction_session_timeout` in the startup packet (no extra round
/// trip), and TCP keepalives. PostgreSQL gives up on a statement before the request's
/// deadline, so an answer of 503 unavailable means the change was rolled back.
pub fn serving_config(
    url: &str,
    settings: &crate::config::Settings,
) -> anyhow::Result<tokio_postgres::Config> {
    let config = session_config(url, settings)?;
    if let Some(host) = config.get_hosts().first() {
        let address = match host {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        crate::telemetry::set_db_server(address, port);
    }
    Ok(config)
}

/// [`serving_config`]'s session settings alone (the replica's pool: the spans name the
/// primary).
pub fn session_config(
    url: &str,
    settings: &crate::config::Settings,
) -> anyhow::Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config =
        url.parse().context("Failed to parse the database URL")?;
    let options = match config.get_options() {
        Some(own) if !own.is_empty() => format!("{own} {}", settings.db_session_options()),
        _ => settings.db_session_options(),
    };
    config
        .options(&options)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(settings.db_keepalive_secs.max(1)))
        .connect_timeout(POOL_WAIT);
    Ok(config)
}

/// A serving pool of `size` connections (see [`serving_config`]).
pub fn create_serving_pool(
    url: &str,
    size: usize,
    settings: &crate::config::Settings,
) -> anyhow::Result<Pool> {
    pool_from_config(serving_config(url, settings)?, size)
}

fn pool_from_config(config: tokio_postgres::Config, size: usize) -> anyhow::Result<Pool> {
    pool_waiting(config, size, POOL_WAIT)
}

/// A pool whose requests wait at most `wait` for a connection (and for each step of
/// making one).
fn pool_waiting(
    config: tokio_postgres::Config,
    size: usize,
    wait: Duration,
) -> anyhow::Result<Pool> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait))
        .recycle_timeout(Some(wait))
        .build()
        .context("Failed to build the connection pool")
}

/// Applies the SQL migrations in `migrations/` that have not run yet.
pub async fn migrate(pool: &Pool) -> anyhow::Result<()> {
    let mut conn = pool
        .get()
        .await
        .context("Failed to connect to PostgreSQL")?;
    let client: &mut tokio_postgres::Client = &mut conn;
    let report = embedded_migrations::migrations::runner()
        .run_async(client)
        .await
        .context("Failed to apply migrations")?;
    for m in report.applied_migrations() {
        tracing::info!(migration = %m, "applied migration");
    }
    Ok(())
}

/// Creates database `name` on the server at `admin_url` unless it exists.
pub async fn ensure_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(admin_url, NoTls)
        .await
        .context("Failed to connect to PostgreSQL")?;
    let conn = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        // Identifiers cannot be bound parameters; `name` is ours, quoted anyway.
        client
            .batch_execute(&format!(
                "CREATE DATABASE \"{}\"",
                name.replace('"', "\"\"")
            ))
            .await?;
    }
    drop(client);
    let _ = conn.await;
    Ok(())
}

/// An error as operators need it in a log line: PostgreSQL's SQLSTATE and message when
/// the server answered (tokio-postgres shows only "db error"), else the client's error.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// The name of the constraint a statement broke, if it broke one.
pub fn violated_constraint(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().and_then(|db| db.constraint())
}

/// Why a single-statement write under a deadline was not made, or may have been.
#[derive(Debug)]
pub enum WriteError {
    /// Certainly not made: no connection in time, the deadline passed before it was sent,
    /// or PostgreSQL refused the statement (which then rolled back).
    NotMade(Option<tokio_postgres::Error>),
    /// Sent, but the answer was lost (connection dropped, or no answer in time): it may
    /// or may not have been made.
    Unknown,
}

/// Runs one autocommit write on a connection from `pool`, bounded by `deadline`: it is
/// not sent once the time to start has passed, and it is given up (as
/// [`WriteError::Unknown`]) when the answer is due.
pub async fn write_by<T, F, Fut>(pool: &Pool, deadline: Deadline, write: F) -> Result<T, WriteError>
where
    F: FnOnce(deadpool_postgres::Client) -> Fut,
    Fut: Future<Output = Result<T, tokio_postgres::Error>>,
{
    let client = connection_by(pool, deadline).await?;
    match tokio::time::timeout(deadline.left(), write(client)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) if e.as_db_error().is_some() => {
            tracing::warn!(error = %e, "write refused by the database");
            Err(WriteError::NotMade(Some(e)))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "write lost on the way");
            Err(WriteError::Unknown)
        }
        Err(_) => Err(WriteError::Unknown),
    }
}

/// A connection for a write that must start before `deadline`: none in time, or the
/// time to start gone once there is one, is [`WriteError::NotMade`] (nothing was sent).
async fn connection_by(
    pool: &Pool,
    deadline: Deadline,
) -> Result<deadpool_postgres::Client, WriteError> {
    let client = match tokio::time::timeout(deadline.left(), pool.get()).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "no database connection");
            return Err(WriteError::NotMade(None));
        }
        Err(_) => return Err(WriteError::NotMade(None)),
    };
    if deadline.passed() {
        DEADLINE_DROPS
            .with_label_values(&["database", "deadline"])
            .inc();
        return Err(WriteError::NotMade(None));
    }
    Ok(client)
}

/// The work of one fenced write: statements on the transaction it is given.
pub type FencedWork<'t, T> =
    futures_util::future::LocalBoxFuture<'t, Result<T, tokio_postgres::Error>>;

/// Runs one write of a shard's owner in its own transaction, fenced on the shard's
/// epoch ([`cluster::fence`], the transaction's first statement, pipelined with the
/// write), bounded by `deadline` like [`write_by`]: a refusal (the fence's included) or
/// any failure before COMMIT was sent is [`WriteError::NotMade`]; a COMMIT whose answer
/// was lost is [`WriteError::Unknown`].
pub async fn write_fenced<T, F>(
    pool: &Pool,
    deadline: Deadline,
    fence: cluster::Fence,
    write: F,
) -> Result<T, WriteError>
where
    F: for<'t> FnOnce(&'t tokio_postgres::Transaction<'t>) -> FencedWork<'t, T>,
{
    let mut client = connection_by(pool, deadline).await?;
    let commit_sent = std::cell::Cell::new(false);
    let work = async {
        let tx = client.transaction().await?;
        let inner: &tokio_postgres::Transaction<'_> = &tx;
        let fences = [fence];
        let (fenced, written) = futures_util::join!(cluster::fence(inner, &fences), write(inner));
        fenced?;
        let value = written?;
        commit_sent.set(true);
        tx.commit().await?;
        Ok::<_, tokio_postgres::Error>(value)
    };
    let result = tokio::time::timeout(deadline.left(), work).await;
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e))
            if !commit_sent.get()
                || e.as_db_error()
                    .is_some_and(|d| !matches!(d.severity(), "FATAL" | "PANIC")) =>
        {
            if cluster::is_fenced(&e) {
                crate::metrics::CLUSTER_FENCED
                    .with_label_values(&["write"])
                    .inc();
            }
            tracing::warn!(error = %e, "write not made");
            Err(WriteError::NotMade(Some(e)))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "write lost on the way");
            Err(WriteError::Unknown)
        }
        Err(_) => {
            // Maybe mid-transaction: the connection must not serve anyone else.
            drop(deadpool_postgres::Object::take(client));
            if commit_sent.get() {
                Err(WriteError::Unknown)
            } else {
                Err(WriteError::NotMade(None))
            }
        }
    }
}
