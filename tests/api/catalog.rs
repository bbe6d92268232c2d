//! Product pages at memory speed: listings, PATCH, the drop calendar, validators,
//! compression, sale-window transitions, cache warming, and a real PostgreSQL stopped
//! and started under a running server.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, checkout_body, cut_database, gets_while_locked, spawn_app, spawn_app_on,
    wait_ready,
};

#[actix_web::test]
async fn listings_filter_sort_page_pick_fields_and_compress() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let other = app.create_store().await;
    let mut ids = Vec::new();
    for (i, price) in [500, 100, 300, 200, 400].into_iter().enumerate() {
        let extra = if i == 4 {
            json!({"price_cents": price, "sale_starts_at": "2099-01-01T00:00:00Z"})
        } else {
            json!({"price_cents": price})
        };
        ids.push(
            app.create_product(&store, if i == 1 { 0 } else { 10 }, extra)
                .await,
        );
    }
    app.create_product(&other, 10, json!({})).await;
    let list = |query: &str| {
        let url = format!("/api/v1/products?{query}");
        let app = &app;
        let key = store.storefront.clone();
        async move {
            let response = app.get(&url, &key).await;
            assert_eq!(response.status(), 200, "{url}");
            response.json::<Value>().await.unwrap()
        }
    };
    let prices = |page: &Value| -> Vec<i64> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["price_cents"].as_i64().unwrap())
            .collect()
    };

    // Sorted by price, two per page, the cursor carrying on where the page stopped.
    let first = list("sort=price_cents&limit=2").await;
    assert_eq!(prices(&first), [100, 200]);
    let next = first["next_cursor"].as_str().unwrap().to_owned();
    let second = list(&format!("sort=price_cents&limit=2&cursor={next}")).await;
    assert_eq!(prices(&second), [300, 400]);
    let third = list(&format!(
        "sort=price_cents&limit=2&cursor={}",
        second["next_cursor"].as_str().unwrap()
    ))
    .await;
    assert_eq!(prices(&third), [500]);
    assert!(third["next_cursor"].is_null());
    assert_eq!(
        prices(&list("sort=-price_cents&limit=3").await),
        [500, 400, 300]
    );
    // Newest first by default; only this store's.
    let all = list("").await;
    let listed: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    let mut newest_first: Vec<&str> = ids.iter().map(String::as_str).collect();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    // The scheduled one sorts by its start; the others by creation.
    let by_start = list("sort=-sale_starts_at&limit=1").await;
    assert_eq!(by_start["items"][0]["id"], ids[4]);
    let starts_next = list(&format!(
        "sort=-sale_starts_at&limit=1&cursor={}",
        by_start["next_cursor"].as_str().unwrap()
    ))
    .await;
    assert_eq!(starts_next["items"][0]["id"], ids[3]);

    assert_eq!(prices(&list("status=sold_out").await), [100]);
    assert_eq!(prices(&list("status=scheduled").await), [400]);
    assert_eq!(
        list("status=live").await["items"].as_array().unwrap().len(),
        3
    );
    let picked = list("fields=id,price_cents&limit=1").await;
    assert_eq!(picked["items"][0].as_object().unwrap().len(), 2);
    for bad in [
        "sort=name",
        "limit=500",
        "status=gone",
        "fields=colour",
        "cursor=abc",
        "x=1",
    ] {
        assert_problem(
            app.get(&format!("/api/v1/products?{bad}"), &store.admin)
                .await,
            422,
            "validation_failed",
        )
        .await;
    }
    // A cursor of another sort is refused rather than misread.
    assert_problem(
        app.get(
            &format!("/api/v1/products?sort=created_at&cursor={next}"),
            &store.admin,
        )
        .await,
        422,
        "validation_failed",
    )
    .await;

    // Lists are compressed for clients that ask; single products (tiny) are not.
    for encoding in ["gzip", "br"] {
        let response = app
            .client
            .get(app.url("/api/v1/products"))
            .bearer_auth(&store.admin)
            .header("Accept-Encoding", encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["content-encoding"], encoding);
        let compressed = response.bytes().await.unwrap();
        let mut plain = Vec::new();
        use std::io::Read;
        if encoding == "gzip" {
            flate2::read::GzDecoder::new(compressed.as_ref())
                .read_to_end(&mut plain)
                .unwrap();
        } else {
            brotli::Decompressor::new(compressed.as_ref(), 4096)
                .read_to_end(&mut plain)
                .unwrap();
        }
        let page: Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(
            page["items"].as_array().unwrap().len(),
            5,
            "{encoding} decodes to the page"
        );
    }
    let single = app
        .client
        .get(app.url(&format!("/api/v1/products/{}", ids[0])))
        .bearer_auth(&store.admin)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(single.headers().get("content-encoding").is_none());
}

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

