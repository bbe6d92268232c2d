//! Hostile and careless input: invented methods, junk ids and queries, odd schemes. None
//! of it may be a 5xx, reach PostgreSQL, or grow the metrics.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app};

/// The `flashsale_http_requests_total` series of `/metrics` whose labels contain `needle`.
fn request_series<'a>(metrics: &'a str, needle: &'a str) -> impl Iterator<Item = &'a str> {
    metrics
        .lines()
        .filter(move |l| l.starts_with("flashsale_http_requests_total{") && l.contains(needle))
}

#[actix_web::test]
async fn a_flood_of_invented_methods_adds_no_series() {
    let app = spawn_app().await;
    let floods = 300;
    for i in 0..floods {
        let method = reqwest::Method::from_bytes(format!("XMETHOD{i}").as_bytes()).unwrap();
        let response = app
            .client
            .request(method, app.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    // The same flood on a path no route has.
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("YMETHOD{i}").as_bytes()).unwrap();
        let path = format!("/no/such/{i}");
        let response = app
            .client
            .request(method, app.url(&path))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error());
    }
    let after = app.metrics_text().await;
    assert!(
        !after.contains("XMETHOD") && !after.contains("YMETHOD"),
        "an invented method became a label"
    );
    assert!(!after.contains("/no/such"), "a raw path became a label");
    // They are all counted, under `other`.
    let other: f64 = request_series(&after, r#"method="other""#)
        .filter(|l| l.contains(r#"route="/healthz""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(other >= floods as f64, "{other} requests counted as other");
    // 350 invented methods on two routes: one series each (405 on /healthz, 404 unmatched).
    let others = request_series(&after, r#"method="other""#).count();
    assert!(others <= 2, "{others} series for invented methods");
}

#[actix_web::test]
async fn junk_ids_and_queries_are_4xx_problems_never_5xx() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 5, json!({})).await;
    let long = "a".repeat(65);
    let not_found = [
        ("/api/v1/products/%00".to_owned(), "product_not_found"),
        ("/api/v1/products/%00/stock".to_owned(), "product_not_found"),
        ("/api/v1/products/prd_%01x".to_owned(), "product_not_found"),
        ("/api/v1/products/%FF%FE".to_owned(), "product_not_found"),
        (format!("/api/v1/products/{long}"), "product_not_found"),
        (
            format!("/api/v1/products/{long}/stock"),
            "product_not_found",
        ),
        ("/api/v1/products/%E2%82%AC".to_owned(), "product_not_found"),
        ("/api/v1/orders/%00".to_owned(), "order_not_found"),
        ("/api/v1/stores/%00".to_owned(), "store_not_found"),
        ("/api/v1/%00".to_owned(), "not_found"),
    ];
    for (path, code) in &not_found {
        let response = app.get(path, &store.admin).await;
        assert_problem(response, 404, code).await;
    }
    for path in ["/api/v1/orders/%00/confirm", "/api/v1/orders/%00/cancel"] {
        let response = app
            .post(path, &store.admin, &json!({"payment_reference": "x"}))
            .await;
        assert_problem(response, 404, "order_not_found").await;
    }
    let long_cursor = "x".repeat(5000);
    let invalid = [
        ("/api/v1/orders?customer_id=%00", "customer_id"),
        ("/api/v1/orders?customer_id=a%0Ab", "customer_id"),
        ("/api/v1/orders?product_id=%FF", "product_id"),
        ("/api/v1/products?status=%00", "status"),
        ("/api/v1/products?%00=1", "query"),
        (
            "/api/v1/products?cursor=-created_at~-9223372036854775808~prd_x",
            "cursor",
        ),
        (
            "/api/v1/products?sort=created_at&cursor=created_at~99999999999999999999~prd_x",
            "cursor",
        ),
        ("/api/v1/products?cursor=-created_at~1~prd_%00", "cursor"),
        (
            "/api/v1/drops?cursor=drops~-9223372036854775808~prd_x",
            "cursor",
        ),
        ("/api/v1/drops?cursor=nonsense", "cursor"),
    ];
    for (path, field) in invalid {
        let response = app.get(path, &store.admin).await;
        let body = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], field, "{path}: {body}");
    }
    let long_cursor_path = format!("/api/v1/orders?cursor={long_cursor}");
    let response = app.get(&long_cursor_path, &store.admin).await;
    assert_problem(response, 422, "validation_failed").await;

    // NUL inside JSON bodies: a 422 naming the field.
    let mut body = crate::helpers::checkout_body(&product, 1, "a\u{0}b");
    let response = app.checkout(&store.storefront, "nul-1", &body).await;
    let problem = assert_problem(response, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "customer_id");
    body["customer_id"] = json!("alice");
    body["product_id"] = json!("prd_\u{0}");
    let response = app.checkout(&store.storefront, "nul-2", &body).await;
    assert!(response.status().is_client_error(), "{}", response.status());

    // Nothing above was an outage: the product still sells, the database is up.
    let response = app
        .get(&format!("/api/v1/products/{product}"), &store.storefront)
        .await;
    assert_eq!(response.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[actix_web::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 5, json!({})).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/products/{product}")))
            .header("Authorization", format!("{scheme} {}", store.storefront))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "scheme {scheme}");
    }
    for value in [
        format!("Basic {}", store.storefront),
        format!("Bearer{}", store.storefront),
        store.storefront.clone(),
    ] {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/products/{product}")))
            .header("Authorization", value)
            .send()
            .await
            .unwrap();
        assert_problem(response, 401, "unauthorized").await;
    }
}

#[actix_web::test]
async fn drops_are_paginated_with_limit_and_cursor() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let start = chrono::Utc::now() + chrono::Duration::hours(1);
    let mut made = Vec::new();
    for i in 0..7 {
        let at = (start + chrono::Duration::minutes(i % 3)).to_rfc3339();
        made.push(
            app.create_product(&store, 1, json!({"sale_starts_at": at}))
                .await,
        );
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/drops?limit=3".to_owned();
    loop {
        let response = app.get(&path, &store.storefront).await;
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/drops?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    let mut sorted = made.clone();
    sorted.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got, sorted, "every drop exactly once");
    let response = app.get("/api/v1/drops?limit=0", &store.storefront).await;
    assert_problem(response, 422, "validation_failed").await;
}

#[actix_web::test]
async fn one_stores_catalog_write_keeps_other_stores_listings_cached() {
    let app = spawn_app().await;
    let a = app.create_store().await;
    let b = app.create_store().await;
    let a_product = app.create_product(&a, 1, json!({})).await;
    app.create_product(&b, 1, json!({})).await;
    let db = app.db().await;
    // A's listing, rendered once and cached for its max-age (1 s).
    let first = app
        .get("/api/v1/products", &a.storefront)
        .await
        .text()
        .await
        .unwrap();
    // Behind the service's back, so only a fresh rendering would show it.
    db.execute(
        "UPDATE products SET name = 'changed in the database' WHERE id = $1",
        &[&a_product],
    )
    .await
    .unwrap();
    // B writes its catalog: A's cached page must survive it.
    app.create_product(&b, 1, json!({})).await;
    let again = app
        .get("/api/v1/products", &a.storefront)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(first, again, "B's write discarded A's cached listing");
    // A's own write is visible at once.
    app.create_product(&a, 1, json!({})).await;
    let page: Value = app
        .get("/api/v1/products", &a.storefront)
        .await
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().any(|p| p["name"] == "changed in the database"));
}
