//! Checkout: every error code, idempotency (also across a restart), consent audit,
//! overload.

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, checkout_body, spawn_app, spawn_app_on, spawn_app_with, stock_from_db,
};

#[actix_web::test]
async fn every_checkout_error_code_and_bad_input_changes_nothing() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let pk = &store.storefront;
    let product = app
        .create_product(&store, 3, json!({"max_per_customer": 2}))
        .await;
    let body = checkout_body(&product, 1, "alice");

    let no_key = app
        .client
        .post(app.url("/api/v1/checkout"))
        .bearer_auth(pk)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(no_key, 400, "missing_idempotency_key").await;
    let bad_key = assert_problem(
        app.checkout(pk, "has space", &body).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(bad_key["errors"][0]["field"], "Idempotency-Key");
    assert_problem(
        app.checkout(pk, &"k".repeat(256), &body).await,
        422,
        "validation_failed",
    )
    .await;
    let malformed = app
        .client
        .post(app.url("/api/v1/checkout"))
        .bearer_auth(pk)
        .header("Idempotency-Key", "m1")
        .body("{\"product_id\":")
        .send()
        .await
        .unwrap();
    assert_problem(malformed, 400, "malformed_body").await;
    let invalid = json!({"product_id": 7, "quantity": 101, "customer_id": "", "consent": {"terms_version": "v1", "marketing": "no"}, "coupon": "X"});
    let problem = assert_problem(
        app.checkout(pk, "v1", &invalid).await,
        422,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "product_id",
            "quantity",
            "customer_id",
            "consent.marketing",
            "coupon"
        ]
    );
    assert_problem(
        app.checkout(pk, "q0", &checkout_body(&product, 0, "a"))
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        app.checkout(pk, "nf", &checkout_body("prd_missing", 1, "a"))
            .await,
        404,
        "product_not_found",
    )
    .await;

    let later = (Utc::now() + Duration::hours(1)).to_rfc3339();
    let scheduled = app
        .create_product(&store, 5, json!({"sale_starts_at": later}))
        .await;
    assert_problem(
        app.checkout(pk, "s1", &checkout_body(&scheduled, 1, "a"))
            .await,
        409,
        "sale_not_started",
    )
    .await;
    let ended = app
        .create_product(&store, 5, json!({"sale_starts_at": "2020-01-01T00:00:00Z", "sale_ends_at": "2020-01-02T00:00:00Z"}))
        .await;
    assert_problem(
        app.checkout(pk, "e1", &checkout_body(&ended, 1, "a")).await,
        409,
        "sale_ended",
    )
    .await;

    // Limits: alice may hold 2; the product has 3.
    assert_problem(
        app.checkout(pk, "l0", &checkout_body(&product, 3, "alice"))
            .await,
        409,
        "customer_limit_exceeded",
    )
    .await;
    let first = app
        .checkout(pk, "a1", &checkout_body(&product, 2, "alice"))
        .await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["status"], "confirmed");
    assert_eq!(first["total_cents"], 2 * 12_900);
    assert!(first["expires_at"].is_null());
    assert_problem(
        app.checkout(pk, "a2", &checkout_body(&product, 1, "alice"))
            .await,
        409,
        "customer_limit_exceeded",
    )
    .await;
    assert_problem(
        app.checkout(pk, "b1", &checkout_body(&product, 2, "bob"))
            .await,
        409,
        "insufficient_stock",
    )
    .await;
    assert_eq!(
        app.checkout(pk, "b2", &checkout_body(&product, 1, "bob"))
            .await
            .status(),
        201
    );
    assert_problem(
        app.checkout(pk, "c1", &checkout_body(&product, 1, "carol"))
            .await,
        409,
        "sold_out",
    )
    .await;

    // The same key with another body.
    assert_problem(
        app.checkout(pk, "a1", &checkout_body(&product, 1, "alice"))
            .await,
        422,
        "idempotency_key_reused",
    )
    .await;

    // The database holds exactly the two orders that got 201.
    let db = app.db().await;
    let orders: i64 = db
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 2);
    assert_eq!(stock_from_db(&db, &product).await, (3, 0, 3, 2));
    for p in [&scheduled, &ended] {
        assert_eq!(stock_from_db(&db, p).await, (5, 5, 0, 0));
    }
}

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

