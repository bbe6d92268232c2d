//! flashsale: a flash-sale checkout backend.
//!
//! Layout (a checkout's path is in `docs/ARCHITECTURE.md`):
//!
//! - [`config`]: every setting, from flags or the environment.
//! - [`startup`]: builds the application and runs it on a bound listener.
//! - [`http`]: routes, extractors (auth, bodies), the API error type, OpenAPI.
//! - [`actors`]: store actors, product actors (one per product, owning its stock) and the
//!   write-behind order writer.
//! - [`cluster`]: several instances on one database: membership, shard leases and
//!   fencing epochs, forwarding to a product's owner.
//! - [`db`]: the pool, migrations, SQL queries, and the private PostgreSQL.
//! - [`domain`]: validated types and the sale's rules, free of I/O.
//! - [`metrics`], [`telemetry`]: Prometheus metrics and logging.
//! - [`audit`]: the `flashsale audit ORDER_ID` command.

pub mod actors;
pub mod audit;
pub mod cluster;
pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod startup;
pub mod telemetry;

/// The in-process caches (API keys, idempotency results, listings):
/// moka, hashed with foldhash rather than SipHash. Every checkout and read hashes its
/// keys several times; foldhash is several times faster and still seeded per process, so
/// client-chosen keys (idempotency keys) cannot be aimed at one bucket.
pub type Cache<K, V> = moka::sync::Cache<K, V, foldhash::fast::RandomState>;

/// The same, for values loaded by async code: `try_get_with` lets the requests that miss
/// with one key at the same time share one load.
pub type FutureCache<K, V> = moka::future::Cache<K, V, foldhash::fast::RandomState>;
