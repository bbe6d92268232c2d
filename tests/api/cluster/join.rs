//! An instance added to a running cluster mid-sale takes its share of the shards without
//! a refusal: the former owners finish what they are serving, release, and forward to
//! the new owner; nothing is answered 503, nothing is oversold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashsale::cluster::shard_of;
use flashsale::cluster::shards::rendezvous;
use serde_json::json;

use super::{assert_sold_exactly, checkout_at, owner_of, start_cluster, Shop, LEASE_SECS};
use crate::binary::Binary;
use crate::helpers::{connect, fresh_database};

/// A loopback port free now (for the instance to join: its URL decides its shards).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// A timing claim (a request waits for the new owner at most until its deadline's start
// by, about 3 s): on a machine oversubscribed by other work, the newcomer's claim round
// can take longer than that, so it runs alone, after the suite (.ci/run).
#[actix_web::test]
#[ignore = "timing: run alone with `cargo test --test api -- --ignored`"]
async fn an_instance_added_mid_sale_takes_its_share_without_a_refusal() {
    let db_url = fresh_database().await;
    let mut nodes = start_cluster(&db_url, 2, &[]).await;
    let db = connect(&db_url).await;
    // The newcomer's address is chosen now, so that we know which products move to it.
    let joiner_url = format!("http://127.0.0.1:{}", free_port());
    let urls = [
        nodes[0].base.as_str(),
        nodes[1].base.as_str(),
        joiner_url.as_str(),
    ];
    let moves = |p: &str| rendezvous(&urls, shard_of(p)) == Some(2);
    let stock = 100_000i64;
    let first = nodes[0].open_shop(stock, json!({})).await;
    let mut shop = Shop {
        storefront: first.storefront,
        products: vec![first.product],
    };
    while shop.products.iter().filter(|p| moves(p)).count() < 3
        || shop.products.iter().filter(|p| !moves(p)).count() < 2
    {
        let product = nodes[0].add_product(&first.admin, stock, json!({})).await;
        shop.products.push(product);
    }
    // Three that move and two that stay are enough (a light load: the claim is about
    // refusals, not throughput).
    let moving: Vec<String> = shop
        .products
        .iter()
        .filter(|p| moves(p))
        .take(3)
        .cloned()
        .collect();
    let staying = shop.products.iter().filter(|p| !moves(p)).take(2).cloned();
    shop.products = moving.iter().cloned().chain(staying).collect();

    // Buyers all through the join, until after the move: every 150 ms one for each
    // product, at the two first instances (by body and by path), each asking once.
    let bases = Arc::new(vec![nodes[0].base.clone(), nodes[1].base.clone()]);
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let mut drivers = Vec::new();
    for (p, product) in shop.products.iter().enumerate() {
        let (bases, stop) = (bases.clone(), stop.clone());
        let (token, product) = (shop.storefront.clone(), product.clone());
        drivers.push(actix_web::rt::spawn(async move {
            let client = reqwest::Client::new();
            let mut buyers = Vec::new();
            let mut b = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let (client, bases, token, product) = (
                    client.clone(),
                    bases.clone(),
                    token.clone(),
                    product.clone(),
                );
                let key = format!("j{p}-b{b}");
                buyers.push(actix_web::rt::spawn(async move {
                    let base = &bases[b % bases.len()];
                    let sent = Instant::now();
                    let answer =
                        checkout_at(&client, base, &token, &product, &key, b.is_multiple_of(2))
                            .await;
                    let took = sent.elapsed();
                    let key = format!("{key} (sent at {sent:?}, took {took:?})");
                    (product, key, answer, Instant::now(), took)
                }));
                b += 1;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            buyers
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lease = LEASE_SECS.to_string();
    let listen = joiner_url.trim_start_matches("http://").to_owned();
    let joined_at = Instant::now();
    nodes.push(
        Binary::start(
            &db_url,
            &[
                ("FLASHSALE_LEASE_SECS", lease.as_str()),
                ("FLASHSALE_LISTEN", listen.as_str()),
                ("RUST_LOG", "warn,flashsale::cluster=info"),
            ],
        )
        .await,
    );
    assert_eq!(nodes[2].base, joiner_url);
    // When every moving product is the newcomer's; the buyers go on a while after.
    loop {
        let mut all = true;
        for p in &moving {
            all &= owner_of(&db, p).await.as_deref() == Some(joiner_url.as_str());
        }
        if all {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(30), "never moved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let moved_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut tasks = Vec::new();
    for driver in drivers {
        tasks.extend(driver.await.unwrap());
    }

    let mut sold: HashMap<String, Vec<String>> = HashMap::new();
    let mut after_move = 0;
    let mut slowest = (Duration::ZERO, String::new());
    for task in tasks {
        let (product, key, answer, at, took) = task.await.unwrap();
        if took > slowest.0 {
            slowest = (took, key.clone());
        }
        let answer = answer.unwrap_or_else(|| panic!("{key}: no answer"));
        assert_eq!(answer.status, 201, "{key} during the join: {answer:?}");
        if at > moved_at && moving.contains(&product) {
            after_move += 1;
        }
        sold.entry(product).or_default().push(answer.code());
    }
    eprintln!(
        "join: moved {:?} after the newcomer was started; slowest checkout {:?} ({})",
        moved_at - joined_at,
        slowest.0,
        slowest.1
    );
    assert!(
        after_move > 0,
        "the moved products were sold by their new owner"
    );
    super::wait_spread(&db_url, &nodes).await;
    // Every 201 is an order in the database, no order without one, and stock adds up.
    for product in &shop.products {
        let ids = sold.get(product).cloned().unwrap_or_default();
        assert_sold_exactly(&db, product, &ids, ids.len() as i64).await;
    }
    for product in &moving {
        assert_eq!(
            owner_of(&db, product).await.as_deref(),
            Some(joiner_url.as_str()),
            "{product} is the newcomer's"
        );
    }
}
