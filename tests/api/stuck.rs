//! A stuck database row, and lost COMMITs: every answer means what it says.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::binary::{Answer, Binary};
use crate::helpers::{checkout_body, connect, fresh_database, spawn_app, stock_from_db};

/// The documented deadline of these runs, and the slack allowed for the test's own
/// scheduling on a busy machine.
const DEADLINE: Duration = Duration::from_millis(4000);
const SLACK: Duration = Duration::from_millis(1500);

/// A product row held locked by another session past every deadline while a restock
/// waits and 48 buyers check out. Afterwards: no order whose buyer was not told 201 or
/// outcome_unknown (each resolved by a retry), every 201 is in the database, the restock
/// applied iff it was answered 200, stock adds up, every answer came within the
/// deadline, and sales resume.
#[actix_web::test]
async fn a_stuck_row_gets_honest_answers_within_the_deadline_and_sales_resume() {
    let db_url = fresh_database().await;
    let app = Arc::new(
        Binary::start(
            &db_url,
            &[
                ("FLASHSALE_REQUEST_DEADLINE_MS", "4000"),
                ("FLASHSALE_DB_STATEMENT_TIMEOUT_MS", "1200"),
                ("FLASHSALE_DB_LOCK_TIMEOUT_MS", "1000"),
            ],
        )
        .await,
    );
    let shop = app.open_shop(1_000, json!({})).await;
    let warm = app
        .checkout(&app.client, &shop.storefront, &shop.product, "warm", "w")
        .await;
    assert_eq!(warm.status, 201);

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
            let started = Instant::now();
            let r = client
                .post(url)
                .bearer_auth(admin)
                .json(&json!({"quantity": 7}))
                .send()
                .await
                .unwrap();
            (Answer::read(r).await, started.elapsed())
        })
    };
    let buyers: Vec<_> = (0..48)
        .map(|i| {
            let (app, shop) = (app.clone(), shop.clone());
            actix_web::rt::spawn(async move {
                let started = Instant::now();
                let client = crate::helpers::http_client();
                let a = app
                    .checkout(
                        &client,
                        &shop.storefront,
                        &shop.product,
                        &format!("s{i}"),
                        &format!("c{i}"),
                    )
                    .await;
                (a, started.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for b in buyers {
        answers.push(b.await.unwrap());
    }
    let (restock, restock_took) = restock.await.unwrap();
    // Held past every deadline: release only after all have been answered, and then some.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    lock.commit().await.unwrap();

    for (a, took) in answers
        .iter()
        .chain([(restock.clone(), restock_took)].iter())
    {
        assert!(
            *took < DEADLINE + SLACK,
            "answered after {took:?}: {}",
            a.body
        );
        assert!(
            a.status == 201
                || a.status == 200
                || (a.status == 503
                    && a.retry_after
                    && ["unavailable", "overloaded", "outcome_unknown"]
                        .contains(&a.code().as_str())),
            "{} {}",
            a.status,
            a.body
        );
    }
    // Let anything that could still commit do so, then look.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let db = connect(&db_url).await;
    let rows = db
        .query(
            "SELECT idempotency_key, id FROM orders WHERE product_id = $1",
            &[&shop.product],
        )
        .await
        .unwrap();
    let in_db: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for (i, (a, _)) in answers.iter().enumerate() {
        let key = format!("s{i}");
        match (a.status, in_db.get(&key)) {
            (201, Some(id)) => assert_eq!(&a.code(), id),
            (201, None) => panic!("{key} got a 201 that is not in the database"),
            (503, Some(_)) => assert_eq!(
                a.code(),
                "outcome_unknown",
                "{key}: an order for a 503 {}",
                a.code()
            ),
            _ => {}
        }
    }
    let (total, available, ordered, orders) = stock_from_db(&db, &shop.product).await;
    let restocked = restock.status == 200;
    assert_eq!(
        total,
        1_000 + if restocked { 7 } else { 0 },
        "restock answered {}",
        restock.status
    );
    assert_eq!(orders as usize, in_db.len());
    assert_eq!(available, total - ordered);

    // Sales resume, and every key left unknown learns its outcome on retry.
    for (i, (a, _)) in answers.iter().enumerate() {
        if a.code() == "outcome_unknown" {
            let again = app
                .checkout(
                    &app.client,
                    &shop.storefront,
                    &shop.product,
                    &format!("s{i}"),
                    &format!("c{i}"),
                )
                .await;
            assert_eq!(again.status, 201, "{}", again.body);
        }
    }
    let after = app
        .checkout(&app.client, &shop.storefront, &shop.product, "after", "a")
        .await;
    assert_eq!(after.status, 201, "{}", after.body);
}

/// The writer's PostgreSQL backend is terminated during commits, again and again, under
/// load: no 201 without its order, no order without a 201 or outcome_unknown, and stock
/// adds up.
#[actix_web::test]
async fn lost_commits_under_load_never_lie() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 100_000, json!({})).await;
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (db, stop) = (app.db().await, stop.clone());
        actix_web::rt::spawn(async move {
            let mut killed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // The writer's connections, caught mid-batch.
                let n: i64 = db
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid() \
                           AND (query LIKE '%INSERT INTO orders%' OR query = 'COMMIT' \
                                OR query LIKE '%stock_available = p.stock_available - taken%')",
                        &[],
                    )
                    .await
                    .map(|r| r.get(0))
                    .unwrap_or(0);
                killed += n as u64;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            killed
        })
    };
    let clients: Vec<reqwest::Client> = (0..16).map(|_| crate::helpers::http_client()).collect();
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let client = clients[i % 16].clone();
            let (url, token, body) = (
                app.url("/api/v1/checkout"),
                store.storefront.clone(),
                checkout_body(&product, 1, &format!("c{i}")),
            );
            actix_web::rt::spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(token)
                    .header("Idempotency-Key", format!("k{i}"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                Answer::read(r).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let killed = killer.await.unwrap();
    assert!(killed > 0, "no backend was terminated");
    let db = app.db().await;
    let rows = db
        .query(
            "SELECT idempotency_key, id FROM orders WHERE product_id = $1",
            &[&product],
        )
        .await
        .unwrap();
    let in_db: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut unknown = 0;
    for (i, a) in answers.iter().enumerate() {
        let key = format!("k{i}");
        match (a.status, in_db.get(&key)) {
            (201, Some(id)) => assert_eq!(&a.code(), id),
            (201, None) => panic!("{key}: 201 without its order"),
            (503, found) => {
                if a.code() == "outcome_unknown" {
                    unknown += 1;
                } else {
                    assert!(found.is_none(), "{key}: an order behind a 503 {}", a.code());
                }
            }
            (s, _) => panic!("{key}: {s} {}", a.body),
        }
    }
    let (total, available, ordered, orders) = stock_from_db(&db, &product).await;
    assert_eq!(orders as usize, in_db.len());
    assert_eq!(available + ordered, total);
    // Every buyer retries with their key, as a client does: after a 503 (nothing done, or
    // the outcome still unknown) or a 409 in progress it waits and asks again. Each
    // learns a definitive answer, and buys once. Right after the kills the breaker may
    // still be open until the next probe succeeds (every second).
    let patience = Instant::now() + Duration::from_secs(20);
    for i in 0..400 {
        let a = loop {
            let r = app
                .checkout(
                    &store.storefront,
                    &format!("k{i}"),
                    &checkout_body(&product, 1, &format!("c{i}")),
                )
                .await;
            let a = Answer::read(r).await;
            let later =
                a.status == 503 || (a.status == 409 && a.code() == "idempotency_in_progress");
            if !later || Instant::now() > patience {
                break a;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(a.status, 201, "retry of k{i}: {}", a.body);
        if let Some(id) = in_db.get(&format!("k{i}")) {
            assert_eq!(&a.code(), id);
        }
    }
    let (total, available, ordered, orders) = stock_from_db(&db, &product).await;
    assert_eq!((orders, ordered), (400, 400), "{unknown} were unknown");
    assert_eq!(available, total - 400);
}
