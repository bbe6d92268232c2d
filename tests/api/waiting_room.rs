//! A fair virtual waiting room: early arrivals shuffled at the start, admitted at the
//! configured rate, and checkout only with a signed token.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, checkout_body, spawn_app};

#[actix_web::test]
async fn early_arrivals_are_shuffled_admitted_at_the_rate_and_checkout_needs_a_token() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let starts = Utc::now() + chrono::Duration::milliseconds(1500);
    let room = json!({"opens_seconds_before": 60, "admit_per_second": 10});
    let product = app
        .create_product(
            &store,
            100,
            json!({"sale_starts_at": starts.to_rfc3339(), "waiting_room": room}),
        )
        .await;
    let plain = app.create_product(&store, 100, json!({})).await;
    let queue = format!("/api/v1/products/{product}/queue");

    // Twelve buyers arrive before the start, in order.
    let mut tickets = Vec::new();
    for i in 0..12 {
        let response = app
            .post(
                &queue,
                &store.storefront,
                &json!({"customer_id": format!("c{i}")}),
            )
            .await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "waiting");
        assert!(body["admit_at"].is_null(), "no order before the start");
        tickets.push(body["ticket"].as_str().unwrap().to_owned());
    }
    let again: Value = app
        .post(&queue, &store.storefront, &json!({"customer_id": "c0"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["ticket"],
        tickets[0].as_str(),
        "joining twice keeps one place"
    );
    assert_problem(
        app.post(
            &format!("/api/v1/products/{plain}/queue"),
            &store.storefront,
            &json!({"customer_id": "x"}),
        )
        .await,
        409,
        "no_waiting_room",
    )
    .await;
    assert_problem(
        app.post(&queue, &store.storefront, &json!({})).await,
        422,
        "validation_failed",
    )
    .await;
    // No token, no checkout — before and after the start.
    assert_problem(
        app.checkout(&store.storefront, "k0", &checkout_body(&product, 1, "c0"))
            .await,
        409,
        "waiting_room_token_required",
    )
    .await;

    tokio::time::sleep(Duration::from_millis(1600)).await;
    // The start shuffles the queue and spaces admissions 100 ms apart.
    let mut places = Vec::new();
    for (i, t) in tickets.iter().enumerate() {
        let body: Value = app
            .get(&format!("{queue}/{t}"), &store.storefront)
            .await
            .json()
            .await
            .unwrap();
        let at: DateTime<Utc> = body["admit_at"].as_str().unwrap().parse().unwrap();
        places.push((at, i, body));
    }
    places.sort_by_key(|(at, _, _)| *at);
    for pair in places.windows(2) {
        assert_eq!(
            (pair[1].0 - pair[0].0).num_milliseconds(),
            100,
            "one admission every 1/rate"
        );
    }
    let order: Vec<usize> = places.iter().map(|(_, i, _)| *i).collect();
    assert_ne!(
        order,
        (0..12).collect::<Vec<_>>(),
        "arrival order is not admission order"
    );
    let distinct: HashSet<_> = places.iter().map(|(at, _, _)| *at).collect();
    assert_eq!(distinct.len(), 12);

    // The first admitted buyer has a token and can buy; someone else's token cannot.
    let (_, first, body) = &places[0];
    assert_eq!(body["status"], "admitted");
    let token = body["token"].as_str().unwrap().to_owned();
    let customer = format!("c{first}");
    let with_token = |key: &str, customer: &str, token: &str| {
        let body = checkout_body(&product, 1, customer);
        let request = app
            .client
            .post(app.url("/api/v1/checkout"))
            .bearer_auth(&store.storefront)
            .header("Idempotency-Key", key)
            .header("Waiting-Room-Token", token)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    assert_problem(
        with_token("k-other", "c999", &token).await,
        409,
        "waiting_room_token_required",
    )
    .await;
    assert_problem(
        with_token("k-forged", &customer, &token.replace('.', ".0")).await,
        409,
        "waiting_room_token_required",
    )
    .await;
    assert_eq!(with_token("k-ok", &customer, &token).await.status(), 201);
    // The last one waits its turn: no token yet right after the start.
    let (_, _, last) = &places[11];
    assert!(last["token"].is_null() || Utc::now() >= places[11].0);
    // A late arrival queues behind everyone.
    let late: Value = app
        .post(&queue, &store.storefront, &json!({"customer_id": "late"}))
        .await
        .json()
        .await
        .unwrap();
    let late_at: DateTime<Utc> = late["admit_at"].as_str().unwrap().parse().unwrap();
    assert!(late_at >= places[11].0);
    assert_problem(
        app.get(&format!("{queue}/tkt_nope"), &store.storefront)
            .await,
        404,
        "ticket_not_found",
    )
    .await;
}
