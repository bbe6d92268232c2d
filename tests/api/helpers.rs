//! The test harness: one PostgreSQL per test process (the private one, started like the
//! binary does, or `DATABASE_URL`), a migrated template, and a fresh database per test.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;

use actix_web::dev::ServerHandle;
use flashsale::config::Settings;
use flashsale::db::embedded::{Durability, EmbeddedPostgres};
use flashsale::domain::ids::new_id;
use flashsale::startup::Application;
use serde_json::{json, Value};
use tokio_postgres::NoTls;

const TEMPLATE: &str = "flashsale_test_template";

struct TestServer {
    /// URL of the server's `postgres` database (for CREATE DATABASE).
    admin_url: String,
    /// Kept alive for the whole test process.
    _private: Option<EmbeddedPostgres>,
}

static SERVER: OnceLock<TestServer> = OnceLock::new();
static TEMPLATE_READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

fn server() -> &'static TestServer {
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => TestServer {
            admin_url: with_database(&url, "postgres"),
            _private: None,
        },
        _ => {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-postgres");
            let pg = EmbeddedPostgres::start(&dir, Durability::Fast)
                .expect("Failed to start the test PostgreSQL");
            TestServer {
                admin_url: pg.url("postgres"),
                _private: Some(pg),
            }
        }
    })
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[host_start..].find('/') {
        Some(i) => &base[..host_start + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("Failed to connect");
    tokio::spawn(connection);
    client
}

/// A new database, copied from the migrated template.
pub async fn fresh_database() -> String {
    let admin_url = &server().admin_url;
    TEMPLATE_READY
        .get_or_init(|| async {
            let admin = connect(admin_url).await;
            if std::env::var("DATABASE_URL").is_err() {
                // Left over by earlier runs on the private server.
                for row in admin
                    .query(
                        "SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'",
                        &[],
                    )
                    .await
                    .unwrap()
                {
                    let name: String = row.get(0);
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            }
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))
                .await
                .unwrap();
            admin
                .batch_execute(&format!("CREATE DATABASE {TEMPLATE}"))
                .await
                .unwrap();
            let pool = flashsale::db::create_pool(&with_database(admin_url, TEMPLATE), 1).unwrap();
            flashsale::db::migrate(&pool)
                .await
                .expect("Failed to migrate the template");
            pool.close();
        })
        .await;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = connect(admin_url).await;
    let mut tries = 0;
    // A template may be copied by one CREATE DATABASE at a time.
    while let Err(e) = admin
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
        .await
    {
        tries += 1;
        assert!(tries < 50, "Failed to create a test database: {e}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    with_database(admin_url, &name)
}

/// The application under test, serving on a random port, with its own database.
pub struct TestApp {
    pub address: SocketAddr,
    pub db_url: String,
    pub admin_token: String,
    pub client: reqwest::Client,
    handle: ServerHandle,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The stop command is sent now; the future only waits for it.
        drop(self.handle.stop(false));
    }
}

pub fn test_settings(db_url: &str) -> Settings {
    let mut settings = Settings::for_database(db_url);
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.seed_demo = false;
    settings.db_pool_size = 6;
    settings.http_workers = Some(2);
    settings.arbiters = Some(2);
    // Tests hammer pro stores from one address; the limit tests set their own.
    settings.rate_pro = 0;
    settings.checkout_rate_per_customer = 0;
    settings.checkout_rate_per_address = 0;
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tune: impl FnOnce(&mut Settings)) -> TestApp {
    let db_url = fresh_database().await;
    spawn_app_on(&db_url, tune).await
}

/// An application on an existing database (a restart).
pub async fn spawn_app_on(db_url: &str, tune: impl FnOnce(&mut Settings)) -> TestApp {
    spans();
    let mut settings = test_settings(db_url);
    tune(&mut settings);
    let admin_token = new_id("op");
    let app = Application::build(&settings, db_url, &admin_token)
        .await
        .expect("Failed to build the app");
    let address = app.address();
    let handle = app.handle();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        db_url: db_url.to_owned(),
        admin_token,
        client: http_client(),
        handle,
    }
}

static SPANS: OnceLock<opentelemetry_sdk::trace::InMemorySpanExporter> = OnceLock::new();

/// Every span every test made, as the OpenTelemetry layer exported them (tracing is on in
/// the test process, with an in-memory exporter).
pub fn spans() -> &'static opentelemetry_sdk::trace::InMemorySpanExporter {
    SPANS.get_or_init(|| {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider =
            flashsale::telemetry::provider_with(|b| b.with_simple_exporter(exporter.clone()));
        // Installed for the life of the process.
        std::mem::forget(flashsale::telemetry::init_with("warn", Some(provider)));
        exporter
    })
}

/// A store's id and keys.
#[derive(Debug, Clone)]
pub struct StoreKeys {
    pub id: String,
    pub admin: String,
    pub storefront: String,
}

