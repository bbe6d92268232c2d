//! `POST /products/{id}/checkout` is the same checkout as `POST /checkout`.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, checkout_body, spawn_app, stock_from_db};

/// `POST /products/{id}/checkout` is the same checkout with the product in the path: the
/// body may leave `product_id` out, one naming another product is a 422, and a key is one
/// key whichever of the two paths it comes through.
#[actix_web::test]
async fn a_checkout_placed_by_the_products_path_is_the_same_checkout() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 10, json!({})).await;
    let other = app.create_product(&store, 10, json!({})).await;
    let by_path = |product: &str, key: &str, body: Value| {
        let request = app
            .client
            .post(app.url(&format!("/api/v1/products/{product}/checkout")))
            .bearer_auth(&store.storefront)
            .header("Idempotency-Key", key)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let mut body = checkout_body(&product, 2, "alice");
    body.as_object_mut().unwrap().remove("product_id");

    let first = by_path(&product, "path-1", body.clone()).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["product_id"], product.as_str());
    assert_eq!(first["quantity"], 2);

    // The same key and body through /checkout (product in the body) is the same request.
    let replay = app
        .checkout(
            &store.storefront,
            "path-1",
            &checkout_body(&product, 2, "alice"),
        )
        .await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["Idempotent-Replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap(), first);

    // A body that names the path's product is fine; another product is a 422, nothing done.
    let named = by_path(&product, "path-2", checkout_body(&product, 1, "bob")).await;
    assert_eq!(named.status(), 201);
    let problem = assert_problem(
        by_path(&product, "path-3", checkout_body(&other, 1, "carol")).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "product_id");
    assert_problem(
        by_path("prd_nope", "path-4", body.clone()).await,
        404,
        "product_not_found",
    )
    .await;

    let db = app.db().await;
    assert_eq!(stock_from_db(&db, &product).await, (10, 7, 3, 2));
    assert_eq!(stock_from_db(&db, &other).await, (10, 10, 0, 0));
}
