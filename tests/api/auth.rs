//! Stores, keys and every auth rule; bodies that are too big or not JSON; routing.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, checkout_body, gets_while_locked, spawn_app};

#[actix_web::test]
async fn operator_creates_a_store_and_keys_are_shown_once_and_stored_hashed() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/api/v1/stores",
            &app.admin_token,
            &json!({"name": "Acme", "plan": "free"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let admin = body["api_keys"]["admin"].as_str().unwrap();
    let storefront = body["api_keys"]["storefront"].as_str().unwrap();
    assert!(admin.starts_with("sk_") && storefront.starts_with("pk_"));
    assert_eq!(body["name"], "Acme");
    assert_eq!(body["plan"], "free");

    // Read back: no keys in it.
    let id = body["id"].as_str().unwrap();
    let read: Value = app
        .get(&format!("/api/v1/stores/{id}"), &app.admin_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["id"], id);
    assert!(read.get("api_keys").is_none());

    // Only hashes at rest: neither secret appears in the database.
    let db = app.db().await;
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM api_keys WHERE store_id = $1 AND length(key_hash) = 32",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 2);
    let plain: i64 = db
        .query_one(
            "SELECT count(*) FROM api_keys WHERE encode(key_hash, 'escape') LIKE '%' || $1 || '%'",
            &[&&admin[3..]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain, 0);
}

#[actix_web::test]
async fn store_rules_operator_admin_storefront_and_other_stores() {
    let app = spawn_app().await;
    let a = app.create_store().await;
    let b = app.create_store().await;
    let path = format!("/api/v1/stores/{}", a.id);

    assert_eq!(app.get(&path, &app.admin_token).await.status(), 200);
    assert_eq!(app.get(&path, &a.admin).await.status(), 200);
    assert_problem(app.get(&path, &a.storefront).await, 403, "forbidden").await;
    // Another store's key: as if the store did not exist.
    assert_problem(app.get(&path, &b.admin).await, 404, "store_not_found").await;
    assert_problem(
        app.get("/api/v1/stores/st_nope", &app.admin_token).await,
        404,
        "store_not_found",
    )
    .await;

    // Only the operator creates stores.
    let body = json!({"name": "X", "plan": "pro"});
    assert_problem(
        app.post("/api/v1/stores", &a.admin, &body).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.post("/api/v1/stores", "sk_unknown", &body).await,
        401,
        "unauthorized",
    )
    .await;
    let no_token = app
        .client
        .post(app.url("/api/v1/stores"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.headers()["www-authenticate"], "Bearer");
    assert_problem(no_token, 401, "unauthorized").await;
}

#[actix_web::test]
async fn key_roles_on_products_checkout_and_orders() {
    let app = spawn_app().await;
    let a = app.create_store().await;
    let b = app.create_store().await;
    let product = app.create_product(&a, 10, json!({})).await;
    let new_product =
        json!({"sku": "s", "name": "n", "price_cents": 1, "currency": "EUR", "stock": 1});

    // Storefront and operator may not create products.
    assert_problem(
        app.post("/api/v1/products", &a.storefront, &new_product)
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.post("/api/v1/products", &app.admin_token, &new_product)
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.post(
            &format!("/api/v1/products/{product}/restock"),
            &a.storefront,
            &json!({"quantity": 1}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;

    // Both store keys read products and check out.
    assert_eq!(
        app.get(&format!("/api/v1/products/{product}"), &a.storefront)
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get(&format!("/api/v1/products/{product}"), &a.admin)
            .await
            .status(),
        200
    );
    let order: Value = app
        .checkout(&a.storefront, "k-1", &checkout_body(&product, 1, "c1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        app.checkout(&a.admin, "k-2", &checkout_body(&product, 1, "c2"))
            .await
            .status(),
        201
    );
    assert_problem(
        app.checkout(&app.admin_token, "k-3", &checkout_body(&product, 1, "c3"))
            .await,
        403,
        "forbidden",
    )
    .await;
    let order_path = format!("/api/v1/orders/{}", order["id"].as_str().unwrap());
    assert_eq!(app.get(&order_path, &a.storefront).await.status(), 200);
    assert_eq!(app.get(&order_path, &a.admin).await.status(), 200);

    // Store B sees none of it: 404, exactly as if it did not exist.
    assert_problem(
        app.get(&format!("/api/v1/products/{product}"), &b.storefront)
            .await,
        404,
        "product_not_found",
    )
    .await;
    assert_problem(
        app.get(&format!("/api/v1/products/{product}/stock"), &b.admin)
            .await,
        404,
        "product_not_found",
    )
    .await;
    assert_problem(app.get(&order_path, &b.admin).await, 404, "order_not_found").await;
    assert_problem(
        app.checkout(&b.storefront, "k-4", &checkout_body(&product, 1, "c4"))
            .await,
        404,
        "product_not_found",
    )
    .await;
    assert_problem(
        app.post(
            &format!("/api/v1/products/{product}/restock"),
            &b.admin,
            &json!({"quantity": 5}),
        )
        .await,
        404,
        "product_not_found",
    )
    .await;

    // And B's failed attempts changed nothing.
    let stock: Value = app
        .get(&format!("/api/v1/products/{product}/stock"), &a.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stock["stock_available"], 8);
}

#[actix_web::test]
async fn malformed_oversized_and_unrouted_requests_get_problems() {
    let app = spawn_app().await;
    let raw = app
        .client
        .post(app.url("/api/v1/stores"))
        .bearer_auth(&app.admin_token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(raw, 400, "malformed_body").await;

    let big = json!({"name": "x".repeat(70 * 1024), "plan": "pro"});
    assert_problem(
        app.post("/api/v1/stores", &app.admin_token, &big).await,
        413,
        "payload_too_large",
    )
    .await;

    let invalid = app
        .post(
            "/api/v1/stores",
            &app.admin_token,
            &json!({"name": "", "plan": "gold", "x": 1}),
        )
        .await;
    let body = assert_problem(invalid, 422, "validation_failed").await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "plan", "x"]);
    let count: i64 = app
        .db()
        .await
        .query_one("SELECT count(*) FROM stores", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "bad input changes nothing");

    assert_problem(
        app.get("/api/v1/nothing-here", &app.admin_token).await,
        404,
        "not_found",
    )
    .await;
    let wrong_method = app
        .client
        .delete(app.url("/api/v1/checkout"))
        .send()
        .await
        .unwrap();
    assert_problem(wrong_method, 405, "method_not_allowed").await;
}

#[actix_web::test]
async fn operations_endpoints_and_openapi_document() {
    let app = spawn_app().await;
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("# TYPE"), "{metrics}");

    let doc: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/stores", "post"),
        ("/api/v1/stores/{id}", "get"),
        ("/api/v1/products", "post"),
        ("/api/v1/products/{id}", "get"),
        ("/api/v1/products/{id}/stock", "get"),
        ("/api/v1/products/{id}/restock", "post"),
        ("/api/v1/checkout", "post"),
        ("/api/v1/orders/{id}", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from OpenAPI"
        );
    }
}

/// A drop that opens on a cold key cache: every buyer comes with the store's one
/// storefront key. While the key's lookup is held up (a lock on `api_keys`, for longer
/// than a request may wait for a pooled connection), the requests that missed with it
/// wait for that one query instead of each taking a connection, so none of them is
/// turned away when it answers.
#[actix_web::test]
async fn concurrent_misses_on_one_key_share_one_lookup() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 10, json!({})).await;

    let path = format!("/api/v1/products/{product}");
    let answers = gets_while_locked(&app, "api_keys", &path, &store.storefront, 40).await;
    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}
