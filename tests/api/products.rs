//! Products: create, validation, HTTP caching, stock, restock.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, checkout_body, spawn_app, stock_from_db};

#[actix_web::test]
async fn create_returns_the_full_representation() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let body = json!({
        "sku": "SNK-1", "name": "Sneaker", "description": "Limited", "price_cents": 12900, "currency": "EUR",
        "stock": 50, "max_per_customer": 2, "sale_starts_at": "2020-01-01T00:00:00Z", "hold_seconds": 0
    });
    let response = app.post("/api/v1/products", &store.admin, &body).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let p: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/products/{}", p["id"].as_str().unwrap())
    );
    for (field, value) in [
        ("store_id", json!(store.id)),
        ("sku", json!("SNK-1")),
        ("stock_total", json!(50)),
        ("stock_available", json!(50)),
        ("max_per_customer", json!(2)),
        ("status", json!("live")),
        ("sale_starts_at", json!("2020-01-01T00:00:00Z")),
        ("sale_ends_at", Value::Null),
        ("hold_seconds", json!(0)),
    ] {
        assert_eq!(p[field], value, "{field}");
    }
    assert!(p["updated_at"].is_string() && p["created_at"].is_string());

    // The same sku again in the same store: 409; in another store: fine.
    assert_problem(
        app.post("/api/v1/products", &store.admin, &body).await,
        409,
        "sku_taken",
    )
    .await;
    let other = app.create_store().await;
    assert_eq!(
        app.post("/api/v1/products", &other.admin, &body)
            .await
            .status(),
        201
    );
}

#[actix_web::test]
async fn invalid_products_name_every_field_and_change_nothing() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let body = json!({
        "sku": "", "price_cents": -1, "currency": "eur", "stock": "10", "max_per_customer": 0,
        "sale_starts_at": "tomorrow", "hold_seconds": -5, "colour": "red"
    });
    let problem = assert_problem(
        app.post("/api/v1/products", &store.admin, &body).await,
        422,
        "validation_failed",
    )
    .await;
    let mut fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "colour",
            "currency",
            "hold_seconds",
            "max_per_customer",
            "name",
            "price_cents",
            "sale_starts_at",
            "sku",
            "stock"
        ]
    );
    let window = json!({"sku": "a", "name": "a", "price_cents": 1, "currency": "EUR", "stock": 1,
        "sale_starts_at": "2030-01-02T00:00:00Z", "sale_ends_at": "2030-01-01T00:00:00Z"});
    let problem = assert_problem(
        app.post("/api/v1/products", &store.admin, &window).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "sale_ends_at");
    let not_object = app
        .post("/api/v1/products", &store.admin, &json!([1, 2]))
        .await;
    assert_problem(not_object, 422, "validation_failed").await;
    let count: i64 = app
        .db()
        .await
        .query_one("SELECT count(*) FROM products", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}

#[actix_web::test]
async fn product_reads_carry_validators_and_revalidate_with_304() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 5, json!({})).await;
    let path = format!("/api/v1/products/{product}");

    let first = app.get(&path, &store.storefront).await;
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(first.headers().contains_key("last-modified"));
    let cache_control = first.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cache_control.contains("max-age=") && cache_control.contains("stale-if-error"),
        "{cache_control}"
    );

    let revalidated = app.get_if_none_match(&path, &store.storefront, &etag).await;
    assert_eq!(revalidated.status(), 304);
    assert_eq!(revalidated.headers()["etag"].to_str().unwrap(), etag);
    assert!(revalidated.bytes().await.unwrap().is_empty());

    // A sale changes the representation, so the old tag no longer matches.
    assert_eq!(
        app.checkout(&store.storefront, "k1", &checkout_body(&product, 2, "c1"))
            .await
            .status(),
        201
    );
    let after = app.get_if_none_match(&path, &store.storefront, &etag).await;
    assert_eq!(after.status(), 200);
    assert_ne!(after.headers()["etag"].to_str().unwrap(), etag);
    let body: Value = after.json().await.unwrap();
    assert_eq!(body["stock_available"], 3);

    let stock = app.get(&format!("{path}/stock"), &store.storefront).await;
    assert!(stock.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age=1"));
    assert_eq!(
        stock.json::<Value>().await.unwrap(),
        json!({"stock_available": 3, "status": "live"})
    );
}

