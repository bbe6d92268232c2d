//! The HTTP surface: routes, extractors, errors. Handlers validate, then talk to actors
//! (products, checkout) or to PostgreSQL directly (stores, order reads).

pub mod auth;
pub mod body;
pub mod checkout;
mod checkout_body;
pub mod client_addr;
pub mod cluster;
pub mod docs;
pub mod errors;
pub mod junk;
pub mod observe;
pub mod openapi;
pub mod openapi_responses;
pub mod ops;
pub mod orders;
pub mod products;
pub mod query;
pub mod queue;
mod recent_keys;
pub mod routing;
pub mod stores;
pub mod webhooks;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::Compress;
use actix_web::web;
use actix_web::HttpMessage;
use tokio::sync::oneshot;

use crate::actors::{Actors, Failure};
use crate::db::stores::KeyGrant;
use crate::db::Pool;
use errors::ApiError;

/// How much longer than the request deadline a request waits for an actor's answer: the
/// actors answer by the deadline, this is only the net under it.
const ANSWER_GRACE: Duration = Duration::from_millis(200);

/// How long a request waits for an actor's answer.
pub fn actor_timeout() -> Duration {
    crate::actors::mailbox::request_deadline() + ANSWER_GRACE
}
/// How long an API key lookup (or a miss) is remembered.
const KEY_CACHE_TTL: Duration = Duration::from_secs(60);
/// How long a finished key lookup is shared with requests that missed the cache with it.
const KEY_LOAD_TTL: Duration = Duration::from_secs(1);
/// How long an idempotency result is kept in memory (the database keeps orders' keys
/// for good).
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// An idempotency key's result, kept once this process replayed it (a key in flight is
/// known to its product actor, a committed one to the database).
#[derive(Debug)]
pub enum Idempotency {
    /// Answered: the fingerprint, and the response to send again.
    Done {
        request_hash: [u8; 32],
        status: u16,
        content_type: &'static str,
        /// Shared, so that a replay sends it without a copy.
        body: actix_web::web::Bytes,
    },
}

/// How long a rendered listing page is reused: its advertised max-age.
pub const LISTING_TTL: Duration = Duration::from_secs(1);

/// What every handler shares.
pub struct AppState {
    pub pool: Pool,
    pub actors: Actors,
    /// SHA-256 of the operator token.
    pub admin_token_hash: [u8; 32],
    /// Key hash → grant (or `None`: no such key), for `KEY_CACHE_TTL`.
    pub keys: crate::Cache<[u8; 32], Option<Arc<KeyGrant>>>,
    /// Key lookups in the database, by key hash, kept for `KEY_LOAD_TTL`: concurrent
    /// misses on one key share one query (`try_get_with`). All buyers of a store use its
    /// storefront key, so a drop that opens on a cold cache would otherwise send one
    /// query per buyer, and queue them for the pool's connections.
    pub key_loads: crate::FutureCache<[u8; 32], Option<Arc<KeyGrant>>>,
    /// Bounds the key lookups running at once (a quarter of the pool), so that a flood
    /// of unknown keys cannot take every connection.
    pub key_lookups: tokio::sync::Semaphore,
    /// `store_id \x1f key` → result.
    pub idempotency: crate::Cache<String, Arc<Idempotency>>,
    pub body_limit: usize,
    /// Rendered listing pages (`generation \x1f store \x1f kind?query` → JSON), kept
    /// for the max-age they advertise; concurrent misses on one page share one rendering.
    pub listings: crate::FutureCache<String, actix_web::web::Bytes>,
    /// Each store's catalog generation, bumped by every catalog write of that store
    /// (create, PATCH, restock): a listing rendered before it is never served after it,
    /// and no store's write discards another's listings. Only a store's admin key writes
    /// its catalog, so this holds one entry per store that ever wrote.
    pub catalog_generations: std::sync::RwLock<foldhash::HashMap<Arc<str>, u64>>,
    /// Requests in flight now, and where shedding starts (see `observe::admit`).
    pub in_flight: std::sync::atomic::AtomicUsize,
    pub max_in_flight: usize,
    /// Set once migrations ran; `/readyz` also asks the database.
    pub ready: AtomicBool,
    /// Peers whose forwarded-for header names the client (`FLASHSALE_TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// SHA-256 of `FLASHSALE_METRICS_TOKEN`; `None`: `/metrics` is open.
    pub metrics_token_hash: Option<[u8; 32]>,
    /// The read replica (`DATABASE_REPLICA_URL`), if there is one.
    pub replica: Option<Arc<crate::db::replica::Replica>>,
}

