//! Building and running the application: connect, migrate, seed, start the actors,
//! bind, serve. Binding happens here, not in `main`, so that tests can ask for port 0.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use anyhow::Context;

use crate::actors::Actors;
use crate::cluster::Cluster;
use crate::config::Settings;
use crate::db;
use crate::http::{self, AppState};

/// PostgreSQL connections of the webhook dispatcher (claims, and attempts recorded
/// concurrently).
const DISPATCHER_POOL_SIZE: usize = 4;
/// Connections of the membership loop (rounds, and a claim waiting on a fenced write).
const CLUSTER_POOL_SIZE: usize = 2;
/// How many leases long a starting instance waits at most for every shard to have a
/// holder (a dead process's leases lapse after one).
const SETTLE_LEASES: u32 = 3;
/// Seconds SIGTERM waits for requests in flight (and so their batches) to finish.
const SHUTDOWN_TIMEOUT_SECS: u64 = 30;

pub struct Application {
    address: SocketAddr,
    server: Server,
    cluster: std::sync::Arc<Cluster>,
    cluster_pool: db::Pool,
}

impl Application {
    /// Connects to `database_url`, migrates it, seeds a demo store into an empty database
    /// (if asked), starts the actors and binds `settings.listen`.
    pub async fn build(
        settings: &Settings,
        database_url: &str,
        admin_token: &str,
    ) -> anyhow::Result<Self> {
        crate::metrics::register_all();
        // Migrations run without the serving deadlines (a migration may take a while).
        db::migrate(&db::create_pool(database_url, 1)?).await?;
        let pool = db::create_serving_pool(database_url, settings.db_pool_size, settings)?;
        if settings.seed_demo {
            seed_demo(&pool).await?;
        }
        // Bound first: the address we advertise to the cluster is the one we listen on.
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("Failed to bind {}", settings.listen))?;
        let address = listener.local_addr()?;
        let url = settings
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{address}"));
        let cluster = Cluster::new(url, settings.lease());
        let cluster_pool = db::create_serving_pool(database_url, CLUSTER_POOL_SIZE, settings)?;
        cluster.load_secret(&cluster_pool).await?;
        // Our shards are ours before anything is served (a lone instance: after one
        // round); the loop goes on from there.
        cluster
            .settle(&cluster_pool, settings.lease() * SETTLE_LEASES)
            .await
            .context("Failed to join the cluster")?;
        let writer_pool =
            db::create_serving_pool(database_url, settings.batches_in_flight.max(1), settings)?;
        let probe_pool = db::create_serving_pool(database_url, 1, settings)?;
        let mut actors = Actors::start(
            pool.clone(),
            writer_pool,
            probe_pool,
            settings,
            cluster.clone(),
        );
        let _ = cluster.health.set(actors.health_handle());
        actors.start_dispatcher(db::create_serving_pool(
            database_url,
            DISPATCHER_POOL_SIZE,
            settings,
        )?);
        let mut state = AppState::new(pool.clone(), actors, admin_token, settings);
        state.replica = start_replica(settings, database_url)?;
        let state = web::Data::new(state);
        // Other instances' catalog writes reach our caches over LISTEN/NOTIFY.
        actix_web::rt::spawn(crate::cluster::notify::listen(
            db::session_config(database_url, settings)?,
            std::sync::Arc::downgrade(&state.clone().into_inner()),
        ));
        wake_products_with_holds(
            &pool,
            std::sync::Arc::downgrade(&state.clone().into_inner()),
        )
        .await?;
        let (claimed_tx, claimed_rx) = tokio::sync::mpsc::unbounded_channel();
        actix_web::rt::spawn(crate::cluster::membership::run(
            std::sync::Arc::downgrade(&cluster),
            cluster_pool.clone(),
            claimed_tx,
        ));
        actix_web::rt::spawn(arm_claimed_shards(
            pool.clone(),
            std::sync::Arc::downgrade(&state.clone().into_inner()),
            claimed_rx,
        ));
        let server = run(listener, state.clone(), settings.http_worker_count())?;
        // Migrated and bound: what we answer from now on is the truth.
        state.ready.store(true, Ordering::Release);
        let weak = std::sync::Arc::downgrade(&state.clone().into_inner());
        actix_web::rt::spawn(tick(weak, settings.warm_lead_secs));
        Ok(Application {
            address,
            server,
            cluster,
            cluster_pool,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops the server (tests; the binary stops on SIGTERM or Ctrl-C).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/Ctrl-C (or [`ServerHandle::stop`]); requests in flight finish
    /// first, and with them the batches carrying their orders.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        // Stopped cleanly: our shards go to the others now, not when their leases lapse.
        if let Err(e) = self.cluster.leave(&self.cluster_pool).await {
            tracing::warn!(error = %e, "failed to leave the cluster; its leases will lapse");
        }
        served
    }
}

/// The read replica, if `DATABASE_REPLICA_URL` names one, with its lag watched (on a
/// connection to the primary of its own).
fn start_replica(
    settings: &Settings,
    database_url: &str,
) -> anyhow::Result<Option<std::sync::Arc<db::replica::Replica>>> {
    let Some(url) = settings.replica_url.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let replica = std::sync::Arc::new(
        db::replica::Replica::new(url, settings).context("Failed to set up the read replica")?,
    );
    actix_web::rt::spawn(db::replica::watch(
        std::sync::Arc::downgrade(&replica),
        db::create_serving_pool(database_url, 1, settings)?,
    ));
    Ok(Some(replica))
}

/// The HTTP server on an already bound listener.
pub fn run(
    listener: TcpListener,
    state: web::Data<AppState>,
    workers: usize,
) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            // Shedding comes before anything else is spent on a request; every request,
            // shed ones included, is observed.
            .wrap(actix_web::middleware::from_fn(http::observe::front_door))
            .configure(http::configure)
    })
    .workers(workers)
    .backlog(4096)
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .listen(listener)?
    .run();
    Ok(server)
}

