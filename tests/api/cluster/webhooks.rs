//! Webhooks with one dispatcher per instance: three instances claim deliveries from the
//! one outbox (`FOR UPDATE SKIP LOCKED`, each claim a lease), and every event reaches
//! the endpoint once, whichever instance committed it and whichever delivered it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{assert_sold_exactly, metric_sum, sell_out, start_cluster, Shop};
use crate::binary::Binary;
use crate::helpers::{connect, fresh_database};
use crate::webhooks::Receiver;

/// Subscribes `url` at `node` for the store whose admin key is `admin`.
async fn subscribe_at(node: &Binary, admin: &str, url: &str) -> String {
    let response = node
        .client
        .post(node.url("/api/v1/webhooks"))
        .bearer_auth(admin)
        .json(&json!({"url": url, "events": ["order.created", "product.sold_out"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let endpoint: serde_json::Value = response.json().await.unwrap();
    endpoint["id"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn three_dispatchers_deliver_every_event_once() {
    let db_url = fresh_database().await;
    let nodes = start_cluster(
        &db_url,
        3,
        &[
            ("FLASHSALE_WEBHOOK_ALLOW_NETS", "127.0.0.0/8"),
            ("FLASHSALE_WEBHOOK_RETRY_SCHEDULE", "0.2,0.2,0.2"),
        ],
    )
    .await;
    // A receiver that takes a while over each POST, so that the three dispatchers'
    // claims overlap in time: a dispatcher with requests in flight to the endpoint
    // claims none of its later deliveries, which are left to the others. (At 15 ms, the
    // instance whose writer committed, dispatching right after its batch, could claim
    // every event of a fast sell-out alone.)
    let receiver = Receiver::start(Arc::new(|_, _| (200, Duration::from_millis(150)))).await;
    let (products, stock, buyers_each) = (4, 25, 35);
    let first = nodes[0].open_shop(stock, json!({})).await;
    let endpoint = subscribe_at(&nodes[1], &first.admin, &receiver.url).await;
    let mut ids = vec![first.product.clone()];
    while ids.len() < products {
        ids.push(nodes[2].add_product(&first.admin, stock, json!({})).await);
    }
    let shop = Shop {
        storefront: first.storefront.clone(),
        products: ids,
    };
    let sold = sell_out(
        &shop,
        nodes.iter().map(|n| n.base.clone()).collect(),
        buyers_each,
        "w",
    )
    .await;
    let db = connect(&db_url).await;
    for product in &shop.products {
        let ids = sold.get(product).cloned().unwrap_or_default();
        assert_sold_exactly(&db, product, &ids, stock).await;
    }

    // Every event of the store the endpoint subscribed to, as the outbox has them: one
    // order.created per committed order, one product.sold_out per product.
    let expected: Vec<String> = db
        .query(
            "SELECT event_id FROM events WHERE store_id = (SELECT store_id FROM orders LIMIT 1) \
             AND type IN ('order.created', 'product.sold_out')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let orders = products * stock as usize;
    assert_eq!(expected.len(), orders + products, "{expected:?}");
    let got = receiver
        .wait_for(Duration::from_secs(60), |got| {
            let delivered: std::collections::HashSet<&str> = got.iter().map(|g| g.id()).collect();
            expected.iter().all(|id| delivered.contains(id.as_str()))
        })
        .await;

    // Each event POSTed once: no two dispatchers claimed the same delivery, and none
    // was sent again (every answer was a 200 within the claim's lease).
    let mut per_event: HashMap<&str, usize> = HashMap::new();
    for g in &got {
        *per_event.entry(g.id()).or_default() += 1;
    }
    let twice: Vec<_> = per_event.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(per_event.len(), expected.len());

    // The database agrees: one delivery row per event, delivered at the first attempt
    // (the last batch's 2xx may still be on its way to its record: a batch is recorded
    // once all its requests are answered).
    let want = vec![("delivered".to_owned(), 1, expected.len() as i64)];
    let mut summary: Vec<(String, i32, i64)> = Vec::new();
    for _ in 0..100 {
        let rows = db
            .query(
                "SELECT status, attempt_count, count(*) FROM webhook_deliveries \
                 WHERE endpoint_id = $1 GROUP BY 1, 2",
                &[&endpoint],
            )
            .await
            .unwrap();
        summary = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        if summary == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(summary, want, "{summary:?}");
    // And the instances' own counts add up to it: each delivery was finished by exactly
    // one of them.
    let all: Vec<_> = nodes.iter().collect();
    let finished = metric_sum(
        &all,
        "flashsale_webhook_deliveries_total{outcome=\"delivered\"}",
    )
    .await;
    assert_eq!(finished as usize, expected.len());
    // The work was shared: more than one dispatcher delivered (each polls the outbox on
    // its own), so the once-only above was tested against real contention.
    let mut busy = 0;
    for n in &nodes {
        if n.metric("flashsale_webhook_deliveries_total{outcome=\"delivered\"}")
            .await
            > 0.0
        {
            busy += 1;
        }
    }
    assert!(busy >= 2, "only {busy} instance delivered");
}
