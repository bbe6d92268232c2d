//! The real binary, killed with -9 in the middle of a stampede and restarted; and
//! stopped with SIGTERM in the middle of one.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::helpers::{checkout_body, connect, fresh_database, listening_url, stock_from_db};

const TOKEN: &str = "op_crash_test";

/// The `flashsale` binary on `db_url`; returns it and its base URL once it listens.
async fn start_binary(db_url: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .env("DATABASE_URL", db_url)
        .env("FLASHSALE_LISTEN", "127.0.0.1:0")
        .env("FLASHSALE_ADMIN_TOKEN", TOKEN)
        .env("FLASHSALE_SEED_DEMO", "false")
        // A longer linger keeps more orders in flight when the kill comes.
        .env("FLASHSALE_BATCH_LINGER_MS", "20")
        .env("FLASHSALE_HTTP_WORKERS", "2")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("Failed to start flashsale");
    let url = listening_url(&mut child).await;
    (child, url)
}

struct Sale {
    base: String,
    storefront: String,
    product: String,
}

async fn open_sale(base: &str, stock: i64) -> Sale {
    let client = reqwest::Client::new();
    let store: Value = client
        .post(format!("{base}/api/v1/stores"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "Crash", "plan": "enterprise"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin = store["api_keys"]["admin"].as_str().unwrap();
    let product: Value = client
        .post(format!("{base}/api/v1/products"))
        .bearer_auth(admin)
        .json(&json!({"sku": "drop", "name": "Drop", "price_cents": 100, "currency": "EUR", "stock": stock}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Sale {
        base: base.to_owned(),
        storefront: store["api_keys"]["storefront"].as_str().unwrap().to_owned(),
        product: product["id"].as_str().unwrap().to_owned(),
    }
}

impl Sale {
    async fn checkout(&self, client: &reqwest::Client, i: usize) -> Option<(u16, Value)> {
        let response = client
            .post(format!("{}/api/v1/checkout", self.base))
            .bearer_auth(&self.storefront)
            .header("Idempotency-Key", format!("key-{i}"))
            .json(&checkout_body(&self.product, 1, &format!("buyer-{i}")))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    /// `buyers` checkouts at once; `on_ack` runs after the `after`-th 201. Returns the
    /// order id of every acknowledged key.
    async fn stampede(
        self: &Arc<Self>,
        buyers: usize,
        after: usize,
        on_ack: impl FnOnce(),
    ) -> HashMap<usize, String> {
        let acked = Arc::new(AtomicUsize::new(0));
        let clients: Vec<reqwest::Client> = (0..32).map(|_| reqwest::Client::new()).collect();
        let tasks: Vec<_> = (0..buyers)
            .map(|i| {
                let sale = self.clone();
                let client = clients[i % clients.len()].clone();
                let acked = acked.clone();
                actix_web::rt::spawn(async move {
                    let answer = sale.checkout(&client, i).await;
                    if matches!(answer, Some((201, _))) {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    answer
                })
            })
            .collect();
        while acked.load(Ordering::SeqCst) < after && !tasks.iter().all(|t| t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        on_ack();
        let mut acks = HashMap::new();
        for (i, task) in tasks.into_iter().enumerate() {
            if let Some((201, body)) = task.await.unwrap() {
                acks.insert(i, body["id"].as_str().unwrap().to_owned());
            }
        }
        acks
    }
}

/// Every acknowledged order is in the database under its key.
async fn assert_acks_durable(db: &tokio_postgres::Client, acks: &HashMap<usize, String>) {
    for (i, id) in acks {
        let row = db
            .query_opt("SELECT idempotency_key FROM orders WHERE id = $1", &[id])
            .await
            .unwrap();
        let key: String = row
            .unwrap_or_else(|| panic!("order {id} got a 201 but is not in the database"))
            .get(0);
        assert_eq!(key, format!("key-{i}"));
    }
}

#[actix_web::test]
async fn kill_9_mid_stampede_loses_no_acknowledged_order_and_retries_buy_once() {
    let db_url = fresh_database().await;
    let (mut child, base) = start_binary(&db_url).await;
    let sale = Arc::new(open_sale(&base, 1000).await);
    let buyers = 600;

    let acks = sale
        .stampede(buyers, 80, || child.kill().expect("kill -9"))
        .await;
    let _ = child.wait();
    assert!(
        acks.len() >= 80 && acks.len() < buyers,
        "killed mid-way: {} acks",
        acks.len()
    );
    let db = connect(&db_url).await;
    assert_acks_durable(&db, &acks).await;

    // Restart, then every buyer retries with their key.
    let (mut child, base) = start_binary(&db_url).await;
    let sale = Sale {
        base,
        ..Arc::try_unwrap(sale).ok().unwrap()
    };
    let client = reqwest::Client::new();
    for i in 0..buyers {
        let (status, body) = sale.checkout(&client, i).await.expect("retry answered");
        assert_eq!(status, 201, "retry of key-{i}: {body}");
        if let Some(id) = acks.get(&i) {
            assert_eq!(
                body["id"].as_str().unwrap(),
                id,
                "a retry returns the acknowledged order"
            );
        }
    }
    let keys: i64 = db
        .query_one("SELECT count(DISTINCT idempotency_key) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, buyers as i64);
    assert_eq!(
        stock_from_db(&db, &sale.product).await,
        (1000, 1000 - buyers as i64, buyers as i64, buyers as i64)
    );
    child.kill().unwrap();
    let _ = child.wait();
}

#[actix_web::test]
async fn sigterm_mid_stampede_commits_what_is_in_flight_and_exits_0() {
    let db_url = fresh_database().await;
    let (mut child, base) = start_binary(&db_url).await;
    let sale = Arc::new(open_sale(&base, 100_000).await);
    let pid = Pid::from_raw(child.id() as i32);

    let acks = sale
        .stampede(400, 50, || kill(pid, Signal::SIGTERM).expect("SIGTERM"))
        .await;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let db = connect(&db_url).await;
    assert_acks_durable(&db, &acks).await;
    let (total, available, ordered, orders) = stock_from_db(&db, &sale.product).await;
    assert_eq!(available + ordered, total);
    assert!(orders >= acks.len() as i64);
}
