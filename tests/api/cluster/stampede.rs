//! Three instances, a stampede on several products straight at random instances (by
//! body and by path): exactly the stock sold, every 201 in the database.

use serde_json::json;

use super::{assert_sold_exactly, cluster_view, metric_sum, open_shop, sell_out, start_cluster};
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
    // Each shard's owner, as the database has it (what haproxy-map reads).
    let shards = view["shards"].as_array().unwrap();
    assert_eq!(shards.len(), flashsale::cluster::SHARDS, "{view}");
    let db = connect(&db_url).await;
    for (shard, owner) in shards.iter().enumerate() {
        let owner = owner
            .as_str()
            .unwrap_or_else(|| panic!("shard {shard} has no owner"));
        assert!(urls.contains(&owner), "{view}");
        let in_db: String = db
            .query_one(
                "SELECT owner_url FROM shard_leases WHERE shard = $1",
                &[&(shard as i32)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(owner, in_db);
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
