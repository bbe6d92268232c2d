//! Every checkout error code; bad input changes nothing.

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, checkout_body, spawn_app, stock_from_db};

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