#[actix_web::test]
async fn validators_windows_and_the_drop_calendar() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let soon = (Utc::now() + chrono::Duration::milliseconds(1200)).to_rfc3339();
    let product = app
        .create_product(&store, 3, json!({"sale_starts_at": soon}))
        .await;
    let path = format!("/api/v1/products/{product}");

    let first = app.get(&path, &store.storefront).await;
    let last_modified = first.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(first.json::<Value>().await.unwrap()["status"], "scheduled");
    let since = app
        .client
        .get(app.url(&path))
        .bearer_auth(&store.storefront)
        .header("If-Modified-Since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(since.status(), 304);
    // The window opens: the next read says so, without any write.
    tokio::time::sleep(Duration::from_millis(1400)).await;
    let live: Value = app
        .get(&path, &store.storefront)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(live["status"], "live");
    assert_eq!(
        app.checkout(&store.storefront, "k", &checkout_body(&product, 1, "a"))
            .await
            .status(),
        201
    );

    // The calendar: windows that meet [from, to], by start.
    let a = app.create_product(&store, 1, json!({"sale_starts_at": "2031-03-01T10:00:00Z", "sale_ends_at": "2031-03-01T12:00:00Z"})).await;
    let b = app
        .create_product(&store, 1, json!({"sale_starts_at": "2031-02-01T10:00:00Z"}))
        .await;
    app.create_product(&store, 1, json!({"sale_starts_at": "2031-05-01T10:00:00Z"}))
        .await;
    let calendar: Value = app
        .get(
            "/api/v1/drops?from=2031-01-01T00:00:00Z&to=2031-04-01T00:00:00Z",
            &store.storefront,
        )
        .await
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = calendar["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    // The first product's window never ends, so it meets this range too.
    assert_eq!(listed, [product.as_str(), b.as_str(), a.as_str()]);
    assert_problem(
        app.get(
            "/api/v1/drops?from=2031-04-01T00:00:00Z&to=2031-01-01T00:00:00Z",
            &store.admin,
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        app.get("/api/v1/drops?from=tomorrow", &store.admin).await,
        422,
        "validation_failed",
    )
    .await;
}

#[actix_web::test]
async fn a_drop_about_to_start_is_warmed_and_reads_need_no_database() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let starts = (Utc::now() + chrono::Duration::seconds(30)).to_rfc3339();
    let product = app
        .create_product(&store, 5, json!({"sale_starts_at": starts}))
        .await;
    let cold = app
        .create_product(&store, 5, json!({"sale_starts_at": "2099-01-01T00:00:00Z"}))
        .await;
    // A fresh process: nothing is loaded until the warmer finds the drop.
    let db_url = app.db_url.clone();
    app.stop().await;
    let app = spawn_app_on(&db_url, |_| {}).await;
    // One database read to cache the key, then the database goes away.
    assert_eq!(
        app.get("/api/v1/products?limit=1", &store.storefront)
            .await
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    cut_database(&app, true).await;

    let warmed = app
        .get(&format!("/api/v1/products/{product}"), &store.storefront)
        .await;
    assert_eq!(
        warmed.status(),
        200,
        "the warmed drop is served from memory"
    );
    // The one nobody warmed needs the database, which is away.
    assert_problem(
        app.get(&format!("/api/v1/products/{cold}"), &store.storefront)
            .await,
        503,
        "unavailable",
    )
    .await;
    cut_database(&app, false).await;
}

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

/// The moment a listing page's max-age runs out under load, every request for it misses
/// at once. They share one rendering: while its query is held up (a lock on `products`,
/// longer than a request may wait for a pooled connection), the others wait for it
/// instead of each taking a connection, and all get the page.
#[actix_web::test]
async fn concurrent_misses_on_one_listing_share_one_rendering() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    for _ in 0..3 {
        app.create_product(&store, 10, json!({})).await;
    }
    // The storefront key is cached now; the page asked for below is not.
    let warm = app.get("/api/v1/products?limit=2", &store.storefront).await;
    assert_eq!(warm.status(), 200);

    let answers = gets_while_locked(
        &app,
        "products",
        "/api/v1/products?limit=3",
        &store.storefront,
        40,
    )
    .await;
    let pages: Vec<(u16, usize)> = answers
        .iter()
        .map(|(status, body)| (*status, body["items"].as_array().map_or(0, Vec::len)))
        .collect();
    assert!(pages.iter().all(|p| *p == (200, 3)), "{pages:?}");
}
