//! Settings, read once at start from the command line or the environment.
//!
//! Every setting has a flag and an environment variable; `flashsale --help` lists them all
//! with their defaults. The variables read are:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `FLASHSALE_LISTEN` | `127.0.0.1:8080` | address to serve HTTP on |
//! | `DATABASE_URL` | unset | PostgreSQL to use; unset: a private server is started |
//! | `FLASHSALE_DATA_DIR` | `.flashsale` | where the private PostgreSQL keeps its data |
//! | `FLASHSALE_ADMIN_TOKEN` | generated | the operator token |
//! | `FLASHSALE_DB_POOL_SIZE` | 16 | PostgreSQL connections in the pool |
//! | `FLASHSALE_BATCH_MAX` | 512 | orders per write-behind transaction, at most |
//! | `FLASHSALE_BATCH_LINGER_MS` | 2 | how long a batch waits to fill before it is written |
//! | `FLASHSALE_BATCHES_IN_FLIGHT` | 4 | batches being committed at once, at most, by the whole cluster (each of N live instances: this ÷ N, at least 1); beside one in flight another starts only when a quarter of a full batch waits or the oldest order has waited 10 ms |
//! | `FLASHSALE_MAILBOX_CAPACITY` | 4096 | bounded mailbox size of every actor |
//! | `FLASHSALE_ARBITERS` | cores | threads that host store and product actors |
//! | `FLASHSALE_HTTP_WORKERS` | cores | actix-web worker threads |
//! | `FLASHSALE_BODY_LIMIT` | 65536 | largest accepted request body, bytes |
//! | `FLASHSALE_IDEMPOTENCY_CACHE` | 1000000 | idempotency results kept in memory |
//! | `FLASHSALE_SEED_DEMO` | true | seed a demo store into an empty database |
//! | `FLASHSALE_WARM_LEAD_SECS` | 60 | products whose sale starts this soon are loaded ahead |
//! | `FLASHSALE_RATE_FREE` | 20 | requests/s a free store may make (0: unlimited) |
//! | `FLASHSALE_RATE_PRO` | 500 | requests/s a pro store may make |
//! | `FLASHSALE_RATE_ENTERPRISE` | 0 | requests/s an enterprise store may make (0: unlimited) |
//! | `FLASHSALE_RATE_PER_KEY` | 0 | requests/s per API key (0: off) |
//! | `FLASHSALE_CHECKOUT_RATE_PER_CUSTOMER` | 5 | checkouts/s per customer (free, pro) |
//! | `FLASHSALE_CHECKOUT_RATE_PER_ADDRESS` | 100 | checkouts/s per client address (free, pro) |
//! | `FLASHSALE_MAX_IN_FLIGHT` | 4096 | requests in flight before load is shed by priority |
//! | `FLASHSALE_QUEUE_SECRET` | random | signs waiting-room admission tokens |
//! | `FLASHSALE_TRUSTED_PROXIES` | none | CIDRs whose `X-Forwarded-For`/`Forwarded` is believed |
//! | `FLASHSALE_METRICS_TOKEN` | unset | when set, `/metrics` requires `Authorization: Bearer <it>` |
//! | `FLASHSALE_REQUEST_DEADLINE_MS` | 10000 | every actor-served request is answered within it |
//! | `FLASHSALE_DB_STATEMENT_TIMEOUT_MS` | 4000 | PostgreSQL `statement_timeout` of every connection |
//! | `FLASHSALE_DB_LOCK_TIMEOUT_MS` | 3500 | PostgreSQL `lock_timeout` of every connection |
//! | `FLASHSALE_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS` | 5000 | PostgreSQL `idle_in_transaction_session_timeout` |
//! | `FLASHSALE_DB_KEEPALIVE_SECS` | 10 | TCP keepalive idle time of every database connection |
//! | `FLASHSALE_PRODUCT_IDLE_SECS` | 60 | an idle product actor passivates after this (0: never) |
//! | `FLASHSALE_WEBHOOK_RETRY_SCHEDULE` | `5,300,1800,7200,18000,36000,36000` | seconds between webhook attempts (±20 % jitter) |
//! | `FLASHSALE_WEBHOOK_DISABLE_AFTER_HOURS` | 120 | an endpoint failing every attempt this long is disabled |
//! | `FLASHSALE_WEBHOOK_ALLOW_NETS` | none | CIDRs webhook URLs may reach although loopback or private |
//! | `FLASHSALE_WEBHOOK_MAX_PER_STORE` | 16 | webhook endpoints a store may have |
//! | `FLASHSALE_WEBHOOK_RETENTION_DAYS` | 30 | how long events and deliveries are kept (`/events`) |
//! | `FLASHSALE_WEBHOOK_TIMEOUT_MS` | 10000 | how long a delivery waits for its 2xx |
//! | `FLASHSALE_ADVERTISE_URL` | `http://` + listen address | where the other instances of a cluster reach this one |
//! | `FLASHSALE_LEASE_SECS` | 3 | how long shard ownership lasts without renewal |
//! | `DATABASE_REPLICA_URL` | unset | a streaming replica of `DATABASE_URL` for listings, order and event reads |
//! | `FLASHSALE_REPLICA_MAX_LAG_MS` | 1000 | a replica further behind than this is not read from |
//! | `RUST_LOG` | `info` | log filter |
//!
//! and the OpenTelemetry variables listed in [`ENVIRONMENT_HELP`] (read by `telemetry.rs`
//! and by the OpenTelemetry SDK and OTLP exporter themselves).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = ".flashsale";
pub const DEFAULT_POOL_SIZE: usize = 16;
pub const DEFAULT_BATCH_MAX: usize = 512;
pub const DEFAULT_BATCH_LINGER_MS: u64 = 2;
pub const DEFAULT_BATCHES_IN_FLIGHT: usize = 4;
pub const DEFAULT_MAILBOX_CAPACITY: usize = 4096;
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
pub const DEFAULT_IDEMPOTENCY_CACHE: u64 = 1_000_000;
pub const DEFAULT_WARM_LEAD_SECS: u64 = 60;
pub const DEFAULT_PRODUCT_IDLE_SECS: u64 = 60;
pub const DEFAULT_PRODUCT_COMPACT_SECS: u64 = 10;
pub const DEFAULT_REQUEST_DEADLINE_MS: u64 = 10_000;
pub const DEFAULT_DB_STATEMENT_TIMEOUT_MS: u64 = 4_000;
pub const DEFAULT_DB_LOCK_TIMEOUT_MS: u64 = 3_500;
pub const DEFAULT_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_DB_KEEPALIVE_SECS: u64 = 10;
/// Slack kept between the end of the database work budget and the answer deadline.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);
pub const DEFAULT_WEBHOOK_RETRY_SCHEDULE: &str = "5,300,1800,7200,18000,36000,36000";
pub const DEFAULT_WEBHOOK_DISABLE_AFTER_HOURS: f64 = 120.0;
pub const DEFAULT_WEBHOOK_MAX_PER_STORE: usize = 16;
pub const DEFAULT_WEBHOOK_RETENTION_DAYS: f64 = 30.0;
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_LEASE_SECS: u64 = 3;
/// The listings' max-age: a listing read from the replica is no older than one served
/// from the listing cache.
pub const DEFAULT_REPLICA_MAX_LAG_MS: u64 = 1_000;
/// Seconds a client is told to wait after a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

