//! Order lifecycle: holds, confirm, cancel, expiry (also across a restart), listings,
//! the audit trail and the outbox.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, checkout_body, spawn_app, spawn_app_on, stock_from_db, StoreKeys, TestApp,
};

async fn reserve(
    app: &TestApp,
    store: &StoreKeys,
    product: &str,
    key: &str,
    quantity: i64,
    customer: &str,
) -> Value {
    let response = app
        .checkout(
            &store.storefront,
            key,
            &checkout_body(product, quantity, customer),
        )
        .await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn confirm(app: &TestApp, token: &str, order: &str) -> reqwest::Response {
    app.post(
        &format!("/api/v1/orders/{order}/confirm"),
        token,
        &json!({"payment_reference": "pay_123"}),
    )
    .await
}

async fn cancel(app: &TestApp, token: &str, order: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/api/v1/orders/{order}/cancel")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn available(app: &TestApp, store: &StoreKeys, product: &str) -> i64 {
    let stock: Value = app
        .get(&format!("/api/v1/products/{product}/stock"), &store.admin)
        .await
        .json()
        .await
        .unwrap();
    stock["stock_available"].as_i64().unwrap()
}

/// (type, subject) of every outbox event, in order (a batch's order.created row is one
/// event per order: the events view).
async fn outbox(app: &TestApp) -> Vec<(String, String)> {
    let rows = app
        .db()
        .await
        .query("SELECT type, subject_id FROM events ORDER BY id, item", &[])
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[actix_web::test]
async fn confirm_and_cancel_with_every_rule() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let other = app.create_store().await;
    let product = app
        .create_product(&store, 5, json!({"hold_seconds": 600}))
        .await;
    let order = reserve(&app, &store, &product, "k1", 2, "alice").await;
    assert_eq!(order["status"], "reserved");
    let id = order["id"].as_str().unwrap();

    let bad = app
        .post(
            &format!("/api/v1/orders/{id}/confirm"),
            &store.admin,
            &json!({"payment_reference": ""}),
        )
        .await;
    assert_problem(bad, 422, "validation_failed").await;
    assert_problem(confirm(&app, &store.storefront, id).await, 403, "forbidden").await;
    assert_problem(
        confirm(&app, &other.admin, id).await,
        404,
        "order_not_found",
    )
    .await;
    assert_problem(
        confirm(&app, &store.admin, "ord_nope").await,
        404,
        "order_not_found",
    )
    .await;
    assert_problem(cancel(&app, &store.storefront, id).await, 403, "forbidden").await;

    let confirmed = confirm(&app, &store.admin, id).await;
    assert_eq!(confirmed.status(), 200);
    assert_eq!(
        confirmed.json::<Value>().await.unwrap()["status"],
        "confirmed"
    );
    let again = confirm(&app, &store.admin, id).await;
    assert_eq!(again.status(), 200, "repeating a confirm is harmless");
    assert_eq!(available(&app, &store, &product).await, 3);

    let cancelled = cancel(&app, &store.admin, id).await;
    assert_eq!(cancelled.status(), 200);
    assert_eq!(
        cancelled.json::<Value>().await.unwrap()["status"],
        "cancelled"
    );
    assert_eq!(
        cancel(&app, &store.admin, id).await.status(),
        200,
        "repeating a cancel is harmless"
    );
    assert_eq!(
        available(&app, &store, &product).await,
        5,
        "cancelled stock is back on sale"
    );
    assert_problem(
        confirm(&app, &store.admin, id).await,
        409,
        "order_cancelled",
    )
    .await;

    // A hold_seconds 0 order is confirmed at once; cancelling it gives the stock back.
    let instant = app.create_product(&store, 1, json!({})).await;
    let order = reserve(&app, &store, &instant, "k2", 1, "bob").await;
    assert_eq!(order["status"], "confirmed");
    assert_eq!(
        cancel(&app, &store.admin, order["id"].as_str().unwrap())
            .await
            .status(),
        200
    );
    assert_eq!(available(&app, &store, &instant).await, 1);

    // The history: appended, with who did what.
    let db = app.db().await;
    let trail: Vec<(String, Option<String>)> = flashsale::db::orders::audit_trail(&db, id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event, e.api_key_id))
        .collect();
    let events: Vec<&str> = trail.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(events, ["created", "confirmed", "cancelled"]);
    assert!(trail.iter().all(|(_, key)| key.is_some()));
    let events: Vec<(String, String)> = outbox(&app)
        .await
        .into_iter()
        .filter(|(_, s)| s == id)
        .collect();
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["order.created", "order.confirmed", "order.cancelled"]
    );
    assert_eq!(stock_from_db(&db, &product).await, (5, 5, 0, 0));

    // The command-line history.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .args(["audit", id])
        .env("DATABASE_URL", &app.db_url)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("created")
            && text.contains("confirmed")
            && text.contains("pay_123")
            && text.contains("cancelled"),
        "{text}"
    );
}

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