pub fn checkout_body(product_id: &str, quantity: i64, customer: &str) -> Value {
    json!({
        "product_id": product_id,
        "quantity": quantity,
        "customer_id": customer,
        "consent": {"terms_version": "2026-01", "marketing": false}
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        connect(&self.db_url).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request failed")
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request failed")
    }

    /// A conditional GET: `If-None-Match: etag`.
    pub async fn get_if_none_match(
        &self,
        path: &str,
        token: &str,
        etag: &str,
    ) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .header("If-None-Match", etag)
            .send()
            .await
            .expect("request failed")
    }

    /// `GET /metrics`, as text.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn create_store(&self) -> StoreKeys {
        let response = self
            .post(
                "/api/v1/stores",
                &self.admin_token,
                &json!({"name": "Shop", "plan": "pro"}),
            )
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        StoreKeys {
            id: body["id"].as_str().unwrap().to_owned(),
            admin: body["api_keys"]["admin"].as_str().unwrap().to_owned(),
            storefront: body["api_keys"]["storefront"].as_str().unwrap().to_owned(),
        }
    }

    /// A product with `stock` units and the given extra fields; returns its id.
    pub async fn create_product(&self, store: &StoreKeys, stock: i64, extra: Value) -> String {
        let mut body = json!({
            "sku": new_id("sku"), "name": "Limited sneaker", "price_cents": 12_900, "currency": "EUR", "stock": stock
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let response = self.post("/api/v1/products", &store.admin, &body).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn checkout(&self, token: &str, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/checkout"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("request failed")
    }
}

/// Waits (up to 15 s) until `/readyz` answers 200.
pub async fn wait_ready(app: &TestApp) {
    for _ in 0..150 {
        if app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("/readyz never answered 200");
}

/// Asserts a problem document with `status` and `code`; returns it.
pub async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "expected {status} {code}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

/// Stock accounting of a product, from the database: (stock_total, stock_available,
/// Σ quantity of live orders, number of live orders). Also asserts that the product's
/// orders hang together, since the write-behind tables carry no foreign keys
/// (migrations/V8): each order is in its product's store and has exactly one
/// `order.created` event, every order an outbox row lists exists, and every audit row has
/// its order.
pub async fn stock_from_db(db: &tokio_postgres::Client, product_id: &str) -> (i64, i64, i64, i64) {
    let dangling: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM orders o JOIN products p ON p.id = o.product_id \
                      WHERE o.product_id = $1 AND o.store_id <> p.store_id) \
                  + (SELECT count(*) FROM orders o LEFT JOIN \
                      (SELECT subject_id, count(*) AS n FROM events \
                       WHERE type = 'order.created' GROUP BY subject_id) e ON e.subject_id = o.id \
                      WHERE o.product_id = $1 AND e.n IS DISTINCT FROM 1) \
                  + (SELECT count(*) FROM outbox_events e, unnest(e.order_ids) AS u(id) \
                      WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = u.id)) \
                  + (SELECT count(*) FROM order_audit a \
                      WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = a.order_id))",
            &[&product_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dangling, 0, "rows without their parent around {product_id}");
    let row = db
        .query_one(
            "SELECT p.stock_total, p.stock_available, \
                    coalesce((SELECT sum(quantity) FROM orders o WHERE o.product_id = p.id AND o.status IN ('reserved','confirmed')), 0)::bigint, \
                    (SELECT count(*) FROM orders o WHERE o.product_id = p.id AND o.status IN ('reserved','confirmed')) \
             FROM products p WHERE p.id = $1",
            &[&product_id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// The base URL a running `flashsale` binary prints once it listens; its stdout keeps
/// being drained (a closed pipe would fail its last words).
pub async fn listening_url(child: &mut std::process::Child) -> String {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("the binary's stdout is piped");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    // Its log goes on to the test's output (captured: shown when the test fails).
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            match line.strip_prefix("flashsale listening on ") {
                Some(url) => drop(tx.send(url.to_owned())),
                None => eprintln!("[flashsale {pid}] {line}"),
            }
        }
    });
    tokio::task::spawn_blocking(move || rx.recv_timeout(std::time::Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("flashsale did not start listening")
}

/// Cuts every connection to the test's database and refuses new ones (`true`), or lets
/// them in again (`false`).
pub async fn cut_database(app: &TestApp, cut: bool) {
    let admin = connect(&with_database(&app.db_url, "postgres")).await;
    let name = app
        .db_url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {}",
            !cut
        ))
        .await
        .unwrap();
    if cut {
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&name],
            )
            .await
            .unwrap();
    }
}

/// Sends `requests` GETs of `path` with `token` at once while `table` is locked (ACCESS
/// EXCLUSIVE) for 3 s, longer than a request may wait for a pooled connection (2 s);
/// returns each answer's status and JSON body.
pub async fn gets_while_locked(
    app: &TestApp,
    table: &str,
    path: &str,
    token: &str,
    requests: usize,
) -> Vec<(u16, Value)> {
    let mut db = app.db().await;
    let lock = db.transaction().await.unwrap();
    lock.batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let url = app.url(path);
    let gets: Vec<_> = (0..requests)
        .map(|_| {
            let request = client.get(&url).bearer_auth(token).send();
            actix_web::rt::spawn(async move {
                let response = request.await.unwrap();
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    lock.commit().await.unwrap();
    futures_util::future::join_all(gets)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

/// An HTTP client for a test's requests: clones of one client, made once per process.
/// Building a reqwest client loads the TLS roots (about 90 ms in a debug build), which
/// would stall a single-threaded test runtime for seconds when a test makes one per
/// simulated connection; clones share one pool, which still opens a connection for
/// every request in flight, so N concurrent requesters are still N connections.
pub fn http_client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new).clone()
}
