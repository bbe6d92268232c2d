//! Tenants apart: nothing a key of store B does can evict, replace or slow store A's
//! state; an unknown id costs at most a bounded negative-cache entry; idle products
//! passivate and come back from the database.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{checkout_body, spawn_app, spawn_app_with, TestApp};
use crate::passivation::wait_passivated;

/// A counter or gauge of `/metrics` (the line that starts with `series `).
async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[actix_web::test]
async fn another_stores_probe_leaves_the_page_served_from_memory() {
    let app = spawn_app().await;
    let a = app.create_store().await;
    let b = app.create_store().await;
    let product = app.create_product(&a, 5, json!({})).await;
    let path = format!("/api/v1/products/{product}");
    assert_eq!(app.get(&path, &a.storefront).await.status(), 200);
    // B asks for A's product (a 404), and its unknown-id actor lives out its linger.
    for _ in 0..3 {
        assert_eq!(app.get(&path, &b.storefront).await.status(), 404);
        assert_eq!(
            app.get(&format!("{path}/stock"), &b.storefront)
                .await
                .status(),
            404
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A's page is still the published one: a read is a hit, not a miss. (The counter is
    // the process's, shared with the tests running beside this one: a read whose window
    // saw no miss at all proves it was served from memory; with the page gone, every
    // read misses.)
    let misses = r#"flashsale_cache_requests_total{cache="snapshot",result="miss"}"#;
    // Busy neighbours make clean windows rare, never impossible: read until two are seen
    // (a page that is gone gives none however long one reads).
    let (mut clean, mut reads) = (0, 0);
    while clean < 2 && reads < 2000 {
        reads += 1;
        let before = metric(&app, misses).await;
        assert_eq!(app.get(&path, &a.storefront).await.status(), 200);
        if metric(&app, misses).await == before {
            clean += 1;
        }
    }
    assert!(
        clean >= 2,
        "only {clean} of {reads} reads were served from memory after another store's probe"
    );
    // And A still sells, its gate intact.
    let sold = app
        .checkout(&a.storefront, "t1", &checkout_body(&product, 1, "c"))
        .await;
    assert_eq!(sold.status(), 201);
}

#[actix_web::test]
async fn a_flood_of_unknown_ids_leaves_no_actors_behind() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let gauge = "flashsale_product_actors";
    let loads = r#"flashsale_product_loads_total{cause="request"}"#;
    let before = metric(&app, gauge).await;
    let ids: Vec<String> = (0..2000).map(|i| format!("prd_unknown{i:05}")).collect();
    let flood = |round: &'static str| {
        let app = &app;
        let ids = &ids;
        let key = store.storefront.clone();
        async move {
            let client = &app.client;
            let mut pending = futures_util::stream::iter(ids.iter().map(|id| {
                let key = key.clone();
                async move {
                    let r = client
                        .get(app.url(&format!("/api/v1/products/{id}")))
                        .bearer_auth(&key)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 404, "{round} {id}");
                }
            }))
            .buffer_unordered(4);
            use futures_util::StreamExt;
            while pending.next().await.is_some() {}
        }
    };
    flood("first").await;
    // The same ids again at once: answered from the negative cache, no load each.
    let loads_before = metric(&app, loads).await;
    flood("again").await;
    let reloaded = metric(&app, loads).await - loads_before;
    assert!(
        reloaded < 200.0,
        "{reloaded} of 2000 known-missing ids loaded again"
    );
    // The actors that looked are gone after their linger.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = metric(&app, gauge).await - before;
    assert!(
        left < 100.0,
        "{left} product actors left behind by the flood"
    );
}

#[actix_web::test]
async fn idle_products_passivate_and_come_back_from_the_database() {
    let app = spawn_app_with(|s| {
        s.product_idle_secs = 1;
        s.request_deadline_ms = 3000;
    })
    .await;
    let store = app.create_store().await;
    let product = app
        .create_product(&store, 5, json!({"max_per_customer": 2}))
        .await;
    let path = format!("/api/v1/products/{product}");
    let sold = app
        .checkout(
            &store.storefront,
            "p1",
            &checkout_body(&product, 2, "carol"),
        )
        .await;
    assert_eq!(sold.status(), 201);
    // This product's own stock gauge, not the process-wide passivation counter that
    // the tests beside this one move too.
    wait_passivated(&app, &product, Duration::from_secs(20)).await;
    // Back from the database with everything it knew: stock, the customer's count, the
    // idempotency key's order.
    let page: serde_json::Value = app
        .get(&path, &store.storefront)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["stock_available"], 3);
    let over = app
        .checkout(
            &store.storefront,
            "p2",
            &checkout_body(&product, 1, "carol"),
        )
        .await;
    assert_eq!(over.status(), 409, "the per-customer count was lost");
    let replay = app
        .checkout(
            &store.storefront,
            "p1",
            &checkout_body(&product, 2, "carol"),
        )
        .await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let (total, available, held, _) =
        crate::helpers::stock_from_db(&app.db().await, &product).await;
    assert_eq!((total, available, held), (5, 3, 2));
}

/// The product keeps its orders' keys only as a filter (and the in-flight ones): after
/// it passivated and came back with the filter from the database, a sold-out product
/// refuses a new key as sold out, the old key still replays its 201 byte for byte (and
/// is refused with another body), and the per-customer count holds after a restock.
/// (The replays after a restart, with every in-process cache empty, are
/// `replay::replays_after_kill_9_…` and `checkout::idempotency::replays_…_after_a_restart`.)
#[actix_web::test]
async fn known_keys_replay_through_the_key_filter_after_passivation() {
    let app = spawn_app_with(|s| {
        s.product_idle_secs = 1;
        s.request_deadline_ms = 3000;
    })
    .await;
    let store = app.create_store().await;
    let product = app
        .create_product(&store, 1, json!({"max_per_customer": 1}))
        .await;
    let body = checkout_body(&product, 1, "dana");
    let first = app.checkout(&store.storefront, "kf1", &body).await;
    assert_eq!(first.status(), 201);
    let original = first.bytes().await.unwrap();
    // This product's own stock gauge, not the process-wide passivation counter that
    // the tests beside this one move too.
    wait_passivated(&app, &product, Duration::from_secs(20)).await;
    let other = app
        .checkout(
            &store.storefront,
            "kf1",
            &checkout_body(&product, 1, "erin"),
        )
        .await;
    assert_eq!(other.status(), 422);
    let new = app
        .checkout(
            &store.storefront,
            "kf2",
            &checkout_body(&product, 1, "erin"),
        )
        .await;
    assert_eq!(new.status(), 409);
    let sold_out: serde_json::Value = new.json().await.unwrap();
    assert_eq!(sold_out["code"], "sold_out");
    let replay = app.checkout(&store.storefront, "kf1", &body).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.bytes().await.unwrap(), original);
    let restock = app
        .post(
            &format!("/api/v1/products/{product}/restock"),
            &store.admin,
            &json!({"quantity": 1}),
        )
        .await;
    assert!(restock.status().is_success(), "{}", restock.status());
    let again = app
        .checkout(
            &store.storefront,
            "kf3",
            &checkout_body(&product, 1, "dana"),
        )
        .await;
    assert_eq!(again.status(), 409, "dana's count was lost");
    let erin = app
        .checkout(
            &store.storefront,
            "kf4",
            &checkout_body(&product, 1, "erin"),
        )
        .await;
    assert_eq!(erin.status(), 201);
    let (total, available, held, _) =
        crate::helpers::stock_from_db(&app.db().await, &product).await;
    assert_eq!((total, available, held), (2, 0, 2));
}
