//! Idempotency as the contract says: the original 201 survives kill -9 and later status
//! changes byte for byte; refusals bind nothing; a hold committed in the expiry window
//! still expires on time.

use std::time::Duration;

use serde_json::{json, Value};

use crate::binary::Binary;
use crate::helpers::{assert_problem, checkout_body, fresh_database, spawn_app, stock_from_db};

#[actix_web::test]
async fn replays_after_kill_9_are_byte_identical_even_after_confirm_and_cancel() {
    let db_url = fresh_database().await;
    let app = Binary::start(&db_url, &[]).await;
    let shop = app.open_shop(10, json!({"hold_seconds": 600})).await;
    let instant = app.add_product(&shop.admin, 10, json!({})).await;
    let buy = |product: &str, key: &str| {
        let (product, key) = (product.to_owned(), key.to_owned());
        let (app, token) = (&app, shop.storefront.clone());
        async move {
            app.checkout(&app.client, &token, &product, &key, &format!("c-{key}"))
                .await
        }
    };
    // (key, product, then what happens to the order)
    let cases = [
        ("held-confirmed", shop.product.clone(), Some("confirm")),
        ("held-cancelled", shop.product.clone(), Some("cancel")),
        ("held-kept", shop.product.clone(), None),
        ("instant-cancelled", instant.clone(), Some("cancel")),
        ("instant-kept", instant.clone(), None),
    ];
    let mut originals = Vec::new();
    for (key, product, then) in &cases {
        let a = buy(product, key).await;
        assert_eq!(a.status, 201, "{}", a.body);
        assert!(!a.replayed);
        if let Some(action) = then {
            let r = app
                .client
                .post(app.url(&format!("/api/v1/orders/{}/{action}", a.code())))
                .bearer_auth(&shop.admin)
                .json(&json!({"payment_reference": "pay-1"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{action}: {}", r.text().await.unwrap());
        }
        originals.push(a.body);
    }
    // Replayed from memory, then from the database after kill -9 and a restart.
    for ((key, product, _), original) in cases.iter().zip(&originals) {
        let a = buy(product, key).await;
        assert_eq!((a.status, a.replayed), (201, true));
        assert_eq!(&a.body, original, "{key} from memory");
    }
    drop(app); // kill -9
    let app = Binary::start(&db_url, &[]).await;
    for ((key, product, _), original) in cases.iter().zip(&originals) {
        let a = app
            .checkout(
                &app.client,
                &shop.storefront,
                product,
                key,
                &format!("c-{key}"),
            )
            .await;
        assert_eq!((a.status, a.replayed), (201, true), "{}", a.body);
        assert_eq!(&a.body, original, "{key} after kill -9");
    }
    let status: Value = app
        .client
        .get(app.url(&format!(
            "/api/v1/orders/{}",
            serde_json::from_str::<Value>(&originals[0]).unwrap()["id"].as_str().unwrap()
        )))
        .bearer_auth(&shop.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["status"], "confirmed",
        "the later status is read with GET"
    );
}

/// A key refused with `sale_not_started` buys once the sale is live; a key refused as
/// sold out (the gate's fast path) buys after a restock.
#[actix_web::test]
async fn refused_keys_bind_nothing_and_buy_once_the_sale_allows() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let starts = chrono::Utc::now() + chrono::Duration::seconds(2);
    let product = app
        .create_product(&store, 1, json!({"sale_starts_at": starts.to_rfc3339()}))
        .await;
    let body = checkout_body(&product, 1, "early");
    assert_problem(
        app.checkout(&store.storefront, "early-key", &body).await,
        409,
        "sale_not_started",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let live = app.checkout(&store.storefront, "early-key", &body).await;
    assert_eq!(live.status(), 201, "{}", live.text().await.unwrap());

    // Sold out now: refused on the fast path, twice; after a restock the key buys.
    let late = checkout_body(&product, 1, "late");
    for _ in 0..2 {
        assert_problem(
            app.checkout(&store.storefront, "late-key", &late).await,
            409,
            "sold_out",
        )
        .await;
    }
    let r = app
        .post(
            &format!("/api/v1/products/{product}/restock"),
            &store.admin,
            &json!({"quantity": 1}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let bought = app.checkout(&store.storefront, "late-key", &late).await;
    assert_eq!(bought.status(), 201, "{}", bought.text().await.unwrap());
    let db = app.db().await;
    assert_eq!(stock_from_db(&db, &product).await, (2, 0, 2, 2));
}

/// Holds whose batches commit around their expiry instant (the row is released at
/// staggered moments around it, so that some commits land while the expiry is being
/// written): every one still expires on time and its stock comes back.
#[actix_web::test]
async fn holds_committed_around_their_expiry_still_expire_on_time() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let mut runs = Vec::new();
    for round in 0..6u64 {
        let product = app
            .create_product(&store, 5, json!({"hold_seconds": 1}))
            .await;
        // Loaded before the race, so that only the batch waits.
        let page = app
            .get(&format!("/api/v1/products/{product}"), &store.storefront)
            .await;
        assert_eq!(page.status(), 200);
        runs.push((round, product));
    }
    let work = runs.iter().map(|(round, product)| {
        let app = &app;
        let store = &store;
        async move {
            let mut blocker = app.db().await;
            let tx = blocker.transaction().await.unwrap();
            tx.execute(
                "SELECT 1 FROM products WHERE id = $1 FOR UPDATE",
                &[product],
            )
            .await
            .unwrap();
            let body = checkout_body(product, 2, "alice");
            let release = Duration::from_millis(900 + round * 40);
            let key = format!("k{round}");
            let (response, ()) =
                tokio::join!(app.checkout(&store.storefront, &key, &body), async {
                    tokio::time::sleep(release).await;
                    tx.commit().await.unwrap();
                });
            assert_eq!(response.status(), 201);
            let order: Value = response.json().await.unwrap();
            order["id"].as_str().unwrap().to_owned()
        }
    });
    let ids = futures_util::future::join_all(work).await;
    let db = app.db().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for ((_, product), id) in runs.iter().zip(&ids) {
        let status: String = db
            .query_one("SELECT status FROM orders WHERE id = $1", &[id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(status, "expired", "order {id}");
        assert_eq!(stock_from_db(&db, product).await, (5, 5, 0, 0));
    }
}

/// A restock with an Idempotency-Key is applied at most once: a retry (after a lost
/// answer, 503 outcome_unknown) learns that it was, and adds nothing; the key with
/// another quantity is refused.
#[actix_web::test]
async fn a_restock_retried_with_its_key_is_applied_once() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 3, json!({})).await;
    let restock = |quantity: i64| {
        let url = app.url(&format!("/api/v1/products/{product}/restock"));
        app.client
            .post(url)
            .bearer_auth(&store.admin)
            .header("Idempotency-Key", "restock-1")
            .json(&json!({ "quantity": quantity }))
            .send()
    };
    for _ in 0..3 {
        let r = restock(5).await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            (
                body["stock_total"].as_i64(),
                body["stock_available"].as_i64()
            ),
            (Some(8), Some(8))
        );
    }
    assert_problem(restock(6).await.unwrap(), 422, "idempotency_key_reused").await;
    let db = app.db().await;
    assert_eq!(stock_from_db(&db, &product).await, (8, 8, 0, 0));
    let events: i64 = db
        .query_one(
            "SELECT count(*) FROM outbox_events WHERE type = 'product.restocked' AND subject_id = $1",
            &[&product],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 1);
}