impl AppState {
    pub fn new(
        pool: Pool,
        actors: Actors,
        admin_token: &str,
        settings: &crate::config::Settings,
    ) -> Self {
        AppState {
            pool,
            actors,
            admin_token_hash: crate::domain::ids::hash_secret(admin_token),
            keys: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(KEY_CACHE_TTL)
                .build_with_hasher(Default::default()),
            key_loads: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(KEY_LOAD_TTL)
                .build_with_hasher(Default::default()),
            key_lookups: tokio::sync::Semaphore::new((settings.db_pool_size / 4).max(1)),
            idempotency: moka::sync::Cache::builder()
                .max_capacity(settings.idempotency_cache)
                .time_to_live(IDEMPOTENCY_TTL)
                .build_with_hasher(Default::default()),
            body_limit: settings.body_limit,
            listings: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(LISTING_TTL)
                .build_with_hasher(Default::default()),
            catalog_generations: Default::default(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            max_in_flight: settings.max_in_flight,
            ready: AtomicBool::new(false),
            trusted_proxies: settings.trusted_proxies.clone(),
            metrics_token_hash: settings
                .metrics_token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(crate::domain::ids::hash_secret),
            replica: None,
        }
    }

    /// Runs a read that the replica may serve (see [`crate::db::replica`]).
    pub async fn read<T, F, Fut>(
        &self,
        reader: crate::db::replica::Reader<'_>,
        read: F,
    ) -> Result<T, ApiError>
    where
        F: Fn(deadpool_postgres::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        crate::db::replica::read(&self.pool, self.replica.as_deref(), reader, read)
            .await
            .map_err(ApiError::from)
    }

    /// [`AppState::read`] of one row, which the replica may not have yet.
    pub async fn read_found<T, F, Fut>(
        &self,
        reader: crate::db::replica::Reader<'_>,
        read: F,
    ) -> Result<Option<T>, ApiError>
    where
        F: Fn(deadpool_postgres::Client) -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, tokio_postgres::Error>>,
    {
        crate::db::replica::read_found(&self.pool, self.replica.as_deref(), reader, read)
            .await
            .map_err(ApiError::from)
    }
}

/// `cache`'s value for `key`, made by `load` if it is not there. Requests that miss with
/// the same key at the same time share one `load` and all get its result (or its error);
/// only the one whose `load` ran counts as a miss of the cache `name`.
pub async fn load_shared<K, V>(
    cache: &crate::FutureCache<K, V>,
    name: &str,
    key: K,
    load: impl std::future::Future<Output = Result<V, ApiError>>,
) -> Result<V, ApiError>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let loaded = std::cell::Cell::new(false);
    let value = cache
        .try_get_with(key, async {
            loaded.set(true);
            load.await
        })
        .await
        .map_err(|e| ApiError::clone(&e));
    crate::metrics::cache_lookup(name, !loaded.get());
    value
}

/// The buyer's address of `req` (see [`client_addr`]).
pub fn buyer_addr(req: &actix_web::HttpRequest, state: &AppState) -> Option<String> {
    // Forwarded by another instance (proven by the cluster's secret): its word.
    if let Some(via) = req.extensions().get::<crate::cluster::forward::Via>() {
        return via.client_addr.clone();
    }
    client_addr::client_addr(req, &state.trusted_proxies)
}

