//! The `flashsale` binary: settings, database (given or private), serve.

use std::io::Write;

use clap::Parser;
use flashsale::config::{Command, Settings};
use flashsale::db::embedded::{Durability, EmbeddedPostgres};
use flashsale::domain::ids::new_operator_token;
use flashsale::startup::Application;
use flashsale::{audit, db, telemetry};

/// A checkout allocates and frees many small objects across threads (request, order,
/// batch, reply); mimalloc's per-thread free lists serve that with less contention than
/// glibc's arenas (measured with loadtests/bench.sh, see README's Performance section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    // Kept to the end: dropping it flushes the spans still buffered for the exporter.
    let _telemetry = telemetry::init("info");
    let settings = Settings::parse();
    if let Some(Command::Audit { order_id }) = &settings.command {
        return audit::run(&settings, order_id, &mut std::io::stdout()).await;
    }
    if let Some(Command::HaproxyMap(args)) = &settings.command {
        let Some(token) = &settings.admin_token else {
            anyhow::bail!(
                "haproxy-map reads the cluster as the operator: set FLASHSALE_ADMIN_TOKEN"
            );
        };
        return flashsale::cluster::haproxy_map::run(token, args).await;
    }
    let admin_token = settings.admin_token.clone().unwrap_or_else(|| {
        let token = new_operator_token();
        println!("operator token (FLASHSALE_ADMIN_TOKEN was not set): {token}");
        token
    });

    let replica_set = settings
        .replica_url
        .as_deref()
        .is_some_and(|u| !u.is_empty());
    if settings.database_url.is_none() && replica_set {
        anyhow::bail!(
            "DATABASE_REPLICA_URL needs DATABASE_URL: the private PostgreSQL has no replica"
        );
    }
    let mut private_db = None;
    let database_url = match &settings.database_url {
        Some(url) => url.clone(),
        None => {
            let pg = start_private(&settings).await?;
            let url = pg.url("flashsale");
            private_db = Some(pg);
            url
        }
    };

    let app = Application::build(&settings, &database_url, &admin_token).await?;
    println!("flashsale listening on http://{}", app.address());
    let served = app.run_until_stopped().await;
    if let Some(pg) = private_db {
        tokio::task::spawn_blocking(move || pg.stop()).await?;
    }
    served?;
    // Whoever reads our stdout may be gone by now; that is no reason to fail.
    let _ = writeln!(std::io::stdout(), "flashsale stopped");
    Ok(())
}

/// The private PostgreSQL, started, with the `flashsale` database in it.
async fn start_private(settings: &Settings) -> anyhow::Result<EmbeddedPostgres> {
    let dir = settings.data_dir.clone();
    let pg =
        tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, Durability::Durable))
            .await??;
    println!(
        "started a private PostgreSQL; data in {}",
        pg.root().display()
    );
    db::ensure_database(&pg.url("postgres"), "flashsale").await?;
    Ok(pg)
}