/// How often the database is probed (the circuit breaker).
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How often products about to go on sale are looked for.
const WARM_EVERY: Duration = Duration::from_secs(10);

/// Background duties, for as long as the application lives: probe the database every
/// second; every ten, load and render the products whose sale starts within the lead
/// time (cache warming).
async fn tick(state: std::sync::Weak<AppState>, warm_lead_secs: u64) {
    let mut probe = tokio::time::interval(PROBE_EVERY);
    let mut since_warm = WARM_EVERY;
    loop {
        probe.tick().await;
        let Some(state) = state.upgrade() else { return };
        let up = state.actors.health().probe().await;
        since_warm += PROBE_EVERY;
        if up && since_warm >= WARM_EVERY {
            since_warm = Duration::ZERO;
            state.actors.forget_idle_limits();
            if let Err(e) = warm_products(&state, warm_lead_secs).await {
                tracing::warn!(error = %e, "cache warming failed");
            }
        }
    }
}

async fn warm_products(state: &AppState, lead_secs: u64) -> anyhow::Result<()> {
    let client = state.pool.get().await?;
    let starting = db::products::starting_soon(&**client, lead_secs as i64).await?;
    start_products(&state.actors, starting);
    Ok(())
}

/// Starts the actors of products with payment holds pending, so that holds which lapsed
/// while the service was down are released now, and the others on time.
async fn wake_products_with_holds(
    pool: &db::Pool,
    state: std::sync::Weak<AppState>,
) -> anyhow::Result<()> {
    let client = pool
        .get()
        .await
        .context("Failed to connect to PostgreSQL")?;
    let products = db::orders::products_with_holds(&**client).await?;
    let Some(app) = state.upgrade() else {
        return Ok(());
    };
    let cluster = app.actors.cluster().clone();
    drop(app);
    // Only the products of our shards: their owners arm the others.
    for (store_id, product_id) in products
        .into_iter()
        .filter(|(_, p)| cluster.held_fence(p).is_some())
    {
        actix_web::rt::spawn(arm_product(state.clone(), store_id, product_id));
    }
    Ok(())
}

/// Arms the pending holds of the products of every shard claimed from now on (a
/// failover: the former owner's holds lapse on time here).
async fn arm_claimed_shards(
    pool: db::Pool,
    state: std::sync::Weak<AppState>,
    mut claimed: tokio::sync::mpsc::UnboundedReceiver<Vec<i32>>,
) {
    while claimed.recv().await.is_some() {
        while claimed.try_recv().is_ok() {}
        if let Err(e) = wake_products_with_holds(&pool, state.clone()).await {
            tracing::warn!(error = %e, "failed to arm the holds of claimed shards");
        }
    }
}

/// First and longest pause between tries to load a product with pending holds.
const ARM_PAUSE_MIN: Duration = Duration::from_millis(200);
const ARM_PAUSE_MAX: Duration = Duration::from_secs(10);

/// Loads a product with pending holds, trying again with backoff until it is loaded (or
/// gone), so that its holds are armed even when the first load fails.
async fn arm_product(state: std::sync::Weak<AppState>, store_id: String, product_id: String) {
    let mut pause = ARM_PAUSE_MIN;
    loop {
        let Some(app) = state.upgrade() else { return };
        let loaded = http::ask(|reply| {
            app.actors.to_product(
                &store_id,
                &product_id,
                crate::actors::product::ProductMsg::Read { reply },
            )
        })
        .await;
        drop(app);
        match loaded {
            Ok(_) | Err(http::errors::ApiError::NotFound(..)) => return,
            Err(e) => {
                tracing::warn!(product.id = %product_id, error = %e, "product with pending holds not loaded; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ARM_PAUSE_MAX);
            }
        }
    }
}

/// Starts (loads and renders) the actors of these (store, product) pairs ahead of need.
fn start_products(actors: &Actors, products: Vec<(String, String)>) {
    for (store_id, product_id) in products {
        actors.to_product(
            &store_id,
            &product_id,
            crate::actors::product::ProductMsg::Warm,
        );
    }
}

/// On a database without stores, creates "Demo Store" and prints its keys (shown once).
async fn seed_demo(pool: &db::Pool) -> anyhow::Result<()> {
    let mut client = pool
        .get()
        .await
        .context("Failed to connect to PostgreSQL")?;
    if db::stores::count_stores(&**client).await? > 0 {
        return Ok(());
    }
    let (store, keys) = db::stores::insert_store(&mut client, "Demo Store", "pro").await?;
    println!(
        "seeded the demo store {} — its keys are shown only now:",
        store.id
    );
    println!("  admin key:      {}", keys.admin);
    println!("  storefront key: {}", keys.storefront);
    Ok(())
}