#[actix_web::test]
async fn consent_is_kept_in_the_order_row_and_cannot_be_changed() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app
        .create_product(&store, 5, json!({"hold_seconds": 600}))
        .await;
    let mut ids = Vec::new();
    for (key, customer) in [("k", "alice"), ("k2", "bob")] {
        let body = json!({"product_id": product, "quantity": 2, "customer_id": customer,
            "consent": {"terms_version": "tos-7", "marketing": customer == "alice"}});
        let order: Value = app
            .checkout(&store.storefront, key, &body)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(order["status"], "reserved");
        ids.push(order["id"].as_str().unwrap().to_owned());
        if customer == "alice" {
            let expires =
                chrono::DateTime::parse_from_rfc3339(order["expires_at"].as_str().unwrap())
                    .unwrap();
            let created =
                chrono::DateTime::parse_from_rfc3339(order["created_at"].as_str().unwrap())
                    .unwrap();
            assert_eq!((expires - created).num_seconds(), 600);
        }
    }
    let id = &ids[0];

    let db = app.db().await;
    let consent = "SELECT terms_version, marketing, host(client_addr), api_key_id IS NOT NULL \
                   FROM orders WHERE id = $1";
    let row = db.query_one(consent, &[id]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "tos-7");
    assert!(row.get::<_, bool>(1));
    assert_eq!(row.get::<_, String>(2), "127.0.0.1");
    assert!(row.get::<_, bool>(3));
    // The audit trail shows it as its first entry; the audit table itself holds status
    // changes only.
    let trail = flashsale::db::orders::audit_trail(&db, id).await.unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(
        (trail[0].event.as_str(), trail[0].status.as_str()),
        ("created", "reserved")
    );
    assert_eq!(
        trail[0].detail,
        json!({"terms_version": "tos-7", "marketing": true})
    );
    let audit_rows: i64 = db
        .query_one("SELECT count(*) FROM order_audit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(audit_rows, 0);

    // Changing what the order was created with is refused by PostgreSQL, column by
    // column, even to the same value, and so is deleting it.
    for change in [
        "UPDATE orders SET terms_version = 'tos-8'",
        "UPDATE orders SET marketing = NOT marketing",
        "UPDATE orders SET client_addr = '10.0.0.1'",
        "UPDATE orders SET api_key_id = 'key_other'",
        "UPDATE orders SET created_at = now()",
        "UPDATE orders SET quantity = quantity",
        "UPDATE orders SET status = 'confirmed', terms_version = terms_version",
        "DELETE FROM orders",
    ] {
        let refused = db.execute(change, &[]).await;
        let error = refused.expect_err(change);
        let error = error.as_db_error().expect(change).message();
        assert!(error.contains("immutable"), "{change}: {error}");
    }
    assert!(db
        .execute("UPDATE order_audit SET event = 'x'", &[])
        .await
        .is_err());
    assert!(db.execute("DELETE FROM order_audit", &[]).await.is_err());

    // The service's own changes are status changes: confirm and cancel still work, and
    // each is in the trail after the consent record, which is as it was.
    let confirmed = app
        .post(
            &format!("/api/v1/orders/{id}/confirm"),
            &store.admin,
            &json!({"payment_reference": "pay_1"}),
        )
        .await;
    assert_eq!(confirmed.status(), 200);
    let cancelled = app
        .post(
            &format!("/api/v1/orders/{}/cancel", ids[1]),
            &store.admin,
            &json!({}),
        )
        .await;
    assert_eq!(cancelled.status(), 200);
    let statuses: Vec<(String, String)> = db
        .query(
            "SELECT id, status FROM orders WHERE id = ANY($1) ORDER BY id",
            &[&ids],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut expected = vec![
        (ids[0].clone(), "confirmed".to_owned()),
        (ids[1].clone(), "cancelled".to_owned()),
    ];
    expected.sort();
    assert_eq!(statuses, expected);
    let row = db.query_one(consent, &[id]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "tos-7");
    assert!(row.get::<_, bool>(1));
    let events: Vec<String> = flashsale::db::orders::audit_trail(&db, id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, ["created", "confirmed"]);
    let bob = flashsale::db::orders::audit_trail(&db, &ids[1])
        .await
        .unwrap();
    assert_eq!(bob[0].detail["marketing"], false);
    assert_eq!(bob.last().unwrap().event, "cancelled");
    assert_eq!(stock_from_db(&db, &product).await, (5, 3, 2, 1));
}

#[actix_web::test]
async fn full_queues_answer_503_overloaded_and_give_the_stock_back() {
    // A writer that holds at most 4 orders and waits 300 ms to write them.
    let app = spawn_app_with(|s| {
        s.mailbox_capacity = 4;
        s.batch_linger_ms = 300;
        s.batches_in_flight = 1;
    })
    .await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 1000, json!({})).await;
    let results = futures_util::future::join_all((0..120).map(|i| {
        let app = &app;
        let store = &store;
        let product = &product;
        async move {
            let response = app
                .checkout(
                    &store.storefront,
                    &format!("k{i}"),
                    &checkout_body(product, 1, &format!("c{i}")),
                )
                .await;
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, retry_after, body)
        }
    }))
    .await;
    let mut created = 0;
    let mut overloaded = 0;
    for (status, retry_after, body) in results {
        match status {
            201 => created += 1,
            503 => {
                assert_eq!(body["code"], "overloaded");
                assert!(retry_after.is_some(), "503 carries Retry-After");
                overloaded += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(overloaded > 0, "the bounded queue refused some");
    assert!(created > 0);
    let (total, available, ordered, count) = stock_from_db(&app.db().await, &product).await;
    assert_eq!((total, ordered, count), (1000, created, created));
    assert_eq!(available, 1000 - created);
    // The refused ones' stock is back in memory too.
    let stock: Value = app
        .get(&format!("/api/v1/products/{product}/stock"), &store.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stock["stock_available"], 1000 - created);
}

/// `POST /products/{id}/checkout` is the same checkout with the product in the path: the
/// body may leave `product_id` out, one naming another product is a 422, and a key is one
/// key whichever of the two paths it comes through.
#[actix_web::test]
async fn a_checkout_placed_by_the_products_path_is_the_same_checkout() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 10, json!({})).await;
    let other = app.create_product(&store, 10, json!({})).await;
    let by_path = |product: &str, key: &str, body: Value| {
        let request = app
            .client
            .post(app.url(&format!("/api/v1/products/{product}/checkout")))
            .bearer_auth(&store.storefront)
            .header("Idempotency-Key", key)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let mut body = checkout_body(&product, 2, "alice");
    body.as_object_mut().unwrap().remove("product_id");

    let first = by_path(&product, "path-1", body.clone()).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["product_id"], product.as_str());
    assert_eq!(first["quantity"], 2);

    // The same key and body through /checkout (product in the body) is the same request.
    let replay = app
        .checkout(
            &store.storefront,
            "path-1",
            &checkout_body(&product, 2, "alice"),
        )
        .await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["Idempotent-Replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap(), first);

    // A body that names the path's product is fine; another product is a 422, nothing done.
    let named = by_path(&product, "path-2", checkout_body(&product, 1, "bob")).await;
    assert_eq!(named.status(), 201);
    let problem = assert_problem(
        by_path(&product, "path-3", checkout_body(&other, 1, "carol")).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "product_id");
    assert_problem(
        by_path("prd_nope", "path-4", body.clone()).await,
        404,
        "product_not_found",
    )
    .await;

    let db = app.db().await;
    assert_eq!(stock_from_db(&db, &product).await, (10, 7, 3, 2));
    assert_eq!(stock_from_db(&db, &other).await, (10, 10, 0, 0));
}
