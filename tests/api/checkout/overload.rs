//! Full queues answer 503 overloaded and give the stock back.

use serde_json::{json, Value};

use crate::helpers::{checkout_body, spawn_app_with, stock_from_db};

#[actix_web::test]
async fn full_queues_answer_503_overloaded_and_give_the_stock_back() {
    // A writer that holds at most 4 orders and waits 300 ms to write them.
    let app = spawn_app_with(|s| {
        s.mailbox_capacity = 4;
        s.batch_linger_ms = 300;
        s.batches_in_flight = 1;
    })
    .await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 1000, json!({})).await;
    let results = futures_util::future::join_all((0..120).map(|i| {
        let app = &app;
        let store = &store;
        let product = &product;
        async move {
            let response = app
                .checkout(
                    &store.storefront,
                    &format!("k{i}"),
                    &checkout_body(product, 1, &format!("c{i}")),
                )
                .await;
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, retry_after, body)
        }
    }))
    .await;
    let mut created = 0;
    let mut overloaded = 0;
    for (status, retry_after, body) in results {
        match status {
            201 => created += 1,
            503 => {
                assert_eq!(body["code"], "overloaded");
                assert!(retry_after.is_some(), "503 carries Retry-After");
                overloaded += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(overloaded > 0, "the bounded queue refused some");
    assert!(created > 0);
    let (total, available, ordered, count) = stock_from_db(&app.db().await, &product).await;
    assert_eq!((total, ordered, count), (1000, created, created));
    assert_eq!(available, 1000 - created);
    // The refused ones' stock is back in memory too.
    let stock: Value = app
        .get(&format!("/api/v1/products/{product}/stock"), &store.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stock["stock_available"], 1000 - created);
}
