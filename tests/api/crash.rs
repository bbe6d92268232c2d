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
    admin: String,
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
        admin: admin.to_owned(),
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

/// Every `order.created` event of the store, read through GET /api/v1/events in pages of
/// `limit`: (order id, event id) in the order listed.
async fn listed_order_created(sale: &Sale, limit: usize) -> Vec<(String, String)> {
    let client = reqwest::Client::new();
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!(
            "{}/api/v1/events?type=order.created&limit={limit}",
            sale.base
        );
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client
            .get(url)
            .bearer_auth(&sale.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in page["items"].as_array().unwrap() {
            assert_eq!(e["type"], "order.created");
            listed.push((
                e["data"]["id"].as_str().unwrap().to_owned(),
                e["id"].as_str().unwrap().to_owned(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return listed,
        }
    }
}

#[actix_web::test]
async fn kill_9_under_load_leaves_one_order_created_event_per_committed_order() {
    let db_url = fresh_database().await;
    let (mut child, base) = start_binary(&db_url).await;
    let sale = Arc::new(open_sale(&base, 100_000).await);
    let buyers = 800;
    let acks = sale
        .stampede(buyers, 150, || child.kill().expect("kill -9"))
        .await;
    let _ = child.wait();
    assert!(
        acks.len() >= 150 && acks.len() < buyers,
        "{} acks",
        acks.len()
    );

    // Restart and load it again: the buyers whose answer was lost retry, with new
    // buyers among them, so new batches follow the ones that were cut off.
    let (mut child, base) = start_binary(&db_url).await;
    let sale = Arc::new(Sale {
        base,
        ..Arc::try_unwrap(sale).ok().unwrap()
    });
    let mut retried = sale.stampede(buyers + 200, 0, || ()).await;
    // Those turned away under the load (503, 409 in progress) retry as a client would.
    let client = reqwest::Client::new();
    for i in 0..buyers + 200 {
        for _ in 0..100 {
            if retried.contains_key(&i) {
                break;
            }
            match sale.checkout(&client, i).await {
                Some((201, body)) => {
                    retried.insert(i, body["id"].as_str().unwrap().to_owned());
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    assert_eq!(
        retried.len(),
        buyers + 200,
        "every retry and new buyer bought"
    );
    for (i, id) in &acks {
        assert_eq!(&retried[i], id, "a retry returns the acknowledged order");
    }

    // In the database: each committed order has exactly one order.created event, and
    // every event is of an order that exists (the batch rows carry no foreign key).
    let db = connect(&db_url).await;
    let orders: std::collections::HashSet<String> = db
        .query("SELECT id FROM orders", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(orders.len(), buyers + 200);
    let events: Vec<(String, String)> = db
        .query(
            "SELECT subject_id, event_id FROM events WHERE type = 'order.created' ORDER BY id, item",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let subjects: std::collections::HashSet<&String> = events.iter().map(|(s, _)| s).collect();
    let event_ids: std::collections::HashSet<&String> = events.iter().map(|(_, e)| e).collect();
    assert_eq!(events.len(), orders.len(), "one order.created per order");
    assert_eq!(subjects.len(), orders.len(), "no order twice");
    assert_eq!(event_ids.len(), orders.len(), "each event its own id");
    assert!(subjects.iter().all(|s| orders.contains(*s)));
    let listed_orders: i64 = db
        .query_one(
            "SELECT count(*) FROM outbox_events o, unnest(o.order_ids) AS u(id) \
             WHERE EXISTS (SELECT 1 FROM orders r WHERE r.id = u.id)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        listed_orders as usize,
        orders.len(),
        "no batch row lists a missing order"
    );

    // Through the API, in pages that end inside batch rows: the same events, once each,
    // newest first.
    let listed = listed_order_created(&sale, 37).await;
    let mut newest_first = events.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    assert_eq!(
        stock_from_db(&db, &sale.product).await,
        (
            100_000,
            100_000 - orders.len() as i64,
            orders.len() as i64,
            orders.len() as i64
        )
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
