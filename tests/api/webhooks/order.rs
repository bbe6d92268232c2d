//! Order per subject: confirm and cancel racing on many orders, through a receiver that
//! fails at random; each order's events arrive in the order they happened.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{subscribe, tune, Receiver};
use crate::helpers::{checkout_body, spawn_app_with};

#[actix_web::test]
async fn confirm_and_cancel_racing_keep_each_orders_events_in_order() {
    let app = spawn_app_with(tune).await;
    let store = app.create_store().await;
    // One attempt in three fails (a 500): a later event must wait for the retry of an
    // earlier one.
    let receiver = Receiver::start(Arc::new(|event: &Value, seen| {
        let id = event["id"].as_str().unwrap_or_default();
        let h = id.bytes().fold(seen as u32, |h, b| {
            h.wrapping_mul(31).wrapping_add(u32::from(b))
        });
        (if h % 3 == 0 { 500 } else { 200 }, Duration::ZERO)
    }))
    .await;
    subscribe(
        &app,
        &store,
        &receiver.url,
        &["order.created", "order.confirmed", "order.cancelled"],
    )
    .await;
    let product = app
        .create_product(&store, 1000, json!({"hold_seconds": 600}))
        .await;
    let mut orders = Vec::new();
    for i in 0..60 {
        let response = app
            .checkout(
                &store.storefront,
                &format!("k{i}"),
                &checkout_body(&product, 1, &format!("c{i}")),
            )
            .await;
        assert_eq!(response.status(), 201);
        orders.push(
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Each order: a confirm and a cancel at once (and for half, a second cancel).
    let mut racing = Vec::new();
    for (i, id) in orders.iter().enumerate() {
        let app = &app;
        let admin = &store.admin;
        racing.push(async move {
            let confirm_path = format!("/api/v1/orders/{id}/confirm");
            let cancel_path = format!("/api/v1/orders/{id}/cancel");
            let confirm_body = json!({"payment_reference": format!("pay_{i}")});
            let empty = json!({});
            futures_util::join!(
                answered(app, &confirm_path, admin, &confirm_body),
                answered(app, &cancel_path, admin, &empty)
            )
        });
    }
    for (a, b) in futures_util::future::join_all(racing).await {
        assert!(a == 200 || a == 409, "confirm {a}");
        assert_eq!(b, 200, "cancel");
    }
    // What the database says happened, per order, in order.
    let db = app.db().await;
    let rows = db
        .query(
            "SELECT subject_id, event_id FROM events WHERE type LIKE 'order.%' ORDER BY id, item",
            &[],
        )
        .await
        .unwrap();
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for r in &rows {
        expected.entry(r.get(0)).or_default().push(r.get(1));
    }
    let total = rows.len();
    assert!(total >= 90, "{total} events");
    let got = receiver
        .wait_for(Duration::from_secs(30), |g| {
            g.iter().filter(|g| g.answered == 200).count() >= total
        })
        .await;
    // Per order, the events in the order of their first arrival: a later event is never
    // sent before an earlier one was answered 2xx.
    let mut arrived: HashMap<String, Vec<String>> = HashMap::new();
    for g in &got {
        let order = g.event["data"]["id"].as_str().unwrap().to_owned();
        let seq = arrived.entry(order).or_default();
        if seq.last().map(String::as_str) != Some(g.id()) {
            assert!(
                !seq.iter().any(|e| e == g.id()),
                "{} came back after a later event",
                g.id()
            );
            seq.push(g.id().to_owned());
        }
    }
    assert_eq!(arrived, expected);
    for (order, events) in &expected {
        assert!(
            events.len() == 2 || events.len() == 3,
            "{order}: {events:?}"
        );
    }
}

/// A POST retried while it answers 503 (nothing was done; a client tries again), as a
/// back office would: its final status.
async fn answered(app: &crate::helpers::TestApp, path: &str, token: &str, body: &Value) -> u16 {
    for _ in 0..30 {
        let status = app.post(path, token, body).await.status().as_u16();
        if status != 503 {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("POST {path} answered 503 thirty times");
}
