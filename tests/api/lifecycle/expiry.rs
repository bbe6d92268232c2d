//! Payment holds expire on time and give stock and limits back: also when the hold lapses
//! before its batch commits, when a confirm races the expiry instant, and across a
//! restart.

use std::time::Duration;

use serde_json::{json, Value};

use super::{available, cancel, confirm, outbox, reserve};
use crate::helpers::{assert_problem, checkout_body, spawn_app, spawn_app_on, stock_from_db};

#[actix_web::test]
async fn holds_expire_on_time_and_give_stock_and_limits_back() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app
        .create_product(&store, 5, json!({"hold_seconds": 1, "max_per_customer": 2}))
        .await;
    let order = reserve(&app, &store, &product, "k1", 2, "alice").await;
    let id = order["id"].as_str().unwrap();
    assert_problem(
        app.checkout(
            &store.storefront,
            "k2",
            &checkout_body(&product, 1, "alice"),
        )
        .await,
        409,
        "customer_limit_exceeded",
    )
    .await;
    assert_eq!(available(&app, &store, &product).await, 3);

    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(available(&app, &store, &product).await, 5);
    let read: Value = app
        .get(&format!("/api/v1/orders/{id}"), &store.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["status"], "expired");
    assert_problem(confirm(&app, &store.admin, id).await, 409, "hold_expired").await;
    assert_problem(cancel(&app, &store.admin, id).await, 409, "hold_expired").await;
    // Expired orders no longer count against the customer.
    reserve(&app, &store, &product, "k3", 2, "alice").await;
    let db = app.db().await;
    let (total, available, held, _) = stock_from_db(&db, &product).await;
    assert_eq!((total, available, held), (5, 3, 2));
}

#[actix_web::test]
async fn a_hold_that_lapses_before_its_batch_commits_still_expires() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app
        .create_product(&store, 5, json!({"hold_seconds": 1}))
        .await;
    // Another session holds the product row, so the batch carrying the order waits for
    // its stock update until well after the 1 s hold has lapsed.
    let mut blocker = app.db().await;
    let tx = blocker.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM products WHERE id = $1 FOR UPDATE",
        &[&product],
    )
    .await
    .unwrap();
    let body = checkout_body(&product, 2, "alice");
    let (response, ()) = tokio::join!(app.checkout(&store.storefront, "k1", &body), async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        tx.commit().await.unwrap();
    });
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "reserved");
    let id = order["id"].as_str().unwrap();

    // Committed after its hold lapsed: it must still expire, and its stock come back.
    let db = app.db().await;
    let mut status = String::new();
    for _ in 0..50 {
        status = db
            .query_one("SELECT status FROM orders WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        if status == "expired" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "expired");
    let (total, available_db, held, _) = stock_from_db(&db, &product).await;
    assert_eq!((total, available_db, held), (5, 5, 0));
    assert_eq!(available(&app, &store, &product).await, 5);
}

#[actix_web::test]
async fn confirms_racing_the_expiry_instant_exactly_one_wins() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app
        .create_product(&store, 100, json!({"hold_seconds": 1}))
        .await;
    let mut orders = Vec::new();
    for i in 0..40 {
        let order = reserve(
            &app,
            &store,
            &product,
            &format!("k{i}"),
            1,
            &format!("c{i}"),
        )
        .await;
        orders.push(order["id"].as_str().unwrap().to_owned());
    }
    // Aim the confirms at the instant the holds lapse: some land before, some after.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let answers = futures_util::future::join_all(orders.iter().enumerate().map(|(i, id)| {
        let app = &app;
        let admin = &store.admin;
        async move {
            tokio::time::sleep(Duration::from_millis((i as u64 % 10) * 25)).await;
            let mut statuses = Vec::new();
            for _ in 0..2 {
                statuses.push(confirm(app, admin, id).await.status().as_u16());
            }
            (id.clone(), statuses)
        }
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let db = app.db().await;
    let events = outbox(&app).await;
    let mut confirmed = 0;
    for (id, statuses) in &answers {
        let status: String = db
            .query_one("SELECT status FROM orders WHERE id = $1", &[id])
            .await
            .unwrap()
            .get(0);
        let kinds: Vec<&str> = events
            .iter()
            .filter(|(_, s)| s == id)
            .map(|(t, _)| t.as_str())
            .collect();
        if statuses[0] == 200 {
            assert_eq!(statuses[1], 200, "a confirmed order stays confirmed");
            assert_eq!(status, "confirmed");
            assert_eq!(kinds, ["order.created", "order.confirmed"]);
            confirmed += 1;
        } else {
            assert_eq!(statuses, &[409, 409]);
            assert_eq!(status, "expired");
            assert_eq!(kinds, ["order.created", "order.expired"]);
        }
    }
    let (total, available, held, live) = stock_from_db(&db, &product).await;
    assert_eq!((total, held, live), (100, confirmed, confirmed));
    assert_eq!(available, 100 - confirmed);
}

#[actix_web::test]
async fn holds_survive_a_restart() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let short = app
        .create_product(&store, 10, json!({"hold_seconds": 2}))
        .await;
    let long = app
        .create_product(&store, 10, json!({"hold_seconds": 600}))
        .await;
    for i in 0..3 {
        reserve(&app, &store, &short, &format!("s{i}"), 2, &format!("c{i}")).await;
    }
    let pending = reserve(&app, &store, &long, "l1", 3, "alice").await;
    let db_url = app.db_url.clone();
    app.stop().await;

    let app = spawn_app_on(&db_url, |_| {}).await;
    // Nobody touches the short product: its actor is woken at boot and expires the holds.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let db = app.db().await;
    assert_eq!(stock_from_db(&db, &short).await, (10, 10, 0, 0));
    let expired: i64 = db
        .query_one(
            "SELECT count(*) FROM orders WHERE product_id = $1 AND status = 'expired'",
            &[&short],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(expired, 3);
    // The long hold is still live and can be confirmed.
    let id = pending["id"].as_str().unwrap();
    assert_eq!(confirm(&app, &store.admin, id).await.status(), 200);
    assert_eq!(stock_from_db(&db, &long).await, (10, 7, 3, 1));
}
