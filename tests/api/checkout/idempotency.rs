//! The Idempotency-Key: replays return the original answer (also after a restart), and
//! concurrent duplicates of one key buy once.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, checkout_body, spawn_app, spawn_app_on, stock_from_db};

#[actix_web::test]
async fn replays_return_the_original_answer_also_after_a_restart() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 1, json!({})).await;
    let body = checkout_body(&product, 1, "alice");

    let original = app.checkout(&store.storefront, "order-1", &body).await;
    assert_eq!(original.status(), 201);
    assert!(original.headers().get("idempotent-replayed").is_none());
    let original = original.text().await.unwrap();
    let replay = app.checkout(&store.storefront, "order-1", &body).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.text().await.unwrap(), original);

    // A refusal binds nothing: the same key is decided afresh, not replayed, and may
    // come with another body (API.md: "a refusal (4xx) or a 503 binds nothing").
    let refused = app
        .checkout(
            &store.storefront,
            "order-2",
            &checkout_body(&product, 1, "bob"),
        )
        .await;
    assert_problem(refused, 409, "sold_out").await;
    let again = app
        .checkout(
            &store.storefront,
            "order-2",
            &checkout_body(&product, 1, "bob"),
        )
        .await;
    assert!(again.headers().get("idempotent-replayed").is_none());
    assert_problem(again, 409, "sold_out").await;
    assert_problem(
        app.checkout(
            &store.storefront,
            "order-2",
            &checkout_body(&product, 1, "eve"),
        )
        .await,
        409,
        "sold_out",
    )
    .await;

    // Restart: a new process on the same database; the product is sold out, yet the
    // retry gets its order back, byte for byte.
    let db_url = app.db_url.clone();
    app.stop().await;
    let app = spawn_app_on(&db_url, |_| {}).await;
    // A new buyer first: the product actor loads, finds it sold out and closes its gate
    // (the fast path); the old key must still get through to its order.
    let late = app
        .checkout(
            &store.storefront,
            "order-3",
            &checkout_body(&product, 1, "carol"),
        )
        .await;
    assert_problem(late, 409, "sold_out").await;
    let late = app
        .checkout(
            &store.storefront,
            "order-4",
            &checkout_body(&product, 1, "dave"),
        )
        .await;
    assert_problem(late, 409, "sold_out").await;
    let replay = app.checkout(&store.storefront, "order-1", &body).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.text().await.unwrap(), original);
    assert_problem(
        app.checkout(
            &store.storefront,
            "order-1",
            &checkout_body(&product, 1, "mallory"),
        )
        .await,
        422,
        "idempotency_key_reused",
    )
    .await;

    let orders: i64 = app
        .db()
        .await
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 1);
}

#[actix_web::test]
async fn concurrent_duplicates_of_one_key_buy_once() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 100, json!({})).await;
    let body = checkout_body(&product, 1, "alice");
    let results = futures_util::future::join_all((0..40).map(|_| async {
        let response = app.checkout(&store.storefront, "same-key", &body).await;
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    }))
    .await;
    let mut order_ids = std::collections::HashSet::new();
    for (status, body) in &results {
        match status {
            201 => {
                order_ids.insert(body["id"].as_str().unwrap().to_owned());
            }
            409 => assert_eq!(body["code"], "idempotency_in_progress"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(order_ids.len(), 1, "every 201 is the same order");
    let db = app.db().await;
    assert_eq!(stock_from_db(&db, &product).await, (100, 99, 1, 1));
}

/// A key is one per store: used on one product, it is refused on another (422), also
/// when it comes with a crowd of new buyers whose orders share its batch. The writer's
/// plain insert fails on the used key and the batch goes again without it: every other
/// buyer gets their order, and the refused key takes no stock.
#[actix_web::test]
async fn a_key_used_on_another_product_is_refused_and_its_batch_still_commits() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let first = app.create_product(&store, 10, json!({})).await;
    let second = app.create_product(&store, 100, json!({})).await;
    let used = app
        .checkout(
            &store.storefront,
            "shared",
            &checkout_body(&first, 1, "alice"),
        )
        .await;
    assert_eq!(used.status(), 201);

    let buyers = (0..30).map(|i| (format!("new-{i}"), format!("buyer-{i}")));
    let results = futures_util::future::join_all(
        buyers
            .map(|(key, customer)| (key, customer, false))
            .chain((0..5).map(|i| ("shared".to_owned(), format!("mallory-{i}"), true)))
            .map(|(key, customer, shared)| {
                let (app, store, second) = (&app, &store, &second);
                async move {
                    let body = checkout_body(second, 1, &customer);
                    let response = app.checkout(&store.storefront, &key, &body).await;
                    let status = response.status().as_u16();
                    (shared, status, response.json::<Value>().await.unwrap())
                }
            }),
    )
    .await;
    let mut refused = 0;
    for (shared, status, body) in &results {
        match (shared, status) {
            (false, 201) => {}
            (true, 422) => {
                assert_eq!(body["code"], "idempotency_key_reused");
                refused += 1;
            }
            (true, 409) => assert_eq!(body["code"], "idempotency_in_progress"),
            _ => panic!("unexpected {status} (shared key: {shared}): {body}"),
        }
    }
    assert!(refused >= 1, "the used key was never refused: {results:?}");
    assert_problem(
        app.checkout(
            &store.storefront,
            "shared",
            &checkout_body(&second, 1, "mallory"),
        )
        .await,
        422,
        "idempotency_key_reused",
    )
    .await;
    let db = app.db().await;
    assert_eq!(stock_from_db(&db, &first).await, (10, 9, 1, 1));
    assert_eq!(stock_from_db(&db, &second).await, (100, 70, 30, 30));
}