/// What `--help` says after the flags: the variables read by the logging and tracing
/// set-up rather than by clap, so that an operator finds them where the others are.
pub const ENVIRONMENT_HELP: &str = "\
Also read from the environment (logs and traces):
  RUST_LOG                            log filter, default `info` (e.g. `warn,flashsale=debug`)
  OTEL_EXPORTER_OTLP_ENDPOINT         export traces over OTLP/HTTP (protobuf) to this collector,
                                      e.g. http://localhost:4318; unset (and the next one unset):
                                      no tracing at all
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  the same, as the full traces URL (…/v1/traces)
  OTEL_SDK_DISABLED                   `true`: no tracing even with an endpoint set
  OTEL_SERVICE_NAME                   service name on every span, default `flashsale`
  OTEL_RESOURCE_ATTRIBUTES            more resource attributes, `key=value,…`
  OTEL_EXPORTER_OTLP_HEADERS          headers sent with every export, `key=value,…`
                                      (OTEL_EXPORTER_OTLP_TRACES_HEADERS: traces only)
  OTEL_EXPORTER_OTLP_TIMEOUT          export timeout in ms, default 10000
                                      (OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: traces only)
  OTEL_TRACES_SAMPLER                 sampler, default `parentbased_always_on`
                                      (OTEL_TRACES_SAMPLER_ARG: its argument, e.g. a ratio)
  OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
  OTEL_BSP_EXPORT_TIMEOUT             the batch span processor's delay (ms), queue, batch, timeout
  OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT, OTEL_SPAN_EVENT_COUNT_LIMIT, OTEL_SPAN_LINK_COUNT_LIMIT
                                      per-span limits, default 128 each

