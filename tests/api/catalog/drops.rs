//! Validators, sale-window transitions and the drop calendar; a drop about to start is
//! warmed, so its reads need no database.

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, checkout_body, cut_database, spawn_app, spawn_app_on};

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
