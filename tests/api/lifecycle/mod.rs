//! Order lifecycle: holds, confirm, cancel, expiry (also across a restart), listings,
//! the audit trail and the outbox.
//!
//! By feature: `confirm_cancel` (every rule of confirm and cancel), `expiry` (holds
//! expire on time, also racing a confirm, a late batch or a restart), `listing` (order
//! listings) and `model` (a randomized model of the whole lifecycle). The helpers that
//! drive an order through it are here.

mod confirm_cancel;
mod expiry;
mod listing;
mod model;

use serde_json::{json, Value};

use crate::helpers::{checkout_body, StoreKeys, TestApp};

async fn reserve(
    app: &TestApp,
    store: &StoreKeys,
    product: &str,
    key: &str,
    quantity: i64,
    customer: &str,
) -> Value {
    let response = app
        .checkout(
            &store.storefront,
            key,
            &checkout_body(product, quantity, customer),
        )
        .await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn confirm(app: &TestApp, token: &str, order: &str) -> reqwest::Response {
    app.post(
        &format!("/api/v1/orders/{order}/confirm"),
        token,
        &json!({"payment_reference": "pay_123"}),
    )
    .await
}

async fn cancel(app: &TestApp, token: &str, order: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/api/v1/orders/{order}/cancel")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn available(app: &TestApp, store: &StoreKeys, product: &str) -> i64 {
    let stock: Value = app
        .get(&format!("/api/v1/products/{product}/stock"), &store.admin)
        .await
        .json()
        .await
        .unwrap();
    stock["stock_available"].as_i64().unwrap()
}

/// (type, subject) of every outbox event, in order (a batch's order.created row is one
/// event per order: the events view).
async fn outbox(app: &TestApp) -> Vec<(String, String)> {
    let rows = app
        .db()
        .await
        .query("SELECT type, subject_id FROM events ORDER BY id, item", &[])
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}