/// Sends a request about `product_id` on to the product's owner when that is another
/// instance (see [`crate::cluster::forward`]): `Some(its answer)`, or `None` to serve
/// it here (the request then holds a [`crate::cluster::Ticket`] in its extensions, so
/// that the product's shard is not handed over before it is answered). `body`: the
/// request body as received (validated JSON, sent on as is).
pub async fn forward_if_elsewhere(
    req: &actix_web::HttpRequest,
    state: &AppState,
    product_id: &str,
    body: Option<&serde_json::Value>,
) -> Result<Option<actix_web::HttpResponse>, ApiError> {
    // Here already (the common case): nothing to copy.
    if admit_here(req, state, product_id) {
        return Ok(None);
    }
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap_or_default())
        .unwrap_or_default();
    forward(req, state, product_id, bytes.into()).await
}

/// [`forward_if_elsewhere`] for a body kept as the client sent it.
pub async fn forward_raw_if_elsewhere(
    req: &actix_web::HttpRequest,
    state: &AppState,
    product_id: &str,
    body: &[u8],
) -> Result<Option<actix_web::HttpResponse>, ApiError> {
    if admit_here(req, state, product_id) {
        return Ok(None);
    }
    forward(req, state, product_id, web::Bytes::copy_from_slice(body)).await
}

/// Whether `req` may be served here about `product_id`: it holds a ticket for the
/// product's shard already (placed by its path), or gets one now.
fn admit_here(req: &actix_web::HttpRequest, state: &AppState, product_id: &str) -> bool {
    if req
        .extensions()
        .get::<crate::cluster::Ticket>()
        .is_some_and(|t| t.covers(product_id))
    {
        return true;
    }
    match state.actors.cluster().admit(product_id) {
        Some(ticket) => {
            req.extensions_mut().insert(ticket);
            true
        }
        None => false,
    }
}

async fn forward(
    req: &actix_web::HttpRequest,
    state: &AppState,
    product_id: &str,
    body: web::Bytes,
) -> Result<Option<actix_web::HttpResponse>, ApiError> {
    let via = req
        .extensions()
        .get::<crate::cluster::forward::Via>()
        .cloned();
    let addr = buyer_addr(req, state);
    // Boxed: the forwarding's future is kilobytes, and inline it would be part of every
    // handler's future that may forward, moved on every request, forwarded or not.
    let cluster = state.actors.cluster();
    let served =
        Box::pin(cluster.serve_elsewhere(req, product_id, body, via.as_ref(), addr)).await?;
    match served {
        crate::cluster::forward::Served::There(answer) => Ok(Some(answer)),
        crate::cluster::forward::Served::Here(ticket) => {
            req.extensions_mut().insert(ticket);
            Ok(None)
        }
    }
}

/// Sends a message that changes nothing built around a reply channel and waits
/// (bounded) for the answer.
pub async fn ask<T>(send: impl FnOnce(oneshot::Sender<Result<T, Failure>>)) -> Result<T, ApiError> {
    ask_bounded(send, ApiError::Unavailable).await
}

/// [`ask`] for a write: the actors answer every write by its deadline, so no answer in
/// time means nobody can say whether it was made (503 `outcome_unknown`).
pub async fn ask_write<T>(
    send: impl FnOnce(oneshot::Sender<Result<T, Failure>>),
) -> Result<T, ApiError> {
    let answer = ask_bounded(send, ApiError::OutcomeUnknown).await;
    if matches!(answer, Err(ApiError::OutcomeUnknown)) {
        tracing::warn!("no answer from the actors by the deadline");
    }
    answer
}

async fn ask_bounded<T>(
    send: impl FnOnce(oneshot::Sender<Result<T, Failure>>),
    late: ApiError,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    send(tx);
    match tokio::time::timeout(actor_timeout(), rx).await {
        Ok(Ok(answer)) => answer.map_err(ApiError::from),
        // The actor went away with the message unanswered (a failed load, a dropped
        // mail): nothing was done.
        Ok(Err(_)) => Err(ApiError::Unavailable),
        Err(_) => Err(late),
    }
}

