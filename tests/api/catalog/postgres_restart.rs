//! A real PostgreSQL of the test's own, stopped and started under a running server.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{assert_problem, checkout_body, spawn_app_on, wait_ready};

#[actix_web::test]
async fn postgres_stopped_and_started_under_a_running_server() {
    use flashsale::db::embedded::{Durability, EmbeddedPostgres};
    // A PostgreSQL of this test's own, so that stopping it disturbs no other test.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("outage-pg-{}", uuid::Uuid::new_v4().simple()));
    let pg = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || EmbeddedPostgres::start(&dir, Durability::Fast)
    })
    .await
    .unwrap()
    .unwrap();
    let port = pg.port();
    flashsale::db::ensure_database(&pg.url("postgres"), "flashsale")
        .await
        .unwrap();
    let app = spawn_app_on(&pg.url("flashsale"), |_| {}).await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 10, json!({})).await;
    assert_eq!(
        app.checkout(
            &store.storefront,
            "before",
            &checkout_body(&product, 1, "a")
        )
        .await
        .status(),
        201
    );
    let etag = app
        .get(&format!("/api/v1/products/{product}"), &store.storefront)
        .await
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();

    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .unwrap();
    // /readyz notices within the probe interval.
    let mut ready = 200;
    for _ in 0..50 {
        ready = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 503);
    // Reads still answer from memory, saying they may be stale; revalidation still works.
    let page = app
        .get(&format!("/api/v1/products/{product}"), &store.storefront)
        .await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["flashsale-degraded"], "database-unavailable");
    let revalidated = app
        .client
        .get(app.url(&format!("/api/v1/products/{product}")))
        .bearer_auth(&store.storefront)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    // Checkouts fail fast (the breaker is open), with Retry-After.
    let asked = Instant::now();
    let refused = app
        .checkout(
            &store.storefront,
            "during",
            &checkout_body(&product, 1, "b"),
        )
        .await;
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "failed fast: {:?}",
        asked.elapsed()
    );
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, 503, "unavailable").await;

    // PostgreSQL comes back on the same port: everything recovers by itself.
    let pg = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || EmbeddedPostgres::start_on(&dir, Durability::Fast, Some(port))
    })
    .await
    .unwrap()
    .unwrap();
    wait_ready(&app).await;
    assert_eq!(
        app.checkout(
            &store.storefront,
            "during",
            &checkout_body(&product, 1, "b")
        )
        .await
        .status(),
        201
    );
    let page = app
        .get(&format!("/api/v1/products/{product}"), &store.storefront)
        .await;
    assert!(page.headers().get("flashsale-degraded").is_none());
    assert_eq!(page.json::<Value>().await.unwrap()["stock_available"], 8);
    app.stop().await;
    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
