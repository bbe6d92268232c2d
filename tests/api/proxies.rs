//! Behind the shipped nginx: the buyer's address comes from `X-Forwarded-For`, but only
//! from a trusted proxy (`FLASHSALE_TRUSTED_PROXIES`), for limits and consent records.
//! Buyers reach nginx from their own loopback addresses (127.0.0.2, 127.0.0.3, …), and
//! nginx reaches flashsale from 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;

use crate::edge::start_edge;
use crate::helpers::{checkout_body, spawn_app_with, StoreKeys, TestApp};

/// A client whose connections come from `127.0.0.<n>`.
fn buyer(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
        .build()
        .unwrap()
}

async fn checkout_via(
    client: &reqwest::Client,
    base: &str,
    store: &StoreKeys,
    product: &str,
    key: &str,
    forged: Option<&str>,
) -> reqwest::Response {
    let mut request = client
        .post(format!("{base}/api/v1/checkout"))
        .bearer_auth(&store.storefront)
        .header("Idempotency-Key", key)
        .json(&checkout_body(product, 1, key));
    if let Some(forged) = forged {
        request = request.header("X-Forwarded-For", forged);
    }
    request.send().await.unwrap()
}

async fn consent_address(app: &TestApp, order_id: &str) -> String {
    app.db()
        .await
        .query_one(
            "SELECT host(client_addr) FROM orders WHERE id = $1",
            &[&order_id],
        )
        .await
        .unwrap()
        .get(0)
}

async fn order_id(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let body: serde_json::Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn behind_the_trusted_nginx_limits_and_consent_use_the_buyers_address() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.checkout_rate_per_address = 1;
    })
    .await;
    let edge = start_edge(&app);
    let base = format!("http://127.0.0.1:{}", edge.port);
    let store = app.create_store().await;
    let product = app.create_product(&store, 100, json!({})).await;

    // The buyer at 127.0.0.2 forges a header; nginx appends the address it saw.
    let alice = buyer(2);
    let first = checkout_via(&alice, &base, &store, &product, "a1", Some("6.6.6.6")).await;
    let first = order_id(first).await;
    assert_eq!(consent_address(&app, &first).await, "127.0.0.2");
    // At once (1 checkout/s per address): Alice twice, Bob once. Her second is over her
    // own limit, and only hers: the per-address limit no longer caps the whole store.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let bob = buyer(3);
    let (a2, a3, b1) = tokio::join!(
        checkout_via(&alice, &base, &store, &product, "a2", None),
        checkout_via(&alice, &base, &store, &product, "a3", None),
        checkout_via(&bob, &base, &store, &product, "b1", None),
    );
    let mut alices = [a2.status().as_u16(), a3.status().as_u16()];
    alices.sort();
    assert_eq!(alices, [201, 429]);
    let bobs = order_id(b1).await;
    assert_eq!(consent_address(&app, &bobs).await, "127.0.0.3");

    // A client that is not a trusted proxy is not believed.
    let direct = buyer(4);
    let base_direct = format!("http://{}", app.address);
    let forged = checkout_via(
        &direct,
        &base_direct,
        &store,
        &product,
        "d1",
        Some("6.6.6.6"),
    )
    .await;
    let forged = order_id(forged).await;
    assert_eq!(consent_address(&app, &forged).await, "127.0.0.4");
}

#[actix_web::test]
async fn without_trusted_proxies_every_buyer_behind_nginx_is_nginx() {
    let app = spawn_app_with(|s| s.checkout_rate_per_address = 1).await;
    let edge = start_edge(&app);
    let base = format!("http://127.0.0.1:{}", edge.port);
    let store = app.create_store().await;
    let product = app.create_product(&store, 100, json!({})).await;
    let first = checkout_via(&buyer(2), &base, &store, &product, "x1", Some("6.6.6.6")).await;
    let first = order_id(first).await;
    assert_eq!(consent_address(&app, &first).await, "127.0.0.1");
    // Three buyers at once, one address for all: the limit caps the store.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (c2, c3, c5) = (buyer(2), buyer(3), buyer(5));
    let answers = tokio::join!(
        checkout_via(&c2, &base, &store, &product, "x2", None),
        checkout_via(&c3, &base, &store, &product, "x3", None),
        checkout_via(&c5, &base, &store, &product, "x5", None),
    );
    let limited = [answers.0.status(), answers.1.status(), answers.2.status()]
        .iter()
        .filter(|s| s.as_u16() == 429)
        .count();
    assert_eq!(limited, 2, "one address for all: the store is capped");
}

#[actix_web::test]
async fn the_edge_never_serves_stock_from_its_cache() {
    let app = spawn_app_with(|_| {}).await;
    let edge = start_edge(&app);
    let base = format!("http://127.0.0.1:{}", edge.port);
    let store = app.create_store().await;
    let product = app.create_product(&store, 10, json!({})).await;
    let client = reqwest::Client::new();
    let stock_url = format!("{base}/api/v1/products/{product}/stock");
    let read = || async {
        let r = client
            .get(&stock_url)
            .bearer_auth(&store.storefront)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-cache-status"], "BYPASS");
        assert_eq!(r.headers()["vary"], "Authorization");
        r.json::<serde_json::Value>().await.unwrap()["stock_available"].clone()
    };
    assert_eq!(read().await, 10);
    order_id(
        app.checkout(&store.storefront, "s1", &checkout_body(&product, 1, "c"))
            .await,
    )
    .await;
    // At once, not after the edge's copy ages out.
    assert_eq!(read().await, 9);
    // flashsale away: the edge answers an error, never a stale stock.
    app.stop().await;
    let r = client
        .get(&stock_url)
        .bearer_auth(&store.storefront)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
}
