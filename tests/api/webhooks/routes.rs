//! The subscription routes: validation, secrets, the limit, the URL guard, tenancy, the
//! events log and its retention.

use std::time::Duration;

use serde_json::{json, Value};

use super::{answer, subscribe, tune, Receiver};
use crate::helpers::{assert_problem, checkout_body, spawn_app, spawn_app_with};

#[actix_web::test]
async fn endpoints_are_validated_and_show_their_secret_only_at_creation_and_rotation() {
    let app = spawn_app_with(|s| {
        tune(s);
        s.webhook_max_per_store = 2;
    })
    .await;
    let store = app.create_store().await;
    let bad = [
        json!({"url": "ftp://example.com/", "events": ["order.created"]}),
        json!({"url": "https://example.com/", "events": ["order.shipped"]}),
        json!({"url": "https://example.com/", "events": []}),
        json!({"url": format!("https://example.com/{}", "a".repeat(2000)), "events": ["drop.live"]}),
        json!({"url": "https://example.com/", "events": ["drop.live"], "colour": "red"}),
    ];
    for (body, field) in bad.iter().zip(["url", "events", "events", "url", "colour"]) {
        let problem = assert_problem(
            app.post("/api/v1/webhooks", &store.admin, body).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    // The storefront key may not manage webhooks.
    let response = app
        .post(
            "/api/v1/webhooks",
            &store.storefront,
            &json!({"url": "http://127.0.0.1/", "events": ["drop.live"]}),
        )
        .await;
    assert_eq!(response.status(), 403);

    let created = subscribe(
        &app,
        &store,
        "http://127.0.0.1:9/a",
        &["order.created", "order.created"],
    )
    .await;
    let secret = created["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 6 + 44,
        "{secret}"
    );
    assert_eq!(created["events"], json!(["order.created"]));
    assert_eq!(created["status"], "enabled");
    let id = created["id"].as_str().unwrap();
    let one: Value = app
        .get(&format!("/api/v1/webhooks/{id}"), &store.admin)
        .await
        .json()
        .await
        .unwrap();
    assert!(one.get("secret").is_none());
    let list: Value = app
        .get("/api/v1/webhooks", &store.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["items"][0].get("secret").is_none());

    // PATCH changes what it names; status is enabled or disabled.
    let patched: Value = app
        .client
        .patch(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(&store.admin)
        .json(
            &json!({"events": ["drop.live"], "description": "stock display", "status": "disabled"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["events"], json!(["drop.live"]));
    assert_eq!(patched["status"], "disabled");
    assert_eq!(patched["description"], "stock display");
    assert!(patched.get("secret").is_none());
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(&store.admin)
        .json(&json!({"status": "paused"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "validation_failed").await;

    let rotated: Value = app
        .post(
            &format!("/api/v1/webhooks/{id}/rotate-secret"),
            &store.admin,
            &json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);

    // The limit (2 here) counts every endpoint of the store.
    subscribe(&app, &store, "http://127.0.0.1:9/b", &["drop.live"]).await;
    let response = app
        .post(
            "/api/v1/webhooks",
            &store.admin,
            &json!({"url": "http://127.0.0.1:9/c", "events": ["drop.live"]}),
        )
        .await;
    assert_problem(response, 409, "webhook_limit_reached").await;

    let response = app
        .client
        .delete(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(&store.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = app
        .get(&format!("/api/v1/webhooks/{id}"), &store.admin)
        .await;
    assert_problem(response, 404, "webhook_not_found").await;
}

#[actix_web::test]
async fn internal_targets_are_refused_without_the_allow_list_and_accepted_with_it() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.0.0.5/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[fd00::1]/hook",
        "http://0.0.0.0/hook",
    ] {
        let response = app
            .post(
                "/api/v1/webhooks",
                &store.admin,
                &json!({"url": url, "events": ["order.created"]}),
            )
            .await;
        assert_problem(response, 422, "webhook_url_forbidden").await;
    }
    let db_url = app.db_url.clone();
    app.stop().await;

    // Allowed: loopback only.
    let app = crate::helpers::spawn_app_on(&db_url, tune).await;
    let receiver = Receiver::start(answer(200)).await;
    let created = subscribe(&app, &store, &receiver.url, &["order.created"]).await;
    let response = app
        .post(
            "/api/v1/webhooks",
            &store.admin,
            &json!({"url": "http://10.0.0.5/hook", "events": ["order.created"]}),
        )
        .await;
    assert_problem(response, 422, "webhook_url_forbidden").await;
    let db_url = app.db_url.clone();
    app.stop().await;

    // Checked again at delivery: the same endpoint, without the allow list, is not sent to.
    let app = crate::helpers::spawn_app_on(&db_url, |s| {
        s.webhook_retry_schedule = flashsale::domain::webhook::RetrySchedule::parse("0.1").unwrap();
    })
    .await;
    let product = app.create_product(&store, 5, json!({})).await;
    let response = app
        .checkout(&store.storefront, "k1", &checkout_body(&product, 1, "c1"))
        .await;
    assert_eq!(response.status(), 201);
    let id = created["id"].as_str().unwrap();
    let items = super::wait_deliveries(&app, &store, id, Duration::from_secs(10), |items| {
        items.first().is_some_and(|d| d["status"] == "failed")
    })
    .await;
    let attempts = items[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(attempts
        .iter()
        .all(|a| a["status_code"].is_null()
            && a["error"].as_str().unwrap().starts_with("url_forbidden")));
    assert!(receiver.got().is_empty());
}

#[actix_web::test]
async fn a_store_cannot_see_change_or_receive_another_stores_webhooks() {
    let app = spawn_app_with(tune).await;
    let (a, b) = (app.create_store().await, app.create_store().await);
    let receiver_a = Receiver::start(answer(200)).await;
    let receiver_b = Receiver::start(answer(200)).await;
    let endpoint_a = subscribe(&app, &a, &receiver_a.url, &["order.created"]).await;
    subscribe(&app, &b, &receiver_b.url, &["order.created"]).await;
    let product_a = app.create_product(&a, 5, json!({})).await;
    let response = app
        .checkout(&a.storefront, "k1", &checkout_body(&product_a, 1, "c1"))
        .await;
    assert_eq!(response.status(), 201);
    receiver_a
        .wait_for(Duration::from_secs(10), |g| g.len() == 1)
        .await;
    let id = endpoint_a["id"].as_str().unwrap();
    let deliveries = super::wait_deliveries(&app, &a, id, Duration::from_secs(5), |d| {
        d.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    let delivery = deliveries[0]["id"].as_str().unwrap();

    // B: every path to A's endpoint is a 404, as if it did not exist.
    for path in [
        format!("/api/v1/webhooks/{id}"),
        format!("/api/v1/webhooks/{id}/deliveries"),
    ] {
        assert_problem(app.get(&path, &b.admin).await, 404, "webhook_not_found").await;
    }
    for path in [
        format!("/api/v1/webhooks/{id}/rotate-secret"),
        format!("/api/v1/webhooks/{id}/deliveries/{delivery}/retry"),
    ] {
        assert_problem(
            app.post(&path, &b.admin, &json!({})).await,
            404,
            "webhook_not_found",
        )
        .await;
    }
    let patch = app
        .client
        .patch(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(&b.admin)
        .json(&json!({"status": "disabled"}))
        .send()
        .await
        .unwrap();
    assert_problem(patch, 404, "webhook_not_found").await;
    let delete = app
        .client
        .delete(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(&b.admin)
        .send()
        .await
        .unwrap();
    assert_problem(delete, 404, "webhook_not_found").await;
    let list: Value = app
        .get("/api/v1/webhooks", &b.admin)
        .await
        .json()
        .await
        .unwrap();
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["id"] != id));
    let events: Value = app
        .get("/api/v1/events", &b.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events["items"], json!([]), "B sees none of A's events");
    let events: Value = app
        .get("/api/v1/events", &a.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events["items"].as_array().unwrap().len(), 1);

    // A's endpoint still works, and B's receiver never heard of A's order.
    let one: Value = app
        .get(&format!("/api/v1/webhooks/{id}"), &a.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["status"], "enabled");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver_b.got().is_empty());
}

#[actix_web::test]
async fn events_are_listed_newest_first_by_type_and_pruned_after_the_retention() {
    let app = spawn_app_with(tune).await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 3, json!({})).await;
    for i in 0..3 {
        let response = app
            .checkout(
                &store.storefront,
                &format!("k{i}"),
                &checkout_body(&product, 1, &format!("c{i}")),
            )
            .await;
        assert_eq!(response.status(), 201);
    }
    let all: Value = app
        .get("/api/v1/events?limit=2", &store.admin)
        .await
        .json()
        .await
        .unwrap();
    let items = all["items"].as_array().unwrap();
    // Three order.created and one product.sold_out; newest first.
    assert_eq!(items[0]["type"], "product.sold_out");
    assert_eq!(items[0]["data"]["status"], "sold_out");
    assert_eq!(items[0]["data"]["stock_available"], 0);
    let cursor = all["next_cursor"].as_str().unwrap();
    let rest: Value = app
        .get(
            &format!("/api/v1/events?limit=10&cursor={cursor}"),
            &store.admin,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert!(rest["next_cursor"].is_null());
    let created: Value = app
        .get("/api/v1/events?type=order.created", &store.admin)
        .await
        .json()
        .await
        .unwrap();
    let created = created["items"].as_array().unwrap();
    assert_eq!(created.len(), 3);
    assert!(created
        .iter()
        .all(|e| e["id"].as_str().unwrap().starts_with("evt_")
            && e["data"]["id"].as_str().unwrap().starts_with("ord_")
            && e["data"]["status"] == "confirmed"));
    assert_problem(
        app.get("/api/v1/events?type=order.shipped", &store.admin)
            .await,
        422,
        "validation_failed",
    )
    .await;

    // Age two events past the retention; the pruner removes them (they were handed over).
    let db = app.db().await;
    for _ in 0..50 {
        let pending: i64 = db
            .query_one(
                "SELECT count(*) FROM outbox_events WHERE delivered_at IS NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.execute(
        "UPDATE outbox_events SET created_at = now() - interval '31 days'
         WHERE id IN (SELECT id FROM outbox_events ORDER BY id LIMIT 2)",
        &[],
    )
    .await
    .unwrap();
    let listed: Value = app
        .get("/api/v1/events", &store.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        2,
        "older than 30 days: not listed"
    );
    let pruned = flashsale::db::webhooks::prune(&db, 30.0).await.unwrap();
    assert_eq!(pruned, 2);
    let left: i64 = db
        .query_one("SELECT count(*) FROM outbox_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 2);
}

#[actix_web::test]
async fn the_openapi_document_describes_the_webhook_routes_and_their_statuses() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses = |path: &str, method: &str| -> Vec<String> {
        let responses = doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} is not documented"));
        responses.keys().cloned().collect()
    };
    for (path, method, expected) in [
        (
            "/api/v1/webhooks",
            "post",
            &["201", "401", "403", "409", "422", "429", "503"][..],
        ),
        ("/api/v1/webhooks", "get", &["200", "401", "403", "422"][..]),
        ("/api/v1/webhooks/{id}", "get", &["200", "404"][..]),
        ("/api/v1/webhooks/{id}", "patch", &["200", "404", "422"][..]),
        ("/api/v1/webhooks/{id}", "delete", &["204", "404"][..]),
        (
            "/api/v1/webhooks/{id}/rotate-secret",
            "post",
            &["200", "404"][..],
        ),
        (
            "/api/v1/webhooks/{id}/deliveries",
            "get",
            &["200", "404", "422"][..],
        ),
        (
            "/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry",
            "post",
            &["202", "404"][..],
        ),
        ("/api/v1/events", "get", &["200", "422"][..]),
    ] {
        let documented = statuses(path, method);
        for status in expected {
            assert!(
                documented.iter().any(|s| s == status),
                "{method} {path}: no {status} in {documented:?}"
            );
        }
    }
    let retry_after =
        &doc["paths"]["/api/v1/webhooks"]["post"]["responses"]["503"]["headers"]["Retry-After"];
    assert!(retry_after.is_object(), "503 documents Retry-After");
}
