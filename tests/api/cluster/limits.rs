//! What stays per instance must still be right: each instance enforces its share of a
//! store's rate limits (the limit divided by the live instances), and counts a request
//! once in the cluster.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{cluster_view, owner_of, start_cluster};
use crate::binary::Binary;
use crate::helpers::{connect, fresh_database};

/// `n` requests at once to `node` with `token`: how many were let through, and the
/// `RateLimit-Limit` of the refusals.
async fn burst(node: &Binary, token: &str, n: usize) -> (usize, Vec<String>) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (client, url, token) = (
            node.client.clone(),
            node.url("/api/v1/products"),
            token.to_owned(),
        );
        tasks.push(actix_web::rt::spawn(async move {
            let answer = client.get(url).bearer_auth(token).send().await.unwrap();
            let limit = answer
                .headers()
                .get("ratelimit-limit")
                .map(|v| v.to_str().unwrap().to_owned());
            (answer.status().as_u16(), limit)
        }));
    }
    let (mut ok, mut limits) = (0, Vec::new());
    for task in tasks {
        match task.await.unwrap() {
            (200, _) => ok += 1,
            (429, limit) => limits.push(limit.expect("a 429 names its limit")),
            other => panic!("{other:?}"),
        }
    }
    (ok, limits)
}

/// Waits until `node` sees `n` live instances.
async fn wait_members(node: &Binary, n: usize) {
    let until = Instant::now() + Duration::from_secs(20);
    while cluster_view(node).await["instances"]
        .as_array()
        .unwrap()
        .len()
        != n
    {
        assert!(
            Instant::now() < until,
            "{} never saw {n} instances",
            node.base
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn each_instance_enforces_its_share_of_a_stores_plan() {
    const PLAN: usize = 20;
    let db_url = fresh_database().await;
    let plan = PLAN.to_string();
    let mut nodes = start_cluster(&db_url, 2, &[("FLASHSALE_RATE_FREE", plan.as_str())]).await;
    let db = connect(&db_url).await;
    for node in &nodes {
        wait_members(node, 2).await;
    }
    // As the database has it: two live instances, so each enforces half the plan.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let live: i64 = db
            .query_one(
                "SELECT count(*) FROM cluster_instances WHERE expires_at > now()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if live == 2 {
            break;
        }
        assert!(Instant::now() < until, "{live} live instances");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (admin, token) = nodes[0].create_store("free").await;
    // Products made at A (fewer than its share, so none is refused).
    let mut products = Vec::new();
    for _ in 0..8 {
        products.push(nodes[0].add_product(&admin, 50, json!({})).await);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Each instance lets about half the plan through (a burst of a second's worth of
    // its share, plus what refills while the burst is sent).
    let share = PLAN / 2;
    for node in &nodes {
        let (ok, limits) = burst(node, &token, 3 * PLAN).await;
        assert!(
            (share..=share + share / 2).contains(&ok),
            "{} let {ok} of {} through, its share is {share}",
            node.base,
            3 * PLAN
        );
        assert!(limits.iter().all(|l| *l == share.to_string()), "{limits:?}");
    }
    // A request is counted once in the cluster: checkouts sent to B for A's product are
    // counted by B (which forwards them), not by A again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut owned_by_a = None;
    for id in &products {
        if owner_of(&db, id).await.as_deref() == Some(a.base.as_str()) {
            owned_by_a = Some(id.clone());
        }
    }
    let owned_by_a = owned_by_a.expect("a product owned by A");
    let forwarded = "flashsale_cluster_forwards_total{result=\"forwarded\"}";
    let forwards = b.metric(forwarded).await;
    let mut checkouts = Vec::new();
    for i in 0..share {
        let (client, url, token) = (b.client.clone(), b.url("/api/v1/checkout"), token.clone());
        let body = crate::helpers::checkout_body(&owned_by_a, 1, &format!("buyer-{i}"));
        checkouts.push(actix_web::rt::spawn(async move {
            let answer = client
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", format!("once-{i}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            answer.status().as_u16()
        }));
    }
    let mut sold = 0;
    for c in checkouts {
        if c.await.unwrap() == 201 {
            sold += 1;
        }
    }
    assert!(sold >= share - 1, "{sold} of {share} checkouts through B");
    assert_eq!(
        b.metric(forwarded).await - forwards,
        share as f64,
        "B forwarded them all to A"
    );
    let (ok, _) = burst(a, &token, 3 * PLAN).await;
    assert!(
        (share..=share + share / 2).contains(&ok),
        "A let {ok} through after B's forwarded checkouts; its share is {share}"
    );
    let orders: i64 = db
        .query_one(
            "SELECT count(*) FROM orders WHERE product_id = $1",
            &[&owned_by_a],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, sold as i64, "every 201 is an order");
    // One instance left: the whole plan is its own again.
    drop(nodes.pop());
    let a = &nodes[0];
    wait_members(a, 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (ok, limits) = burst(a, &token, 3 * PLAN).await;
    assert!(
        (PLAN..=PLAN + PLAN / 2).contains(&ok),
        "alone, {ok} of {} through; the plan is {PLAN}",
        3 * PLAN
    );
    assert!(limits.iter().all(|l| *l == PLAN.to_string()), "{limits:?}");
}
