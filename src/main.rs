//! The `flashsale` binary: settings, database (given or private), serve.

use clap::Parser;
use flashsale::config::Settings;
use flashsale::db::embedded::{Durability, EmbeddedPostgres};
use flashsale::domain::ids::new_id;
use flashsale::startup::Application;
use flashsale::{db, telemetry};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init("info");
    let settings = Settings::parse();
    let admin_token = settings.admin_token.clone().unwrap_or_else(|| {
        let token = new_id("op");
        println!("operator token (FLASHSALE_ADMIN_TOKEN was not set): {token}");
        token
    });

    let mut private_db = None;
    let database_url = match &settings.database_url {
        Some(url) => url.clone(),
        None => {
            let dir = settings.data_dir.clone();
            let pg = tokio::task::spawn_blocking(move || {
                EmbeddedPostgres::start(&dir, Durability::Durable)
            })
            .await??;
            println!(
                "started a private PostgreSQL; data in {}",
                pg.root().display()
            );
            db::ensure_database(&pg.url("postgres"), "flashsale").await?;
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
    println!("flashsale stopped");
    Ok(())
}
