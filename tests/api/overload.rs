//! Overload: a blocked product actor flooded past its mailbox, and floods of bad
//! tokens and `/readyz` beside a legitimate buyer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::binary::{Answer, Binary};
use crate::helpers::{connect, fresh_database, stock_from_db};

const CAPACITY: usize = 32;

/// The product actor is held in a restock that waits on a row locked by another
/// session; 10x its mailbox capacity of checkouts arrive. What does not fit is refused
/// at once with 503 overloaded and Retry-After, and counted; memory stays bounded;
/// nothing is sold that no buyer was told about.
#[actix_web::test]
async fn a_blocked_product_flooded_with_ten_times_its_capacity_refuses_the_excess_at_once() {
    let db_url = fresh_database().await;
    let capacity = CAPACITY.to_string();
    let app = Binary::start(
        &db_url,
        &[
            ("FLASHSALE_MAILBOX_CAPACITY", &capacity),
            ("FLASHSALE_REQUEST_DEADLINE_MS", "8000"),
            ("FLASHSALE_DB_STATEMENT_TIMEOUT_MS", "3500"),
            ("FLASHSALE_DB_LOCK_TIMEOUT_MS", "3000"),
        ],
    )
    .await;
    let shop = app.open_shop(100_000, json!({})).await;
    // Load the actor and the key, then measure.
    let warm = app
        .checkout(&app.client, &shop.storefront, &shop.product, "warm", "w")
        .await;
    assert_eq!(warm.status, 201, "{}", warm.body);
    let rss_before = app.rss_kib();
    let rejected_before = app.metric("flashsale_mailbox_rejections_total").await;

    let mut blocker = connect(&db_url).await;
    let lock = blocker.transaction().await.unwrap();
    lock.execute(
        "SELECT 1 FROM products WHERE id = $1 FOR UPDATE",
        &[&shop.product],
    )
    .await
    .unwrap();
    let restock = {
        let (client, url, admin) = (
            app.client.clone(),
            app.url(&format!("/api/v1/products/{}/restock", shop.product)),
            shop.admin.clone(),
        );
        actix_web::rt::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(admin)
                .json(&json!({"quantity": 5}))
                .send()
                .await
                .unwrap();
            (Answer::read(r).await, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let flood = 10 * CAPACITY;
    let clients: Vec<reqwest::Client> = (0..64).map(|_| crate::helpers::http_client()).collect();
    let app = Arc::new(app);
    let tasks: Vec<_> = (0..flood)
        .map(|i| {
            let (app, shop, client) = (app.clone(), shop.clone(), clients[i % 64].clone());
            actix_web::rt::spawn(async move {
                let a = app
                    .checkout(
                        &client,
                        &shop.storefront,
                        &shop.product,
                        &format!("f{i}"),
                        &format!("c{i}"),
                    )
                    .await;
                (a, Instant::now())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let rss_after = app.rss_kib();
    lock.commit().await.unwrap();
    let (restock, unblocked) = restock.await.unwrap();

    let overloaded: Vec<_> = answers
        .iter()
        .filter(|(a, _)| a.status == 503 && a.code() == "overloaded")
        .collect();
    assert!(
        overloaded.len() >= flood - 2 * CAPACITY - 8,
        "{} of {flood} refused as overloaded",
        overloaded.len()
    );
    assert!(overloaded.iter().all(|(a, _)| a.retry_after));
    // At once: while the actor is still blocked in the restock (3 s of lock_timeout).
    assert!(
        overloaded.iter().all(|(_, at)| *at < unblocked),
        "a refusal came only after the actor was free again"
    );
    let rejected = app.metric("flashsale_mailbox_rejections_total").await - rejected_before;
    assert!(rejected >= overloaded.len() as f64, "{rejected} counted");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "resident memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The restock waited past lock_timeout: refused by the database, not applied.
    assert_eq!(restock.status, 503, "{}", restock.body);
    assert_eq!(restock.code(), "unavailable");
    // Every answer is one of the promised ones, and the database agrees with the 201s.
    for (a, _) in &answers {
        assert!(
            a.status == 201 || (a.status == 503 && a.retry_after),
            "{} {}",
            a.status,
            a.body
        );
    }
    let created = answers.iter().filter(|(a, _)| a.status == 201).count() as i64;
    let db = connect(&db_url).await;
    let (total, available, ordered, orders) = stock_from_db(&db, &shop.product).await;
    assert_eq!(total, 100_000, "the refused restock did not apply");
    assert_eq!((orders, ordered), (created + 1, created + 1));
    assert_eq!(available, total - ordered);
    // And sales go on.
    let after = app
        .checkout(&app.client, &shop.storefront, &shop.product, "after", "a")
        .await;
    assert_eq!(after.status, 201, "{}", after.body);
}

/// 128 connections of bad bearer tokens (malformed and well-formed unknown ones) and
/// 64 of `/readyz` for 10 s: the buyer beside them never gets a 503, and `/readyz`
/// answers 200 afterwards.
#[actix_web::test]
async fn floods_of_bad_tokens_and_readyz_never_cost_a_buyer_a_503() {
    let db_url = fresh_database().await;
    let app = Arc::new(Binary::start(&db_url, &[("FLASHSALE_DB_POOL_SIZE", "8")]).await);
    let shop = app.open_shop(1_000_000, json!({})).await;
    let first = app
        .checkout(&app.client, &shop.storefront, &shop.product, "b-0", "buyer")
        .await;
    assert_eq!(first.status, 201, "{}", first.body);

    let stop = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicUsize::new(0));
    let mut floods = Vec::new();
    for i in 0..192 {
        let (app, stop, flooded) = (app.clone(), stop.clone(), flooded.clone());
        let product = shop.product.clone();
        floods.push(actix_web::rt::spawn(async move {
            let client = crate::helpers::http_client();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let request = if i < 64 {
                    client.get(app.url("/readyz"))
                } else {
                    // Half malformed, half the shape of a key but unknown (each new).
                    let token = if i % 2 == 0 {
                        format!("garbage-{n}")
                    } else {
                        flashsale::domain::ids::new_secret(
                            flashsale::domain::ids::KeyRole::Storefront,
                        )
                    };
                    client
                        .get(app.url(&format!("/api/v1/products/{product}")))
                        .bearer_auth(token)
                };
                if request.send().await.is_ok() {
                    flooded.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        }));
    }
    let started = Instant::now();
    let mut buys = Vec::new();
    let mut k = 1;
    while started.elapsed() < Duration::from_secs(10) {
        let a = app
            .checkout(
                &app.client,
                &shop.storefront,
                &shop.product,
                &format!("b-{k}"),
                "buyer",
            )
            .await;
        buys.push(a);
        k += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for f in floods {
        f.await.unwrap();
    }
    let statuses: Vec<u16> = buys.iter().map(|a| a.status).collect();
    assert!(
        statuses.iter().all(|s| *s == 201),
        "buyer answers: {:?}",
        buys.iter()
            .filter(|a| a.status != 201)
            .map(|a| (a.status, a.code()))
            .collect::<Vec<_>>()
    );
    assert!(buys.len() >= 10, "only {} buys in 10 s", buys.len());
    assert!(flooded.load(Ordering::Relaxed) > 1000, "the flood was real");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(app.metric("flashsale_db_up").await, 1.0);
}
