//! The real binary killed with -9 while it delivers under load, and restarted: every
//! event is delivered.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use super::Receiver;
use crate::helpers::{checkout_body, connect, fresh_database, listening_url};

const TOKEN: &str = "op_webhook_crash";

async fn start_binary(db_url: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .env("DATABASE_URL", db_url)
        .env("FLASHSALE_LISTEN", "127.0.0.1:0")
        .env("FLASHSALE_ADMIN_TOKEN", TOKEN)
        .env("FLASHSALE_SEED_DEMO", "false")
        .env("FLASHSALE_HTTP_WORKERS", "2")
        .env("FLASHSALE_WEBHOOK_ALLOW_NETS", "127.0.0.0/8")
        .env("FLASHSALE_WEBHOOK_RETRY_SCHEDULE", "0.2,0.5,1,1,1")
        // A short timeout makes a short lease: a claim the dead process held is due
        // again 16 x 1 + 5 s after it was made.
        .env("FLASHSALE_WEBHOOK_TIMEOUT_MS", "1000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("Failed to start flashsale");
    let url = listening_url(&mut child).await;
    (child, url)
}

/// Buyers that keep checking out (errors while the binary is down are ignored) until
/// `stop` or the stock is gone.
fn buy(
    base: Arc<std::sync::Mutex<String>>,
    token: String,
    product: String,
    next: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    actix_web::rt::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        while !stop.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let url = format!("{}/api/v1/checkout", base.lock().unwrap());
            let sent = client
                .post(url)
                .bearer_auth(&token)
                .header("Idempotency-Key", format!("k{i}"))
                .json(&checkout_body(&product, 1, &format!("c{i}")))
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == 409 => return,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
}

#[actix_web::test]
async fn kill_9_mid_delivery_loses_no_event() {
    let db_url = fresh_database().await;
    let receiver = Receiver::start(Arc::new(|_, _| (200, Duration::from_millis(5)))).await;
    let (child, base) = start_binary(&db_url).await;
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
    let admin = store["api_keys"]["admin"].as_str().unwrap().to_owned();
    let storefront = store["api_keys"]["storefront"].as_str().unwrap().to_owned();
    let response = client
        .post(format!("{base}/api/v1/webhooks"))
        .bearer_auth(&admin)
        .json(&json!({"url": receiver.url, "events": ["order.created", "product.sold_out"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let product: Value = client
        .post(format!("{base}/api/v1/products"))
        .bearer_auth(&admin)
        .json(&json!({"sku": "drop", "name": "Drop", "price_cents": 100, "currency": "EUR", "stock": 3000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product = product["id"].as_str().unwrap().to_owned();

    let shared_base = Arc::new(std::sync::Mutex::new(base));
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let buyers: Vec<_> = (0..32)
        .map(|_| {
            buy(
                shared_base.clone(),
                storefront.clone(),
                product.clone(),
                next.clone(),
                stop.clone(),
            )
        })
        .collect();
    // Kill while deliveries are flowing.
    receiver
        .wait_for(Duration::from_secs(60), |g| g.len() >= 300)
        .await;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let mut child = child;
    child.wait().unwrap();
    let at_kill = receiver.got().len();

    let (mut child, base) = start_binary(&db_url).await;
    *shared_base.lock().unwrap() = base;
    for b in buyers {
        b.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);

    let db = connect(&db_url).await;
    let events: i64 = db
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    let orders: i64 = db
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 3000, "sold out");
    assert_eq!(events, 3001, "3000 order.created and one product.sold_out");
    receiver
        .wait_delivered(events as usize, Duration::from_secs(90))
        .await;
    let event_ids: std::collections::HashSet<String> = db
        .query("SELECT event_id FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(receiver.delivered_ids(), event_ids);
    // The last batch's 2xx may still be on its way to its record, and the deliveries
    // the dead process had claimed (sent, never recorded) are claimed again only once
    // their lease lapses: 16 requests' timeouts plus a 5 s margin, 21 s from their claim
    // (so up to 21 s from here when everything else went fast).
    let mut undelivered: i64 = -1;
    for _ in 0..450 {
        undelivered = db
            .query_one(
                "SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if undelivered == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(undelivered, 0);
    let got = receiver.got();
    println!(
        "{} requests for {} events ({} before the kill)",
        got.len(),
        event_ids.len(),
        at_kill
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}
