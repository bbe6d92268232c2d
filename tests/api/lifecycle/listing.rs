//! The order listing: filters, `?fields=` and cursors that stay stable.

use serde_json::{json, Value};

use super::reserve;
use crate::helpers::{assert_problem, spawn_app};

#[actix_web::test]
async fn order_listing_filters_fields_and_stable_cursors() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let a = app
        .create_product(&store, 100, json!({"hold_seconds": 600}))
        .await;
    let b = app.create_product(&store, 100, json!({})).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let product = if i % 2 == 0 { &a } else { &b };
        let order = reserve(
            &app,
            &store,
            product,
            &format!("k{i}"),
            1,
            if i < 3 { "alice" } else { "bob" },
        )
        .await;
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    let page = |query: String| {
        let app = &app;
        let admin = store.admin.clone();
        async move {
            let response = app.get(&format!("/api/v1/orders?{query}"), &admin).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    // Pages of 3, newest first; an order placed between pages does not disturb them.
    let first = page("limit=3".into()).await;
    reserve(&app, &store, &a, "late", 1, "carol").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let second = page(format!("limit=3&cursor={cursor}")).await;
    let third = page(format!(
        "limit=3&cursor={}",
        second["next_cursor"].as_str().unwrap()
    ))
    .await;
    assert!(third["next_cursor"].is_null());
    let seen: Vec<String> = [&first, &second, &third]
        .iter()
        .flat_map(|p| {
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_owned())
        })
        .collect();
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    let reserved = page("status=reserved".into()).await;
    assert_eq!(reserved["items"].as_array().unwrap().len(), 5);
    let of_b = page(format!("product_id={b}&customer_id=bob&fields=id,status")).await;
    let items = of_b["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items
        .iter()
        .all(|o| o.as_object().unwrap().len() == 2 && o["status"] == "confirmed"));
    let one: Value = app
        .get(
            &format!("/api/v1/orders/{}?fields=id,total_cents", ids[0]),
            &store.storefront,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one.as_object().unwrap().len(), 2);

    for bad in [
        "limit=0",
        "limit=201",
        "status=lost",
        "colour=red",
        "fields=id,nope",
        "cursor=xyz",
    ] {
        assert_problem(
            app.get(&format!("/api/v1/orders?{bad}"), &store.admin)
                .await,
            422,
            "validation_failed",
        )
        .await;
    }
    assert_problem(
        app.get("/api/v1/orders", &store.storefront).await,
        403,
        "forbidden",
    )
    .await;
}