`flashsale audit ORDER_ID` reads DATABASE_URL, else the private PostgreSQL under
--data-dir (the running server's, or its stopped cluster); it never creates one.";

/// Flash-sale checkout backend. Every flag also reads from the environment variable shown.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "flashsale", version, about, after_help = ENVIRONMENT_HELP)]
pub struct Settings {
    /// Address to serve HTTP on.
    #[arg(long, env = "FLASHSALE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// PostgreSQL connection URL. Unset: start a private PostgreSQL from the machine's
    /// server binaries, with its data under --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Folder for the private PostgreSQL's data (used only without DATABASE_URL).
    #[arg(long, env = "FLASHSALE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Operator token (creates and reads stores). Unset: one is generated and printed.
    #[arg(long, env = "FLASHSALE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// PostgreSQL connections in the pool.
    #[arg(long, env = "FLASHSALE_DB_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE)]
    pub db_pool_size: usize,

    /// Orders written per write-behind transaction, at most.
    #[arg(long, env = "FLASHSALE_BATCH_MAX", default_value_t = DEFAULT_BATCH_MAX)]
    pub batch_max: usize,

    /// Milliseconds a batch waits to fill before it is written.
    #[arg(long, env = "FLASHSALE_BATCH_LINGER_MS", default_value_t = DEFAULT_BATCH_LINGER_MS)]
    pub batch_linger_ms: u64,

    /// Write-behind batches being committed at once, at most, by the whole cluster: each
    /// of N live instances commits at most this ÷ N (at least 1).
    #[arg(long, env = "FLASHSALE_BATCHES_IN_FLIGHT", default_value_t = DEFAULT_BATCHES_IN_FLIGHT)]
    pub batches_in_flight: usize,

    /// Capacity of every actor's bounded mailbox; a full mailbox answers 503 overloaded.
    #[arg(long, env = "FLASHSALE_MAILBOX_CAPACITY", default_value_t = DEFAULT_MAILBOX_CAPACITY)]
    pub mailbox_capacity: usize,

    /// Threads (arbiters) hosting store and product actors. Default: one per core.
    #[arg(long, env = "FLASHSALE_ARBITERS")]
    pub arbiters: Option<usize>,

    /// actix-web worker threads. Default: one per core.
    #[arg(long, env = "FLASHSALE_HTTP_WORKERS")]
    pub http_workers: Option<usize>,

    /// Largest accepted request body in bytes; larger: 413 payload_too_large.
    #[arg(long, env = "FLASHSALE_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,

    /// Idempotency results kept in memory (older ones are found in PostgreSQL).
    #[arg(long, env = "FLASHSALE_IDEMPOTENCY_CACHE", default_value_t = DEFAULT_IDEMPOTENCY_CACHE)]
    pub idempotency_cache: u64,

    /// Seconds before a sale starts at which its product is loaded and rendered, so that
    /// the first second of a drop reads no database.
    #[arg(long, env = "FLASHSALE_WARM_LEAD_SECS", default_value_t = DEFAULT_WARM_LEAD_SECS)]
    pub warm_lead_secs: u64,

    /// Requests per second a `free` store may make (0: unlimited).
    #[arg(long, env = "FLASHSALE_RATE_FREE", default_value_t = 20)]
    pub rate_free: u32,

    /// Requests per second a `pro` store may make (0: unlimited).
    #[arg(long, env = "FLASHSALE_RATE_PRO", default_value_t = 500)]
    pub rate_pro: u32,

    /// Requests per second an `enterprise` store may make (0: unlimited, and no per-buyer
    /// limits either).
    #[arg(long, env = "FLASHSALE_RATE_ENTERPRISE", default_value_t = 0)]
    pub rate_enterprise: u32,

    /// Requests per second per API key (0: off; the store's limit still applies).
    #[arg(long, env = "FLASHSALE_RATE_PER_KEY", default_value_t = 0)]
    pub rate_per_key: u32,

    /// Checkouts per second per customer id (free and pro stores; 0: off).
    #[arg(
        long,
        env = "FLASHSALE_CHECKOUT_RATE_PER_CUSTOMER",
        default_value_t = 5
    )]
    pub checkout_rate_per_customer: u32,

    /// Checkouts per second per client address (free and pro stores; 0: off).
    #[arg(
        long,
        env = "FLASHSALE_CHECKOUT_RATE_PER_ADDRESS",
        default_value_t = 100
    )]
    pub checkout_rate_per_address: u32,

    /// Requests in flight at which load is shed, by priority: browsing from half of it,
    /// checkouts from 80 %, confirm and cancel only beyond it.
    #[arg(long, env = "FLASHSALE_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,

    /// Secret that signs waiting-room tokens (set it when several instances serve one
    /// store). Unset: a random one per process, so tokens do not outlive a restart.
    #[arg(long, env = "FLASHSALE_QUEUE_SECRET", hide_env_values = true)]
    pub queue_secret: Option<String>,

    /// Proxies (comma-separated CIDRs, e.g. `127.0.0.1/32,10.0.0.0/8`) whose
    /// `X-Forwarded-For` / `Forwarded` header names the client: from them, the buyer's
    /// address for rate limits and consent records is the header's. Default: none (the
    /// peer's address is the client's).
    #[arg(long, env = "FLASHSALE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// When set, `/metrics` answers only `Authorization: Bearer <this token>` (401
    /// otherwise): it lists every store's products and their stock. Unset: open.
    #[arg(long, env = "FLASHSALE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Milliseconds within which every request served by the actors (checkout, restock,
    /// PATCH, confirm, cancel, reads) is answered. Work not started in time is not
    /// started at all (503 unavailable: nothing was done).
    #[arg(long, env = "FLASHSALE_REQUEST_DEADLINE_MS", default_value_t = DEFAULT_REQUEST_DEADLINE_MS)]
    pub request_deadline_ms: u64,

    /// PostgreSQL `statement_timeout` (ms) on every connection: the database gives up on
    /// a statement before the request's deadline, so a 503 means rolled back.
    #[arg(long, env = "FLASHSALE_DB_STATEMENT_TIMEOUT_MS", default_value_t = DEFAULT_DB_STATEMENT_TIMEOUT_MS)]
    pub db_statement_timeout_ms: u64,

    /// PostgreSQL `lock_timeout` (ms) on every connection: a row held by another session
    /// fails the write fast instead of holding the batch.
    #[arg(long, env = "FLASHSALE_DB_LOCK_TIMEOUT_MS", default_value_t = DEFAULT_DB_LOCK_TIMEOUT_MS)]
    pub db_lock_timeout_ms: u64,

    /// PostgreSQL `idle_in_transaction_session_timeout` (ms) on every connection: a
    /// transaction left open by a lost client ends (rolled back) by itself.
    #[arg(long, env = "FLASHSALE_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", default_value_t = DEFAULT_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS)]
    pub db_idle_in_transaction_timeout_ms: u64,

    /// TCP keepalive idle time (s) of every database connection, so that a dead peer is
    /// noticed.
    #[arg(long, env = "FLASHSALE_DB_KEEPALIVE_SECS", default_value_t = DEFAULT_DB_KEEPALIVE_SECS)]
    pub db_keepalive_secs: u64,

    /// Seconds after which an idle product actor (no request, no read of its page, no
    /// payment hold, nobody queued) stops and frees its memory; the next request loads it
    /// again from PostgreSQL. At least twice the work budget. 0: never.
    #[arg(long, env = "FLASHSALE_PRODUCT_IDLE_SECS", default_value_t = DEFAULT_PRODUCT_IDLE_SECS)]
    pub product_idle_secs: u64,

    /// Seconds after which an idle product actor (as above) stops but leaves its
    /// published page and sold-out gate in memory: reads are still served from memory,
    /// and only the next write or checkout loads it from PostgreSQL. At least twice the
    /// work budget. 0: never (the actor stays until FLASHSALE_PRODUCT_IDLE_SECS).
    #[arg(long, env = "FLASHSALE_PRODUCT_COMPACT_SECS", default_value_t = DEFAULT_PRODUCT_COMPACT_SECS)]
    pub product_compact_secs: u64,

    /// Seconds between webhook delivery attempts, comma-separated; each is jittered by
    /// ±20 %, and after the last failed attempt the delivery is `failed`.
    #[arg(long, env = "FLASHSALE_WEBHOOK_RETRY_SCHEDULE", default_value = DEFAULT_WEBHOOK_RETRY_SCHEDULE,
          value_parser = crate::domain::webhook::RetrySchedule::parse)]
    pub webhook_retry_schedule: crate::domain::webhook::RetrySchedule,

    /// Hours a webhook endpoint may fail every attempt before it is disabled.
    #[arg(long, env = "FLASHSALE_WEBHOOK_DISABLE_AFTER_HOURS", default_value_t = DEFAULT_WEBHOOK_DISABLE_AFTER_HOURS)]
    pub webhook_disable_after_hours: f64,

    /// CIDRs (comma-separated) that webhook URLs may reach although they are loopback,
    /// private, link-local or unique-local (default: none).
    #[arg(long, env = "FLASHSALE_WEBHOOK_ALLOW_NETS", value_delimiter = ',')]
    pub webhook_allow_nets: Vec<ipnet::IpNet>,

    /// Webhook endpoints a store may have; one more is 409 webhook_limit_reached.
    #[arg(long, env = "FLASHSALE_WEBHOOK_MAX_PER_STORE", default_value_t = DEFAULT_WEBHOOK_MAX_PER_STORE)]
    pub webhook_max_per_store: usize,

    /// Days events and finished deliveries are kept (what GET /api/v1/events can show).
    #[arg(long, env = "FLASHSALE_WEBHOOK_RETENTION_DAYS", default_value_t = DEFAULT_WEBHOOK_RETENTION_DAYS)]
    pub webhook_retention_days: f64,

    /// Milliseconds a webhook delivery waits for its answer before it counts as failed.
    #[arg(long, env = "FLASHSALE_WEBHOOK_TIMEOUT_MS", default_value_t = DEFAULT_WEBHOOK_TIMEOUT_MS)]
    pub webhook_timeout_ms: u64,

    /// Where the other instances of the cluster reach this one (forwarded requests).
    /// Unset: `http://` + the address actually listened on.
    #[arg(long, env = "FLASHSALE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// How long an instance's membership and shard ownership last without renewal; a
    /// dead instance's products are taken over within twice this.
    #[arg(long, env = "FLASHSALE_LEASE_SECS", default_value_t = DEFAULT_LEASE_SECS)]
    pub lease_secs: u64,

    /// A streaming replica (hot standby) of DATABASE_URL: listings, the drop calendar,
    /// order and event reads go to it while it is within FLASHSALE_REPLICA_MAX_LAG_MS
    /// (else, and for a caller's own recent writes, to the primary). Needs DATABASE_URL.
    #[arg(long, env = "DATABASE_REPLICA_URL", hide_env_values = true)]
    pub replica_url: Option<String>,

    /// Milliseconds the replica may be behind the primary and still be read from.
    #[arg(long, env = "FLASHSALE_REPLICA_MAX_LAG_MS", default_value_t = DEFAULT_REPLICA_MAX_LAG_MS)]
    pub replica_max_lag_ms: u64,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// Seed a demo store (and print its keys) when the database has no store yet.
    #[arg(long, env = "FLASHSALE_SEED_DEMO", default_value_t = true, action = clap::ArgAction::Set)]
    pub seed_demo: bool,
}