#[actix_web::test]
async fn order_listing_filters_fields_and_stable_cursors() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let a = app
        .create_product(&store, 100, json!({"hold_seconds": 600}))
        .await;
    let b = app.create_product(&store, 100, json!({})).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let product = if i % 2 == 0 { &a } else { &b };
        let order = reserve(
            &app,
            &store,
            product,
            &format!("k{i}"),
            1,
            if i < 3 { "alice" } else { "bob" },
        )
        .await;
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    let page = |query: String| {
        let app = &app;
        let admin = store.admin.clone();
        async move {
            let response = app.get(&format!("/api/v1/orders?{query}"), &admin).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    // Pages of 3, newest first; an order placed between pages does not disturb them.
    let first = page("limit=3".into()).await;
    reserve(&app, &store, &a, "late", 1, "carol").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let second = page(format!("limit=3&cursor={cursor}")).await;
    let third = page(format!(
        "limit=3&cursor={}",
        second["next_cursor"].as_str().unwrap()
    ))
    .await;
    assert!(third["next_cursor"].is_null());
    let seen: Vec<String> = [&first, &second, &third]
        .iter()
        .flat_map(|p| {
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_owned())
        })
        .collect();
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    let reserved = page("status=reserved".into()).await;
    assert_eq!(reserved["items"].as_array().unwrap().len(), 5);
    let of_b = page(format!("product_id={b}&customer_id=bob&fields=id,status")).await;
    let items = of_b["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items
        .iter()
        .all(|o| o.as_object().unwrap().len() == 2 && o["status"] == "confirmed"));
    let one: Value = app
        .get(
            &format!("/api/v1/orders/{}?fields=id,total_cents", ids[0]),
            &store.storefront,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one.as_object().unwrap().len(), 2);

    for bad in [
        "limit=0",
        "limit=201",
        "status=lost",
        "colour=red",
        "fields=id,nope",
        "cursor=xyz",
    ] {
        assert_problem(
            app.get(&format!("/api/v1/orders?{bad}"), &store.admin)
                .await,
            422,
            "validation_failed",
        )
        .await;
    }
    assert_problem(
        app.get("/api/v1/orders", &store.storefront).await,
        403,
        "forbidden",
    )
    .await;
}

#[actix_web::test]
async fn randomized_lifecycle_model_keeps_stock_and_outbox_exact() {
    let seed: u64 = std::env::var("FLASHSALE_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    eprintln!("model seed {seed} (FLASHSALE_MODEL_SEED to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let app = spawn_app().await;
    let store = app.create_store().await;
    // One product whose holds wait for payment, one whose holds lapse within the test.
    let products = [
        app.create_product(
            &store,
            12,
            json!({"hold_seconds": 600, "max_per_customer": 5}),
        )
        .await,
        app.create_product(&store, 8, json!({"hold_seconds": 1}))
            .await,
    ];
    let mut put_in: HashMap<&str, i64> = products
        .iter()
        .map(|p| (p.as_str(), if *p == products[0] { 12 } else { 8 }))
        .collect();
    let mut orders: Vec<String> = Vec::new();
    let mut restocks = 0;
    for step in 0..150 {
        match rng.random_range(0..10) {
            0..=4 => {
                let product = &products[rng.random_range(0..2)];
                let quantity = rng.random_range(1..=3);
                let customer = format!("c{}", rng.random_range(0..4));
                let response = app
                    .checkout(
                        &store.storefront,
                        &format!("m{step}"),
                        &checkout_body(product, quantity, &customer),
                    )
                    .await;
                match response.status().as_u16() {
                    201 => orders.push(
                        response.json::<Value>().await.unwrap()["id"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                    ),
                    409 => {}
                    other => panic!("checkout answered {other}"),
                }
            }
            5 | 6 if !orders.is_empty() => {
                let id = &orders[rng.random_range(0..orders.len())];
                let status = confirm(&app, &store.admin, id).await.status().as_u16();
                assert!(status == 200 || status == 409, "confirm answered {status}");
            }
            7 if !orders.is_empty() => {
                let id = &orders[rng.random_range(0..orders.len())];
                let status = cancel(&app, &store.admin, id).await.status().as_u16();
                assert!(status == 200 || status == 409, "cancel answered {status}");
            }
            8 => {
                let product = &products[rng.random_range(0..2)];
                let quantity = rng.random_range(1..=4);
                let response = app
                    .post(
                        &format!("/api/v1/products/{product}/restock"),
                        &store.admin,
                        &json!({"quantity": quantity}),
                    )
                    .await;
                assert_eq!(response.status(), 200);
                *put_in.get_mut(product.as_str()).unwrap() += quantity;
                restocks += 1;
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.random_range(0..60))).await,
        }
    }
    // Let every short hold lapse.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let db = app.db().await;
    for product in &products {
        let (total, in_db, held, _) = stock_from_db(&db, product).await;
        assert_eq!(total, put_in[product.as_str()], "stock put in");
        assert_eq!(
            held + in_db,
            total,
            "reserved + confirmed + available == stock put in"
        );
        let memory = available(&app, &store, product).await;
        assert_eq!(memory, in_db, "the actor agrees with the database");
    }
    let reserved_short: i64 = db
        .query_one(
            "SELECT count(*) FROM orders WHERE product_id = $1 AND status = 'reserved'",
            &[&products[1]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reserved_short, 0, "every short hold lapsed");

    // Exactly one outbox event per transition: the audit trail and the outbox agree,
    // order by order, and no order has the same transition twice.
    let events = outbox(&app).await;
    for id in &orders {
        let trail: Vec<String> = flashsale::db::orders::audit_trail(&db, id)
            .await
            .unwrap()
            .iter()
            .map(|e| format!("order.{}", e.event))
            .collect();
        let kinds: Vec<String> = events
            .iter()
            .filter(|(_, s)| s == id)
            .map(|(t, _)| t.clone())
            .collect();
        assert_eq!(kinds, trail, "order {id}");
        assert_eq!(
            kinds.iter().collect::<HashSet<_>>().len(),
            kinds.len(),
            "order {id}: {kinds:?}"
        );
    }
    let restocked = events
        .iter()
        .filter(|(t, _)| t == "product.restocked")
        .count();
    assert_eq!(restocked, restocks);
}
