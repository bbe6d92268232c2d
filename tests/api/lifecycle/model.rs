//! A randomized model of the lifecycle, checked against stock and the outbox.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::{available, cancel, confirm, outbox};
use crate::helpers::{checkout_body, spawn_app, stock_from_db};

#[actix_web::test]
async fn randomized_lifecycle_model_keeps_stock_and_outbox_exact() {
    let seed: u64 = std::env::var("FLASHSALE_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    eprintln!("model seed {seed} (FLASHSALE_MODEL_SEED to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let app = spawn_app().await;
    let store = app.create_store().await;
    // One product whose holds wait for payment, one whose holds lapse within the test.
    let products = [
        app.create_product(
            &store,
            12,
            json!({"hold_seconds": 600, "max_per_customer": 5}),
        )
        .await,
        app.create_product(&store, 8, json!({"hold_seconds": 1}))
            .await,
    ];
    let mut put_in: HashMap<&str, i64> = products
        .iter()
        .map(|p| (p.as_str(), if *p == products[0] { 12 } else { 8 }))
        .collect();
    let mut orders: Vec<String> = Vec::new();
    let mut restocks = 0;
    for step in 0..150 {
        match rng.random_range(0..10) {
            0..=4 => {
                let product = &products[rng.random_range(0..2)];
                let quantity = rng.random_range(1..=3);
                let customer = format!("c{}", rng.random_range(0..4));
                let response = app
                    .checkout(
                        &store.storefront,
                        &format!("m{step}"),
                        &checkout_body(product, quantity, &customer),
                    )
                    .await;
                match response.status().as_u16() {
                    201 => orders.push(
                        response.json::<Value>().await.unwrap()["id"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                    ),
                    409 => {}
                    other => panic!("checkout answered {other}"),
                }
            }
            5 | 6 if !orders.is_empty() => {
                let id = &orders[rng.random_range(0..orders.len())];
                let status = confirm(&app, &store.admin, id).await.status().as_u16();
                assert!(status == 200 || status == 409, "confirm answered {status}");
            }
            7 if !orders.is_empty() => {
                let id = &orders[rng.random_range(0..orders.len())];
                let status = cancel(&app, &store.admin, id).await.status().as_u16();
                assert!(status == 200 || status == 409, "cancel answered {status}");
            }
            8 => {
                let product = &products[rng.random_range(0..2)];
                let quantity = rng.random_range(1..=4);
                let response = app
                    .post(
                        &format!("/api/v1/products/{product}/restock"),
                        &store.admin,
                        &json!({"quantity": quantity}),
                    )
                    .await;
                assert_eq!(response.status(), 200);
                *put_in.get_mut(product.as_str()).unwrap() += quantity;
                restocks += 1;
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.random_range(0..60))).await,
        }
    }
    // Let every short hold lapse.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let db = app.db().await;
    for product in &products {
        let (total, in_db, held, _) = stock_from_db(&db, product).await;
        assert_eq!(total, put_in[product.as_str()], "stock put in");
        assert_eq!(
            held + in_db,
            total,
            "reserved + confirmed + available == stock put in"
        );
        let memory = available(&app, &store, product).await;
        assert_eq!(memory, in_db, "the actor agrees with the database");
    }
    let reserved_short: i64 = db
        .query_one(
            "SELECT count(*) FROM orders WHERE product_id = $1 AND status = 'reserved'",
            &[&products[1]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reserved_short, 0, "every short hold lapsed");

    // Exactly one outbox event per transition: the audit trail and the outbox agree,
    // order by order, and no order has the same transition twice.
    let events = outbox(&app).await;
    for id in &orders {
        let trail: Vec<String> = flashsale::db::orders::audit_trail(&db, id)
            .await
            .unwrap()
            .iter()
            .map(|e| format!("order.{}", e.event))
            .collect();
        let kinds: Vec<String> = events
            .iter()
            .filter(|(_, s)| s == id)
            .map(|(t, _)| t.clone())
            .collect();
        assert_eq!(kinds, trail, "order {id}");
        assert_eq!(
            kinds.iter().collect::<HashSet<_>>().len(),
            kinds.len(),
            "order {id}: {kinds:?}"
        );
    }
    let restocked = events
        .iter()
        .filter(|(t, _)| t == "product.restocked")
        .count();
    assert_eq!(restocked, restocks);
}