/// What to do instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Print one order's history (its audit trail) and exit. Reads DATABASE_URL, else the
    /// private PostgreSQL under --data-dir: the running server's, or its stopped cluster
    /// (started for the read); a folder without one is an error naming it.
    Audit {
        /// The order's id (ord_…).
        order_id: String,
    },
    /// Keep HAProxy's shard map (deploy/haproxy.cfg) in step with the cluster's shard
    /// owners, so that requests naming a product in their path reach its owner
    /// directly. Reads the owners from GET /api/v1/cluster with FLASHSALE_ADMIN_TOKEN;
    /// runs until stopped (deploy/README.md, "Several instances behind HAProxy").
    HaproxyMap(crate::cluster::haproxy_map::Args),
}

impl Settings {
    /// How long a product actor stays idle before it passivates: the setting, but never
    /// less than twice the work budget (its writes are over by then); zero: never.
    pub fn product_idle(&self) -> Duration {
        if self.product_idle_secs == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs(self.product_idle_secs).max(self.work_budget() * 2)
    }

    /// How long a product actor stays idle before it compacts (stops, leaving its page
    /// and gate): the setting, never less than twice the work budget; zero: never.
    pub fn product_compact(&self) -> Duration {
        if self.product_compact_secs == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs(self.product_compact_secs).max(self.work_budget() * 2)
    }