#[actix_web::test]
async fn restock_adds_to_total_and_available_and_reopens_a_sold_out_product() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 1, json!({})).await;
    assert_eq!(
        app.checkout(&store.storefront, "k1", &checkout_body(&product, 1, "a"))
            .await
            .status(),
        201
    );
    assert_problem(
        app.checkout(&store.storefront, "k2", &checkout_body(&product, 1, "b"))
            .await,
        409,
        "sold_out",
    )
    .await;

    let restock = format!("/api/v1/products/{product}/restock");
    for bad in [
        json!({"quantity": 0}),
        json!({"quantity": "5"}),
        json!({}),
        json!({"quantity": 1, "extra": 1}),
    ] {
        assert_problem(
            app.post(&restock, &store.admin, &bad).await,
            422,
            "validation_failed",
        )
        .await;
    }
    let response = app
        .post(&restock, &store.admin, &json!({"quantity": 4}))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (
            body["stock_total"].as_i64(),
            body["stock_available"].as_i64()
        ),
        (Some(5), Some(4))
    );
    assert_eq!(body["status"], "live");
    assert_eq!(
        app.checkout(&store.storefront, "k3", &checkout_body(&product, 4, "b"))
            .await
            .status(),
        201
    );

    let (total, available, ordered, _) = stock_from_db(&app.db().await, &product).await;
    assert_eq!((total, available, ordered), (5, 0, 5));
    assert_problem(
        app.post(
            "/api/v1/products/prd_nope/restock",
            &store.admin,
            &json!({"quantity": 1}),
        )
        .await,
        404,
        "product_not_found",
    )
    .await;
}

/// The front door serves product pages and their stock itself (without the router) when
/// the id is plain; everything else about those paths still goes through the routes.
/// Both must answer alike, and be counted under the route's label.
#[actix_web::test]
async fn product_reads_served_by_the_front_door_answer_as_the_routes_do() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let other = app.create_store().await;
    let product = app.create_product(&store, 5, json!({})).await;
    let path = format!("/api/v1/products/{product}");
    let before = app.metrics_text().await;

    // Served by the front door: the page (also trimmed by ?fields=) and the stock.
    let page = app.get(&path, &store.storefront).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["vary"], "Authorization");
    let page: Value = page.json().await.unwrap();
    assert_eq!(page["id"], product);
    let trimmed: Value = app
        .get(
            &format!("{path}?fields=id,stock_available"),
            &store.storefront,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(trimmed, json!({"id": product, "stock_available": 5}));
    let stock: Value = app
        .get(&format!("{path}/stock"), &store.storefront)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stock, json!({"stock_available": 5, "status": "live"}));

    // Refusals are the routes' refusals: unknown, another store's, no key, a bad query.
    assert_problem(
        app.get("/api/v1/products/prd_nope", &store.storefront)
            .await,
        404,
        "product_not_found",
    )
    .await;
    assert_problem(
        app.get("/api/v1/products/prd_nope/stock", &store.storefront)
            .await,
        404,
        "product_not_found",
    )
    .await;
    assert_problem(
        app.get(&path, &other.storefront).await,
        404,
        "product_not_found",
    )
    .await;
    assert_problem(app.get(&path, "pk_not_a_key").await, 401, "unauthorized").await;
    let no_key = app.client.get(app.url(&path)).send().await.unwrap();
    assert_problem(no_key, 401, "unauthorized").await;
    assert_problem(
        app.get(&format!("{path}?fields=nope"), &store.storefront)
            .await,
        422,
        "validation_failed",
    )
    .await;
    // An id that cannot be one (not plain) is refused at the door, with the same answer,
    // and never looked up.
    assert_problem(
        app.get("/api/v1/products/prd-nope", &store.storefront)
            .await,
        404,
        "product_not_found",
    )
    .await;
    assert_problem(
        app.get("/api/v1/products/prd-nope/stock", &store.storefront)
            .await,
        404,
        "product_not_found",
    )
    .await;
    // Other methods and deeper paths are the router's.
    let head = app
        .client
        .head(app.url(&path))
        .bearer_auth(&store.storefront)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 405);
    let patched = app
        .client
        .patch(app.url(&path))
        .bearer_auth(&store.admin)
        .json(&json!({"price_cents": 777}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    assert_problem(
        app.get(&format!("{path}/stock/x"), &store.storefront).await,
        404,
        "not_found",
    )
    .await;
    let page: Value = app
        .get(&path, &store.storefront)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["price_cents"], 777);

    // Counted under the routes' labels, like any routed request (the refused non-ids
    // under `unmatched`). (The registry is the process's, shared with the tests running
    // beside this one: at least these.)
    let after = app.metrics_text().await;
    for (route, status, count) in [
        ("/api/v1/products/{id}", "200", 3),
        ("/api/v1/products/{id}", "404", 2),
        ("/api/v1/products/{id}/stock", "200", 1),
        ("/api/v1/products/{id}/stock", "404", 1),
    ] {
        let series = format!(
            "flashsale_http_requests_total{{method=\"GET\",route=\"{route}\",status=\"{status}\"}} "
        );
        let value = |metrics: &str| -> u64 {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&series))
                .map_or(0, |v| v.parse().unwrap())
        };
        let counted = value(&after) - value(&before);
        assert!(
            counted >= count,
            "{series}: {counted} more, expected {count}"
        );
    }
}
