//! The database goes away mid-sale and comes back.

use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, checkout_body, cut_database, spawn_app, stock_from_db, wait_ready,
};

#[actix_web::test]
async fn failed_batches_give_stock_back_answer_503_and_nothing_oversells_after() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 20, json!({})).await;
    let pk = &store.storefront;
    // Warm: the product actor is loaded and the keys are cached.
    assert_eq!(
        app.checkout(pk, "before", &checkout_body(&product, 1, "early"))
            .await
            .status(),
        201
    );
    assert_eq!(
        app.get(&format!("/api/v1/products/{product}/stock"), pk)
            .await
            .status(),
        200
    );

    cut_database(&app, true).await;
    let attempts = futures_util::future::join_all((0..10).map(|i| {
        let body = checkout_body(&product, 1, &format!("c{i}"));
        let app = &app;
        async move { app.checkout(pk, &format!("down-{i}"), &body).await }
    }))
    .await;
    for response in attempts {
        assert!(response.headers().contains_key("retry-after"));
        assert_problem(response, 503, "unavailable").await;
    }
    // The stock taken for them came back: memory still says 19.
    let stock: Value = app
        .get(&format!("/api/v1/products/{product}/stock"), pk)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stock["stock_available"], 19);
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );

    cut_database(&app, false).await;
    wait_ready(&app).await;
    // The same keys go through once the database is back, and the sale sells out at 20.
    let mut created = 1;
    for i in 0..25 {
        let response = app
            .checkout(
                pk,
                &format!("down-{i}"),
                &checkout_body(&product, 1, &format!("c{i}")),
            )
            .await;
        match response.status().as_u16() {
            201 => created += 1,
            _ => {
                assert_problem(response, 409, "sold_out").await;
            }
        }
    }
    assert_eq!(created, 20);
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (total, available, ordered, orders) = stock_from_db(&app.db().await, &product).await;
    assert_eq!((total, available, ordered, orders), (20, 0, 20, 20));
}
