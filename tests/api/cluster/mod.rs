//! Several instances on one database: the real binary, three (or two) processes, real
//! PostgreSQL, loopback. Stampedes straight at random instances and through HAProxy, a
//! kill -9 mid-drop, a paused owner woken after another took over, and an instance
//! joining mid-sale.

mod caches;
mod failover;
mod haproxy;
mod join;
mod limits;
mod replica;
mod stampede;
mod webhooks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::binary::{Answer, Binary, TOKEN};
use crate::helpers::{checkout_body, connect};

/// Leases in these tests (seconds): short, so that takeovers are quick.
pub const LEASE_SECS: u64 = 2;

/// `n` instances on `db_url`, started one after the other, each ready; returns once
/// the shards are spread over all of them.
pub async fn start_cluster(db_url: &str, n: usize, env: &[(&str, &str)]) -> Vec<Binary> {
    let lease = LEASE_SECS.to_string();
    let mut all_env = vec![
        ("FLASHSALE_LEASE_SECS", lease.as_str()),
        ("RUST_LOG", "warn,flashsale::cluster=info"),
    ];
    all_env.extend_from_slice(env);
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Binary::start(db_url, &all_env).await);
    }
    wait_spread(db_url, &nodes).await;
    nodes
}

/// Waits until every shard is held by one of `nodes` and each holds some.
pub async fn wait_spread(db_url: &str, nodes: &[Binary]) {
    let db = connect(db_url).await;
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = db
            .query(
                "SELECT owner_url, count(*) FROM shard_leases WHERE expires_at > now() GROUP BY 1",
                &[],
            )
            .await
            .unwrap();
        let held: Vec<(String, i64)> = rows
            .iter()
            .map(|r| (r.get::<_, Option<String>>(0).unwrap_or_default(), r.get(1)))
            .collect();
        let total: i64 = held.iter().map(|(_, n)| n).sum();
        let every = nodes
            .iter()
            .all(|n| held.iter().any(|(url, c)| *url == n.base && *c > 0));
        if total == 256 && every && held.len() == nodes.len() {
            return;
        }
        assert!(Instant::now() < until, "shards never spread: {held:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The URL of the instance holding `product`'s shard now, if its lease is live.
pub async fn owner_of(db: &tokio_postgres::Client, product: &str) -> Option<String> {
    let shard = flashsale::cluster::shard_of(product) as i32;
    db.query_one(
        "SELECT CASE WHEN expires_at > now() THEN owner_url END FROM shard_leases WHERE shard = $1",
        &[&shard],
    )
    .await
    .unwrap()
    .get(0)
}

/// A store (enterprise: no rate limits) with `count` products of `stock` units.
pub struct Shop {
    pub storefront: String,
    pub products: Vec<String>,
}

pub async fn open_shop(node: &Binary, count: usize, stock: i64, extra: Value) -> Shop {
    let shop = node.open_shop(stock, extra.clone()).await;
    let mut products = vec![shop.product];
    while products.len() < count {
        products.push(node.add_product(&shop.admin, stock, extra.clone()).await);
    }
    Shop {
        storefront: shop.storefront,
        products,
    }
}

/// One checkout of one unit at `base`, by the body's product or by the path.
pub async fn checkout_at(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    product: &str,
    key: &str,
    by_path: bool,
) -> Option<Answer> {
    checkout_within(
        client,
        base,
        token,
        product,
        key,
        by_path,
        Duration::from_secs(45),
    )
    .await
}

/// [`checkout_at`], waiting up to `patience` for the answer (a paused server's).
pub async fn checkout_within(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    product: &str,
    key: &str,
    by_path: bool,
    patience: Duration,
) -> Option<Answer> {
    let url = if by_path {
        format!("{base}/api/v1/products/{product}/checkout")
    } else {
        format!("{base}/api/v1/checkout")
    };
    let response = client
        .post(url)
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&checkout_body(product, 1, &format!("buyer-{key}")))
        .timeout(patience)
        .send()
        .await
        .ok()?;
    Some(Answer::read(response).await)
}

/// Retries a key (as a client would: 503 and 409 in progress wait and try again) at
/// the bases `pick` chooses, until a definitive answer or `patience` runs out.
pub async fn buy_until_definitive(
    client: &reqwest::Client,
    bases: Arc<Vec<String>>,
    token: &str,
    product: &str,
    key: &str,
    patience: Duration,
) -> Answer {
    let until = Instant::now() + patience;
    let mut attempt = 0usize;
    loop {
        let base = &bases[(rand::random::<u32>() as usize) % bases.len()];
        let answer = checkout_at(client, base, token, product, key, attempt % 2 == 1).await;
        attempt += 1;
        match answer {
            Some(a) if a.status != 503 && a.code() != "idempotency_in_progress" => return a,
            other => {
                assert!(
                    Instant::now() < until,
                    "no definitive answer for {key}: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Sum of a metric over the instances.
pub async fn metric_sum(nodes: &[&Binary], line_prefix: &str) -> f64 {
    let mut sum = 0.0;
    for n in nodes {
        sum += n.metric(line_prefix).await;
    }
    sum
}

/// `GET /api/v1/cluster` at `node`.
pub async fn cluster_view(node: &Binary) -> Value {
    node.client
        .get(node.url("/api/v1/cluster"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every order of `product` in the database: at most one per key, and its stock adds up.
pub async fn assert_stock_adds_up(db: &tokio_postgres::Client, product: &str) -> i64 {
    let (total, available, held, live) = crate::helpers::stock_from_db(db, product).await;
    assert_eq!(available, total - held, "stock adds up for {product}");
    assert!(held <= total, "no oversell on {product}");
    assert_eq!(held, live, "one unit per order");
    let doubles: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT store_id, idempotency_key FROM orders \
             WHERE product_id = $1 GROUP BY 1, 2 HAVING count(*) > 1) d",
            &[&product],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(doubles, 0, "one order per key");
    held
}

/// `buyers_each` buyers (keys `{prefix}{p}-b{b}`) for each of the shop's products, sent
/// to `bases` at random, each retrying until its answer is definitive; a 409 must be a
/// sell-out. Returns the order ids of the 201s, by product.
pub async fn sell_out(
    shop: &Shop,
    bases: Vec<String>,
    buyers_each: usize,
    prefix: &str,
) -> std::collections::HashMap<String, Vec<String>> {
    let bases = Arc::new(bases);
    let clients: Vec<reqwest::Client> = (0..16).map(|_| reqwest::Client::new()).collect();
    let mut tasks = Vec::new();
    for (p, product) in shop.products.iter().enumerate() {
        for b in 0..buyers_each {
            let client = clients[(p * buyers_each + b) % clients.len()].clone();
            let (bases, token, product) = (bases.clone(), shop.storefront.clone(), product.clone());
            let key = format!("{prefix}{p}-b{b}");
            tasks.push(actix_web::rt::spawn(async move {
                let answer = buy_until_definitive(
                    &client,
                    bases,
                    &token,
                    &product,
                    &key,
                    Duration::from_secs(60),
                )
                .await;
                (product, key, answer)
            }));
        }
    }
    let mut sold: std::collections::HashMap<String, Vec<String>> = Default::default();
    for task in tasks {
        let (product, key, answer) = task.await.unwrap();
        match answer.status {
            201 => sold.entry(product).or_default().push(answer.code()),
            409 => assert!(
                ["sold_out", "insufficient_stock"].contains(&answer.code().as_str()),
                "{key}: {answer:?}"
            ),
            _ => panic!("{key}: {answer:?}"),
        }
    }
    sold
}

/// Exactly `stock` of `product` sold, every 201 an order in the database, and the
/// product's stock adds up.
pub async fn assert_sold_exactly(
    db: &tokio_postgres::Client,
    product: &str,
    ids: &[String],
    stock: i64,
) {
    assert_eq!(
        ids.len() as i64,
        stock,
        "exactly the stock of {product} sold"
    );
    for id in ids {
        let found: i64 = db
            .query_one("SELECT count(*) FROM orders WHERE id = $1", &[id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(found, 1, "order {id} got a 201 and is in the database");
    }
    assert_eq!(assert_stock_adds_up(db, product).await, stock);
}
