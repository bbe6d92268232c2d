//! Confirm and cancel, with every rule: validation, who may (the admin key of the order's
//! store), repeats, what each does to stock, the audit trail (also from the command
//! line) and the outbox.

use serde_json::{json, Value};

use super::{available, cancel, confirm, outbox, reserve};
use crate::helpers::{assert_problem, spawn_app, stock_from_db};

#[actix_web::test]
async fn confirm_and_cancel_with_every_rule() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let other = app.create_store().await;
    let product = app
        .create_product(&store, 5, json!({"hold_seconds": 600}))
        .await;
    let order = reserve(&app, &store, &product, "k1", 2, "alice").await;
    assert_eq!(order["status"], "reserved");
    let id = order["id"].as_str().unwrap();

    let bad = app
        .post(
            &format!("/api/v1/orders/{id}/confirm"),
            &store.admin,
            &json!({"payment_reference": ""}),
        )
        .await;
    assert_problem(bad, 422, "validation_failed").await;
    assert_problem(confirm(&app, &store.storefront, id).await, 403, "forbidden").await;
    assert_problem(
        confirm(&app, &other.admin, id).await,
        404,
        "order_not_found",
    )
    .await;
    assert_problem(
        confirm(&app, &store.admin, "ord_nope").await,
        404,
        "order_not_found",
    )
    .await;
    assert_problem(cancel(&app, &store.storefront, id).await, 403, "forbidden").await;

    let confirmed = confirm(&app, &store.admin, id).await;
    assert_eq!(confirmed.status(), 200);
    assert_eq!(
        confirmed.json::<Value>().await.unwrap()["status"],
        "confirmed"
    );
    let again = confirm(&app, &store.admin, id).await;
    assert_eq!(again.status(), 200, "repeating a confirm is harmless");
    assert_eq!(available(&app, &store, &product).await, 3);

    let cancelled = cancel(&app, &store.admin, id).await;
    assert_eq!(cancelled.status(), 200);
    assert_eq!(
        cancelled.json::<Value>().await.unwrap()["status"],
        "cancelled"
    );
    assert_eq!(
        cancel(&app, &store.admin, id).await.status(),
        200,
        "repeating a cancel is harmless"
    );
    assert_eq!(
        available(&app, &store, &product).await,
        5,
        "cancelled stock is back on sale"
    );
    assert_problem(
        confirm(&app, &store.admin, id).await,
        409,
        "order_cancelled",
    )
    .await;

    // A hold_seconds 0 order is confirmed at once; cancelling it gives the stock back.
    let instant = app.create_product(&store, 1, json!({})).await;
    let order = reserve(&app, &store, &instant, "k2", 1, "bob").await;
    assert_eq!(order["status"], "confirmed");
    assert_eq!(
        cancel(&app, &store.admin, order["id"].as_str().unwrap())
            .await
            .status(),
        200
    );
    assert_eq!(available(&app, &store, &instant).await, 1);

    // The history: appended, with who did what.
    let db = app.db().await;
    let trail: Vec<(String, Option<String>)> = flashsale::db::orders::audit_trail(&db, id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event, e.api_key_id))
        .collect();
    let events: Vec<&str> = trail.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(events, ["created", "confirmed", "cancelled"]);
    assert!(trail.iter().all(|(_, key)| key.is_some()));
    let events: Vec<(String, String)> = outbox(&app)
        .await
        .into_iter()
        .filter(|(_, s)| s == id)
        .collect();
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["order.created", "order.confirmed", "order.cancelled"]
    );
    assert_eq!(stock_from_db(&db, &product).await, (5, 5, 0, 0));

    // The command-line history.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .args(["audit", id])
        .env("DATABASE_URL", &app.db_url)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("created")
            && text.contains("confirmed")
            && text.contains("pay_123")
            && text.contains("cancelled"),
        "{text}"
    );
}
