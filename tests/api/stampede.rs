//! A thousand buyers at once on fifty units.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::helpers::{checkout_body, spawn_app, stock_from_db, TestApp};

/// Fires one checkout per buyer, all at once, over `connections` separate clients;
/// returns (status, code) per buyer.
async fn stampede(
    app: &TestApp,
    token: &str,
    product: &str,
    buyers: usize,
    connections: usize,
    quantity: impl Fn(usize) -> i64,
) -> Vec<(u16, String)> {
    let clients: Vec<reqwest::Client> = (0..connections)
        .map(|_| crate::helpers::http_client())
        .collect();
    let url = app.url("/api/v1/checkout");
    let tasks = (0..buyers).map(|i| {
        let client = clients[i % connections].clone();
        let url = url.clone();
        let body = checkout_body(product, quantity(i), &format!("buyer-{i}"));
        let token = token.to_owned();
        actix_web::rt::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", format!("stampede-{i}"))
                .json(&body)
                .send()
                .await
                .expect("request failed");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body["code"].as_str().unwrap_or("").to_owned())
        })
    });
    futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

#[actix_web::test]
async fn a_thousand_buyers_fifty_units_exactly_fifty_orders() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 50, json!({})).await;

    let results = stampede(&app, &store.storefront, &product, 1000, 64, |_| 1).await;
    let mut by_status: HashMap<(u16, String), usize> = HashMap::new();
    for r in results {
        *by_status.entry(r).or_default() += 1;
    }
    let created = by_status.get(&(201, String::new())).copied().unwrap_or(0);
    assert_eq!(created, 50, "{by_status:?}");
    for ((status, code), n) in &by_status {
        assert!(
            *status == 201
                || (*status == 409 && (code == "sold_out" || code == "insufficient_stock")),
            "unexpected {status} {code} x{n}"
        );
    }
    let (total, available, ordered, orders) = stock_from_db(&app.db().await, &product).await;
    assert_eq!((total, available, ordered, orders), (50, 0, 50, 50));
}

#[actix_web::test]
async fn mixed_quantities_never_oversell() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 97, json!({})).await;

    let results = stampede(&app, &store.storefront, &product, 600, 32, |i| {
        (i % 4) as i64 + 1
    })
    .await;
    let sold: i64 = results
        .iter()
        .enumerate()
        .filter(|(_, (s, _))| *s == 201)
        .map(|(i, _)| (i % 4) as i64 + 1)
        .sum();
    assert!(results
        .iter()
        .all(|(s, c)| *s == 201 || (*s == 409 && (c == "sold_out" || c == "insufficient_stock"))));
    let (total, available, ordered, _) = stock_from_db(&app.db().await, &product).await;
    assert_eq!(total, 97);
    assert_eq!(
        ordered, sold,
        "every 201 is in the database, and nothing else"
    );
    assert_eq!(available + ordered, total);
    // Four-unit buyers are refused while one to three units remain, so the sale may end
    // with a few left, never more than the largest refused order could not take.
    assert!(available < 4, "available {available}");
}
