//! The product listing: filters, sorts, pages, `?fields=`, compression, and one
//! rendering shared by concurrent misses.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, gets_while_locked, spawn_app};

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
