//! Three instances, a stampede on several products straight at random instances (by
//! body and by path): exactly the stock sold, every 201 in the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{
    assert_sold_exactly, assert_stock_adds_up, buy_until_definitive, cluster_view, metric_sum,
    open_shop, sell_out, start_cluster,
};
use crate::helpers::{connect, fresh_database};

#[actix_web::test]
async fn three_instances_sell_exactly_the_stock_of_several_products() {
    let db_url = fresh_database().await;
    let nodes = start_cluster(&db_url, 3, &[]).await;
    let view = cluster_view(&nodes[1]).await;
    let urls: Vec<&str> = view["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 3, "{view}");
    for n in &nodes {
        assert!(urls.contains(&n.base.as_str()), "{view}");
    }

    let (products, stock, buyers_each) = (6, 15, 40);
    let shop = open_shop(&nodes[0], products, stock, json!({})).await;
    let sold = sell_out(
        &shop,
        nodes.iter().map(|n| n.base.clone()).collect::<Vec<_>>(),
        buyers_each,
        "p",
    )
    .await;
    let db = connect(&db_url).await;
    for product in &shop.products {
        let ids = sold.get(product).cloned().unwrap_or_default();
        assert_sold_exactly(&db, product, &ids, stock).await;
    }
    // Random instances: most requests met a product owned elsewhere, and were forwarded.
    let all: Vec<_> = nodes.iter().collect();
    let forwarded = metric_sum(
        &all,
        "flashsale_cluster_forwards_total{result=\"forwarded\"}",
    )
    .await;
    assert!(forwarded > 0.0, "requests were forwarded to their owners");
}

#[actix_web::test]
async fn an_instance_added_mid_sale_takes_its_share_and_nothing_is_lost() {
    let db_url = fresh_database().await;
    let mut nodes = start_cluster(&db_url, 2, &[]).await;
    let (products, stock, buyers_each) = (6, 20, 30);
    let shop = open_shop(&nodes[0], products, stock, json!({})).await;
    let bases = Arc::new(nodes.iter().map(|n| n.base.clone()).collect::<Vec<_>>());
    let clients: Vec<reqwest::Client> = (0..16).map(|_| reqwest::Client::new()).collect();
    let mut tasks = Vec::new();
    for (p, product) in shop.products.iter().enumerate() {
        for b in 0..buyers_each {
            let (client, bases) = (clients[(p + b) % clients.len()].clone(), bases.clone());
            let (token, product) = (shop.storefront.clone(), product.clone());
            let key = format!("j{p}-b{b}");
            tasks.push(actix_web::rt::spawn(async move {
                // Spread over the join.
                tokio::time::sleep(Duration::from_millis(b as u64 * 60)).await;
                let first = super::checkout_at(
                    &client,
                    &bases[b % bases.len()],
                    &token,
                    &product,
                    &key,
                    b % 2 == 0,
                )
                .await;
                let refused = first.as_ref().is_none_or(|a| a.status == 503);
                let answer = match first {
                    Some(a) if a.status != 503 && a.code() != "idempotency_in_progress" => a,
                    _ => {
                        buy_until_definitive(
                            &client,
                            bases,
                            &token,
                            &product,
                            &key,
                            Duration::from_secs(60),
                        )
                        .await
                    }
                };
                (product, key, answer, refused)
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lease = super::LEASE_SECS.to_string();
    nodes.push(
        crate::binary::Binary::start(
            &db_url,
            &[
                ("FLASHSALE_LEASE_SECS", lease.as_str()),
                ("RUST_LOG", "warn"),
            ],
        )
        .await,
    );
    let mut sold: HashMap<String, usize> = HashMap::new();
    let mut refusals = 0;
    for task in tasks {
        let (product, key, answer, refused) = task.await.unwrap();
        refusals += usize::from(refused);
        match answer.status {
            201 => *sold.entry(product).or_default() += 1,
            409 => assert!(
                ["sold_out", "insufficient_stock"].contains(&answer.code().as_str()),
                "{key}: {answer:?}"
            ),
            _ => panic!("{key}: {answer:?}"),
        }
    }
    super::wait_spread(&db_url, &nodes).await;
    let db = connect(&db_url).await;
    for product in &shop.products {
        assert_eq!(
            sold.get(product).copied().unwrap_or(0) as i64,
            stock,
            "{product} sold out exactly"
        );
        assert_eq!(assert_stock_adds_up(&db, product).await, stock);
    }
    let owned = nodes[2].metric("flashsale_cluster_shards_owned").await;
    assert!(owned > 0.0, "the new instance took its share");
    eprintln!(
        "first attempts answered 503 during the join: {refusals} of {}",
        products * buyers_each
    );
}
