//! A PATCH is visible at once, and the old price never comes back.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{assert_problem, checkout_body, spawn_app};

#[actix_web::test]
async fn patch_is_visible_at_once_and_the_old_price_never_comes_back() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let other = app.create_store().await;
    let product = app
        .create_product(
            &store,
            10,
            json!({"price_cents": 1000, "description": "old"}),
        )
        .await;
    let path = format!("/api/v1/products/{product}");
    let before = app.get(&path, &store.storefront).await;
    let old_etag = before.headers()["etag"].to_str().unwrap().to_owned();

    // Readers hammer the page while the price changes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let patched_at = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, key) = (app.client.clone(), app.url(&path), store.storefront.clone());
            let (stop, patched_at) = (stop.clone(), patched_at.clone());
            actix_web::rt::spawn(async move {
                let mut stale_after_patch = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let asked = Instant::now();
                    let body: Value = client
                        .get(&url)
                        .bearer_auth(&key)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let patched = *patched_at.lock().unwrap();
                    if patched.is_some_and(|t| asked > t) && body["price_cents"] != 1500 {
                        stale_after_patch += 1;
                    }
                }
                stale_after_patch
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = app
        .client
        .patch(app.url(&path))
        .bearer_auth(&store.admin)
        .json(&json!({"price_cents": 1500, "description": null, "max_per_customer": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    *patched_at.lock().unwrap() = Some(Instant::now());
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (
            body["price_cents"].as_i64(),
            body["description"].is_null(),
            body["max_per_customer"].as_i64()
        ),
        (Some(1500), true, Some(3))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for reader in readers {
        assert_eq!(
            reader.await.unwrap(),
            0,
            "a read after the PATCH returned showed the old price"
        );
    }
    let after = app
        .get_if_none_match(&path, &store.storefront, &old_etag)
        .await;
    assert_eq!(after.status(), 200, "the old validator no longer matches");
    // New orders use the new price and limit.
    let order: Value = app
        .checkout(&store.storefront, "k1", &checkout_body(&product, 3, "a"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(order["unit_price_cents"], 1500);
    assert_problem(
        app.checkout(&store.storefront, "k2", &checkout_body(&product, 1, "a"))
            .await,
        409,
        "customer_limit_exceeded",
    )
    .await;
    // The listing (from the database) agrees.
    let listed: Value = app
        .get("/api/v1/products", &store.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["price_cents"], 1500);

    let patch = |body: Value, key: String| {
        let (client, url) = (app.client.clone(), app.url(&path));
        async move {
            client
                .patch(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_problem(
        patch(json!({"name": null}), store.admin.clone()).await,
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        patch(json!({}), store.admin.clone()).await,
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        patch(json!({"sku": "x"}), store.admin.clone()).await,
        422,
        "validation_failed",
    )
    .await;
    let window =
        json!({"sale_starts_at": "2030-01-02T00:00:00Z", "sale_ends_at": "2030-01-01T00:00:00Z"});
    assert_problem(
        patch(window, store.admin.clone()).await,
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        patch(json!({"price_cents": 1}), store.storefront.clone()).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        patch(json!({"price_cents": 1}), other.admin.clone()).await,
        404,
        "product_not_found",
    )
    .await;
    let read: Value = app.get(&path, &store.admin).await.json().await.unwrap();
    assert_eq!(read["price_cents"], 1500, "refused PATCHes changed nothing");
}
