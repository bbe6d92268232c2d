//! Deliveries: every event type signed both ways, retries on the schedule, 410, a
//! hanging receiver, and the 10,000-unit sell-out.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{answer, subscribe, tune, verify_flashsale, verify_standard, Got, Receiver};
use crate::helpers::{checkout_body, spawn_app_with};

fn of_kind<'a>(got: &'a [Got], kind: &str) -> Vec<&'a Got> {
    got.iter().filter(|g| g.kind() == kind).collect()
}

#[actix_web::test]
async fn each_event_type_arrives_signed_and_both_signatures_verify() {
    let app = spawn_app_with(tune).await;
    let store = app.create_store().await;
    let receiver = Receiver::start(answer(200)).await;
    let all = flashsale::domain::webhook::EVENT_TYPES;
    let endpoint = subscribe(&app, &store, &receiver.url, all).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();

    // A drop that opens in a second, with payment holds.
    let starts = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let product = app
        .create_product(
            &store,
            4,
            json!({"sale_starts_at": starts, "hold_seconds": 60}),
        )
        .await;
    let live = receiver
        .wait_for(Duration::from_secs(5), |g| {
            !of_kind(g, "drop.live").is_empty()
        })
        .await;
    let live = of_kind(&live, "drop.live")[0].clone();
    let late = live.at.elapsed();
    assert_eq!(live.event["data"]["id"], product.as_str());
    assert_eq!(live.event["data"]["status"], "live");
    let order = |i: usize| {
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
            assert_eq!(response.status(), 201);
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let confirmed = order(1).await;
    let response = app
        .post(
            &format!("/api/v1/orders/{confirmed}/confirm"),
            &store.admin,
            &json!({"payment_reference": "pay_1"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let cancelled = order(2).await;
    let response = app
        .post(
            &format!("/api/v1/orders/{cancelled}/cancel"),
            &store.admin,
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let response = app
        .post(
            &format!("/api/v1/products/{product}/restock"),
            &store.admin,
            &json!({"quantity": 1}),
        )
        .await;
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
    // Stock now 5, 1 held: four more sell it out.
    for i in 3..7 {
        order(i).await;
    }
    // A hold that lapses: a product of its own with a one-second hold.
    let short = app
        .create_product(&store, 1, json!({"hold_seconds": 1}))
        .await;
    let response = app
        .checkout(&store.storefront, "kx", &checkout_body(&short, 1, "cx"))
        .await;
    assert_eq!(response.status(), 201);
    let expiring = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let got = receiver
        .wait_for(Duration::from_secs(20), |g| {
            all.iter().all(|k| !of_kind(g, k).is_empty()) && !of_kind(g, "order.expired").is_empty()
        })
        .await;
    for g in &got {
        verify_flashsale(g, &[&secret]);
        verify_standard(g, &secret);
        assert_eq!(g.headers["content-type"], "application/json");
        let traceparent = &g.headers["traceparent"];
        assert_eq!(traceparent.split('-').count(), 4, "{traceparent}");
        let keys: HashSet<&str> = g
            .event
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, HashSet::from(["id", "type", "created_at", "data"]));
    }
    let data = |kind: &str, id: &str| -> Value {
        of_kind(&got, kind)
            .iter()
            .find(|g| g.event["data"]["id"] == id)
            .unwrap_or_else(|| panic!("no {kind} about {id}"))
            .event["data"]
            .clone()
    };
    // `data` is the representation at the time of the event.
    let api_order: Value = app
        .get(&format!("/api/v1/orders/{confirmed}"), &store.admin)
        .await
        .json()
        .await
        .unwrap();
    let created = data("order.created", &confirmed);
    assert_eq!(created["status"], "reserved");
    for field in [
        "id",
        "store_id",
        "product_id",
        "customer_id",
        "quantity",
        "unit_price_cents",
        "currency",
        "total_cents",
    ] {
        assert_eq!(created[field], api_order[field], "{field}");
    }
    assert_eq!(data("order.confirmed", &confirmed)["status"], "confirmed");
    assert_eq!(data("order.cancelled", &cancelled)["status"], "cancelled");
    assert_eq!(data("order.expired", &expiring)["status"], "expired");
    let restocked = data("product.restocked", &product);
    assert_eq!(restocked["stock_total"], 5);
    let sold_out = data("product.sold_out", &product);
    assert_eq!(
        (
            sold_out["stock_available"].clone(),
            sold_out["status"].clone()
        ),
        (json!(0), json!("sold_out"))
    );
    assert_eq!(of_kind(&got, "drop.live").len(), 1, "drop.live once");
    assert!(late < Duration::from_secs(20));
    let opened_after = live.event["created_at"]
        .as_str()
        .unwrap()
        .parse::<chrono::DateTime<chrono::Utc>>()
        .unwrap();
    assert!(
        (opened_after - starts).num_milliseconds().abs() < 5,
        "drop.live is dated at the start"
    );

    // After a rotation both secrets sign, in both schemes.
    let id = endpoint["id"].as_str().unwrap();
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
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    let before = receiver.got().len();
    let other = app.create_product(&store, 2, json!({})).await;
    let response = app
        .checkout(&store.storefront, "kr", &checkout_body(&other, 1, "cr"))
        .await;
    assert_eq!(response.status(), 201);
    let got = receiver
        .wait_for(Duration::from_secs(10), |g| g.len() > before)
        .await;
    let last = got.last().unwrap();
    verify_flashsale(last, &[&secret, &new_secret]);
    verify_standard(last, &secret);
    verify_standard(last, &new_secret);
    // drop.live was announced once, though the timer kept looking.
    assert_eq!(of_kind(&receiver.got(), "drop.live").len(), 1);
}

#[actix_web::test]
async fn a_failing_receiver_is_retried_on_the_schedule_then_delivered_once() {
    let app = spawn_app_with(tune).await;
    let store = app.create_store().await;
    // 500, then 503 asking for 1 s (honoured up to twice the 0.2 s delay), then 200.
    let receiver = Receiver::start(Arc::new(|_, seen| match seen {
        0 => (500, Duration::ZERO),
        1 => (503, Duration::ZERO),
        _ => (200, Duration::ZERO),
    }))
    .await;
    let endpoint = subscribe(&app, &store, &receiver.url, &["order.created"]).await;
    let product = app.create_product(&store, 5, json!({})).await;
    let response = app
        .checkout(&store.storefront, "k1", &checkout_body(&product, 1, "c1"))
        .await;
    assert_eq!(response.status(), 201);
    let got = receiver
        .wait_for(Duration::from_secs(10), |g| {
            g.iter().any(|g| g.answered == 200)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got_all = receiver.got();
    assert_eq!(got_all.len(), 3, "three attempts, none after the 2xx");
    assert_eq!(got.iter().filter(|g| g.answered == 200).count(), 1);
    assert!(got.iter().all(|g| g.id() == got[0].id()));
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    // 0.2 s ±20 %, as scheduled; every attempt signed afresh with its own timestamp.
    assert!(
        gaps.iter()
            .all(|g| *g >= Duration::from_millis(150) && *g < Duration::from_secs(2)),
        "{gaps:?}"
    );
    assert!(gaps[1] >= Duration::from_millis(150), "{gaps:?}");
    let id = endpoint["id"].as_str().unwrap();
    let items = super::wait_deliveries(&app, &store, id, Duration::from_secs(5), |d| {
        d.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    assert_eq!(items.len(), 1);
    let codes: Vec<Value> = items[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, vec![json!(500), json!(503), json!(200)]);
    assert!(items[0]["next_attempt_at"].is_null());
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("flashsale_webhook_lag_seconds_count"),
        "{metrics}"
    );

    // A redelivery on request: 202, and it arrives again.
    let delivery = items[0]["id"].as_str().unwrap();
    let response = app
        .post(
            &format!("/api/v1/webhooks/{id}/deliveries/{delivery}/retry"),
            &store.admin,
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), 202);
    receiver
        .wait_for(Duration::from_secs(5), |g| g.len() == 4)
        .await;
}

#[actix_web::test]
async fn gone_disables_the_endpoint_at_once() {
    let app = spawn_app_with(tune).await;
    let store = app.create_store().await;
    let receiver = Receiver::start(answer(410)).await;
    let endpoint = subscribe(&app, &store, &receiver.url, &["order.created"]).await;
    let product = app.create_product(&store, 5, json!({})).await;
    let response = app
        .checkout(&store.storefront, "k1", &checkout_body(&product, 1, "c1"))
        .await;
    assert_eq!(response.status(), 201);
    receiver
        .wait_for(Duration::from_secs(10), |g| g.len() == 1)
        .await;
    let id = endpoint["id"].as_str().unwrap();
    let mut status = Value::Null;
    for _ in 0..50 {
        status = app
            .get(&format!("/api/v1/webhooks/{id}"), &store.admin)
            .await
            .json()
            .await
            .unwrap();
        if status["status"] == "disabled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["status"], "disabled");
    assert_eq!(status["disabled_reason"], "gone");
    let response = app
        .checkout(&store.storefront, "k2", &checkout_body(&product, 1, "c2"))
        .await;
    assert_eq!(response.status(), 201);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.got().len(),
        1,
        "nothing is sent to a disabled endpoint"
    );
    assert!(app
        .metrics_text()
        .await
        .contains(r#"flashsale_webhook_endpoints_disabled_total{reason="gone"} "#));
}

#[actix_web::test]
async fn a_hanging_receiver_times_out_and_other_endpoints_are_unaffected() {
    let app = spawn_app_with(|s| {
        tune(s);
        s.webhook_timeout_ms = 1000;
    })
    .await;
    let store = app.create_store().await;
    let hanging = Receiver::start(Arc::new(|_, _| (200, Duration::from_secs(30)))).await;
    let healthy = Receiver::start(answer(200)).await;
    let other_store = app.create_store().await;
    let elsewhere = Receiver::start(answer(200)).await;
    let stuck = subscribe(&app, &store, &hanging.url, &["order.created"]).await;
    subscribe(&app, &store, &healthy.url, &["order.created"]).await;
    subscribe(&app, &other_store, &elsewhere.url, &["order.created"]).await;
    let product = app.create_product(&store, 100, json!({})).await;
    let other_product = app.create_product(&other_store, 100, json!({})).await;
    let started = Instant::now();
    for i in 0..40 {
        let response = app
            .checkout(
                &store.storefront,
                &format!("k{i}"),
                &checkout_body(&product, 1, &format!("c{i}")),
            )
            .await;
        assert_eq!(response.status(), 201);
        let response = app
            .checkout(
                &other_store.storefront,
                &format!("k{i}"),
                &checkout_body(&other_product, 1, &format!("c{i}")),
            )
            .await;
        assert_eq!(response.status(), 201);
    }
    healthy
        .wait_for(Duration::from_secs(10), |g| g.len() >= 40)
        .await;
    elsewhere
        .wait_for(Duration::from_secs(10), |g| g.len() >= 40)
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    // The hanging one has at most the per-endpoint bound in flight, and its attempts
    // are recorded as timeouts and retried.
    // Until the first timeout (1 s) nothing it was sent has ended: all that arrived by
    // then was in flight at once.
    let got = hanging.got();
    let first = got[0].at;
    let at_once = got
        .iter()
        .filter(|g| g.at - first < Duration::from_millis(900))
        .count();
    assert!(
        (1..=16).contains(&at_once),
        "{at_once} requests in flight to one endpoint"
    );
    let id = stuck["id"].as_str().unwrap();
    let items = super::wait_deliveries(&app, &store, id, Duration::from_secs(10), |d| {
        d.iter()
            .any(|d| d["attempts"].as_array().unwrap().len() >= 2)
    })
    .await;
    let attempt = items
        .iter()
        .flat_map(|d| d["attempts"].as_array().unwrap().clone())
        .next()
        .unwrap();
    assert!(attempt["status_code"].is_null());
    assert!(attempt["duration_ms"].as_i64().unwrap() >= 900, "{attempt}");
    assert!(
        attempt["error"].as_str().unwrap().contains("timed out")
            || attempt["error"].as_str().unwrap().contains("timeout"),
        "{attempt}"
    );
}

/// A timing claim: run alone (`.ci/run` does, after the suite), since on a shared
/// machine the rest of the suite would be measured with it.
#[actix_web::test]
#[ignore = "timing: run alone with `cargo test --test api -- --ignored`"]
async fn a_sell_out_of_10000_units_is_delivered_within_15_s() {
    let app = spawn_app_with(tune).await;
    let store = app.create_store().await;
    let receiver = Receiver::start(answer(200)).await;
    subscribe(&app, &store, &receiver.url, &["order.created"]).await;
    let product = app.create_product(&store, 10_000, json!({})).await;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let buyers: Vec<_> = (0..64)
        .map(|_| {
            let (client, url, token, product, next) = (
                app.client.clone(),
                app.url("/api/v1/checkout"),
                store.storefront.clone(),
                product.clone(),
                next.clone(),
            );
            actix_web::rt::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= 10_000 {
                        return;
                    }
                    // A 503 (the shared machine's database falling behind) is retried
                    // with the same key, as the contract tells buyers to.
                    loop {
                        let response = client
                            .post(&url)
                            .bearer_auth(&token)
                            .header("Idempotency-Key", format!("k{i}"))
                            .json(&checkout_body(&product, 1, &format!("c{i}")))
                            .send()
                            .await
                            .unwrap();
                        match response.status().as_u16() {
                            201 => break,
                            503 => tokio::time::sleep(Duration::from_millis(100)).await,
                            other => panic!("checkout answered {other}"),
                        }
                    }
                }
            })
        })
        .collect();
    for b in buyers {
        b.await.unwrap();
    }
    let sold_out = Instant::now();
    receiver
        .wait_delivered(10_000, Duration::from_secs(15))
        .await;
    let took = sold_out.elapsed();
    println!("10,000 order.created delivered {took:?} after the sell-out");
    let db = app.db().await;
    let events: i64 = db
        .query_one(
            "SELECT count(*) FROM events WHERE type = 'order.created'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 10_000);
    assert_eq!(receiver.delivered_ids().len(), 10_000);
}