    /// How long membership and shard leases last without renewal (at least 0.2 s).
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs).max(Duration::from_millis(200))
    }

    /// How far behind the primary the replica may be and still be read from.
    pub fn replica_max_lag(&self) -> Duration {
        Duration::from_millis(self.replica_max_lag_ms)
    }

    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.db_statement_timeout_ms.max(1))
    }

    /// How long database work may take once started: PostgreSQL ends any statement at
    /// `statement_timeout`, plus a margin for the round trip. Work that cannot start
    /// this long before a request's deadline is not started; a batch that runs longer
    /// (two slow round trips) is reconciled against the database, and answered
    /// `outcome_unknown` only if that cannot finish before the deadline.
    pub fn work_budget(&self) -> Duration {
        let budget = self.statement_timeout() + DEADLINE_MARGIN;
        // Never more than most of the request deadline, whatever the settings say.
        budget.min(Duration::from_millis(self.request_deadline_ms * 3 / 4))
    }

    /// The session settings every database connection starts with (libpq `options`).
    pub fn db_session_options(&self) -> String {
        format!(
            "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            self.db_statement_timeout_ms.max(1),
            self.db_lock_timeout_ms.max(1),
            self.db_idle_in_transaction_timeout_ms.max(1),
        )
    }

    pub fn arbiter_count(&self) -> usize {
        self.arbiters.unwrap_or_else(cores).max(1)
    }

    pub fn http_worker_count(&self) -> usize {
        self.http_workers.unwrap_or_else(cores).max(1)
    }

    /// Settings for tests and embedding: every default, the given database.
    pub fn for_database(database_url: &str) -> Self {
        use clap::Parser;
        let mut settings = Settings::parse_from(["flashsale"]);
        settings.database_url = Some(database_url.to_owned());
        settings
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
