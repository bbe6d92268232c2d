//! PostgreSQL: the pool, migrations, and the queries, one module per table group.
//! Queries are plain SQL over a client so that what runs is what you read.

pub mod embedded;
pub mod health;
pub mod orders;
pub mod products;
pub mod stores;
pub mod webhooks;

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

/// A pool of `size` connections to `url`. Connections are made lazily.
pub fn create_pool(url: &str, size: usize) -> anyhow::Result<Pool> {
    let config: tokio_postgres::Config = url.parse().context("Failed to parse the database URL")?;
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
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT))
        .recycle_timeout(Some(POOL_WAIT))
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

/// The name of the constraint a statement broke, if it broke one.
pub fn violated_constraint(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().and_then(|db| db.constraint())
}