/// Every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("", "/healthz").route(web::get().to(ops::healthz)))
        .service(resource("", "/readyz").route(web::get().to(ops::readyz)))
        .service(resource("", "/metrics").route(web::get().to(ops::metrics)))
        .service(
            // Routes are tried in order and each dynamic one costs a regex match: the hot
            // ones go first (checkout, then the product page and its stock, which the
            // front door serves itself when their id is plain: `products::HotRead`).
            web::scope(API)
                .service(resource(API, "/checkout").route(web::post().to(checkout::checkout)))
                .service(
                    resource(API, "/products/{id}/checkout")
                        .route(web::post().to(checkout::product_checkout)),
                )
                .service(
                    resource(API, PRODUCT)
                        .route(web::get().to(products::get_product))
                        .route(web::patch().to(products::patch_product)),
                )
                .service(resource(API, PRODUCT_STOCK).route(web::get().to(products::get_stock)))
                .service(
                    // Listings compress themselves, once per cached page.
                    resource(API, "/products")
                        .route(web::post().to(products::create_product))
                        .route(web::get().to(products::list_products)),
                )
                .service(resource(API, "/drops").route(web::get().to(products::drops)))
                .service(resource(API, "/openapi.json").route(web::get().to(openapi::openapi_json)))
                .service(resource(API, "/docs").route(web::get().to(docs::docs_page)))
                .service(resource(API, "/stores").route(web::post().to(stores::create_store)))
                .service(resource(API, "/stores/{id}").route(web::get().to(stores::get_store)))
                .service(resource(API, "/cluster").route(web::get().to(cluster::cluster)))
                .service(resource(API, "/products/{id}/queue").route(web::post().to(queue::join)))
                .service(
                    resource(API, "/products/{id}/queue/{ticket}")
                        .route(web::get().to(queue::status)),
                )
                .service(
                    resource(API, "/products/{id}/restock")
                        .route(web::post().to(products::restock_product)),
                )
                .service(
                    resource(API, "/orders")
                        .wrap(Compress::default())
                        .route(web::get().to(orders::list)),
                )
                .service(resource(API, "/orders/{id}").route(web::get().to(orders::get_order)))
                .service(
                    resource(API, "/orders/{id}/confirm").route(web::post().to(orders::confirm)),
                )
                .service(resource(API, "/orders/{id}/cancel").route(web::post().to(orders::cancel)))
                .configure(configure_webhooks),
        )
        .default_service(web::to(not_found));
}

/// The webhook routes (`webhooks.rs`).
fn configure_webhooks(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource(API, "/webhooks")
            .route(web::post().to(webhooks::create))
            .route(web::get().to(webhooks::list)),
    )
    .service(
        resource(API, "/webhooks/{id}")
            .route(web::get().to(webhooks::get))
            .route(web::patch().to(webhooks::patch))
            .route(web::delete().to(webhooks::delete)),
    )
    .service(
        resource(API, "/webhooks/{id}/rotate-secret")
            .route(web::post().to(webhooks::rotate_secret)),
    )
    .service(resource(API, "/webhooks/{id}/deliveries").route(web::get().to(webhooks::deliveries)))
    .service(
        resource(API, "/webhooks/{id}/deliveries/{delivery_id}/retry")
            .route(web::post().to(webhooks::retry)),
    )
    .service(resource(API, "/events").route(web::get().to(webhooks::events)));
}

const API: &str = "/api/v1";
/// The product page and its stock, also served by the front door (`products::HotRead`).
const PRODUCT: &str = "/products/{id}";
const PRODUCT_STOCK: &str = "/products/{id}/stock";

/// A resource's full pattern, kept as its data: the metrics label of the requests it
/// serves (asking actix for the matched pattern would match the path all over again).
#[derive(Debug, Clone)]
pub struct RouteLabel(pub Arc<str>);

/// A resource that knows its label and answers a method it does not serve with a 405.
fn resource(scope: &str, path: &str) -> actix_web::Resource {
    web::resource(path)
        .app_data(RouteLabel(Arc::from(format!("{scope}{path}"))))
        .default_service(web::to(|| async {
            Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed)
        }))
}

async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound("not_found", "no such resource"))
}
