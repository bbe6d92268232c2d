//! Failover: an owner killed with -9 mid-drop, and an owner paused (SIGSTOP) past its
//! lease and woken after another instance took its products over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use super::{
    assert_stock_adds_up, buy_until_definitive, checkout_at, checkout_within, metric_sum,
    open_shop, owner_of, start_cluster, wait_spread, LEASE_SECS,
};
use crate::binary::Binary;
use crate::helpers::{connect, fresh_database};

#[actix_web::test]
async fn kill_9_of_an_owner_mid_drop_hands_its_products_to_the_others() {
    let db_url = fresh_database().await;
    let mut nodes = start_cluster(&db_url, 3, &[]).await;
    let db = connect(&db_url).await;
    let (stock, buyers_each) = (25i64, 40usize);
    let shop = open_shop(&nodes[0], 6, stock, json!({})).await;
    // The victim: the owner of the first product; its products are what must go on.
    let victim_url = owner_of(&db, &shop.products[0]).await.expect("owned");
    let victim = nodes.iter().position(|n| n.base == victim_url).unwrap();
    let survivors: Vec<String> = nodes
        .iter()
        .filter(|n| n.base != victim_url)
        .map(|n| n.base.clone())
        .collect();
    let mut victims_products = Vec::new();
    for p in &shop.products {
        if owner_of(&db, p).await.as_deref() == Some(victim_url.as_str()) {
            victims_products.push(p.clone());
        }
    }

    // Buyers go to the survivors only (a load balancer's health check would take the
    // dead one out): before the kill they are forwarded to the victim, after it the
    // survivors must sell its products themselves.
    let bases = Arc::new(survivors.clone());
    let acked = Arc::new(AtomicUsize::new(0));
    let clients: Vec<reqwest::Client> = (0..16).map(|_| reqwest::Client::new()).collect();
    let mut tasks = Vec::new();
    for (p, product) in shop.products.iter().enumerate() {
        for b in 0..buyers_each {
            let (client, bases, acked) = (
                clients[b % clients.len()].clone(),
                bases.clone(),
                acked.clone(),
            );
            let (token, product) = (shop.storefront.clone(), product.clone());
            let key = format!("p{p}-b{b}");
            tasks.push(actix_web::rt::spawn(async move {
                // Staggered, so the drop is still going when the kill comes.
                tokio::time::sleep(Duration::from_millis((b as u64) * 40)).await;
                let first = checkout_at(
                    &client,
                    &bases[b % bases.len()],
                    &token,
                    &product,
                    &key,
                    b % 2 == 0,
                )
                .await;
                if first.as_ref().is_some_and(|a| a.status == 201) {
                    acked.fetch_add(1, Ordering::SeqCst);
                    return (product, key, first.unwrap());
                }
                let answer = buy_until_definitive(
                    &client,
                    bases,
                    &token,
                    &product,
                    &key,
                    Duration::from_secs(60),
                )
                .await;
                if answer.status == 201 {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                (product, key, answer)
            }));
        }
    }
    while acked.load(Ordering::SeqCst) < 30 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    nodes[victim].child.kill().expect("kill -9");
    let _ = nodes[victim].child.wait();
    let killed_at = Instant::now();

    // Its products are sold by the others within 2 x FLASHSALE_LEASE_SECS.
    let probe = reqwest::Client::new();
    let mut served_after = None;
    while served_after.is_none() {
        let answer = checkout_at(
            &probe,
            &survivors[0],
            &shop.storefront,
            &victims_products[0],
            "after-kill-probe",
            false,
        )
        .await;
        if let Some(a) = answer.filter(|a| a.status == 201 || a.status == 409) {
            assert!(a.status == 201 || a.code() == "sold_out", "{a:?}");
            served_after = Some(killed_at.elapsed());
        } else {
            assert!(
                killed_at.elapsed() < Duration::from_secs(4 * LEASE_SECS),
                "never taken over"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let served_after = served_after.unwrap();
    assert!(
        served_after <= Duration::from_secs(2 * LEASE_SECS),
        "the victim's products were served again after {served_after:?}"
    );

    let mut acks: HashMap<String, String> = HashMap::new();
    for task in tasks {
        let (_, key, answer) = task.await.unwrap();
        if answer.status == 201 {
            acks.insert(key, answer.code());
        } else {
            assert!(
                ["sold_out", "insufficient_stock"].contains(&answer.code().as_str()),
                "{key}: {answer:?}"
            );
        }
    }
    // Every acknowledged order is there, under its key; nothing oversold.
    for (key, id) in &acks {
        let row = db
            .query_opt("SELECT idempotency_key FROM orders WHERE id = $1", &[id])
            .await
            .unwrap();
        let stored: String = row
            .unwrap_or_else(|| panic!("{id} acknowledged but lost"))
            .get(0);
        assert_eq!(&stored, key);
    }
    for product in &shop.products {
        assert_stock_adds_up(&db, product).await;
    }
    // Every key retried (at any survivor): one order per key, the acknowledged one.
    let bases = Arc::new(survivors);
    for (p, product) in shop.products.iter().enumerate() {
        for b in 0..buyers_each {
            let key = format!("p{p}-b{b}");
            let answer = buy_until_definitive(
                &probe,
                bases.clone(),
                &shop.storefront,
                product,
                &key,
                Duration::from_secs(30),
            )
            .await;
            if let Some(id) = acks.get(&key) {
                assert_eq!(
                    (answer.status, &answer.code()),
                    (201, id),
                    "{key} replays its order"
                );
            } else {
                assert_ne!(
                    answer.status, 201,
                    "{key} was refused and stays refused (sold out)"
                );
            }
        }
    }
    let orders: i64 = db
        .query_one(
            "SELECT count(*) FROM orders WHERE idempotency_key LIKE 'p%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        orders as usize,
        acks.len(),
        "one order per acknowledged key, no other"
    );
}

#[actix_web::test]
async fn a_paused_owner_commits_nothing_once_another_took_its_shards() {
    let db_url = fresh_database().await;
    // A long linger keeps the paused owner's orders in its writer queue, not committed
    // (only there: the other sells at its usual pace).
    let lease = LEASE_SECS.to_string();
    let common = [
        ("FLASHSALE_LEASE_SECS", lease.as_str()),
        ("RUST_LOG", "warn"),
    ];
    let mut paused_env = common.to_vec();
    paused_env.push(("FLASHSALE_BATCH_LINGER_MS", "4000"));
    // Time enough for the pause, however slow the machine: its orders are still due
    // when it wakes (not dropped as late), so its batch meets the fence.
    paused_env.push(("FLASHSALE_REQUEST_DEADLINE_MS", "120000"));
    let nodes = vec![
        Binary::start(&db_url, &paused_env).await,
        Binary::start(&db_url, &common).await,
    ];
    wait_spread(&db_url, &nodes).await;
    let db = connect(&db_url).await;
    let shop = open_shop(&nodes[0], 8, 20, json!({})).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut product = None;
    for p in &shop.products {
        if owner_of(&db, p).await.as_deref() == Some(a.base.as_str()) {
            product = Some(p.clone());
            break;
        }
    }
    let product = product.expect("one of eight products is owned by the first instance");

    // Orders in the paused owner's hands: taken from its stock, waiting to be written.
    let client = reqwest::Client::new();
    let mut in_flight = Vec::new();
    for i in 0..5 {
        let (client, base, token, product) = (
            client.clone(),
            a.base.clone(),
            shop.storefront.clone(),
            product.clone(),
        );
        in_flight.push(actix_web::rt::spawn(async move {
            checkout_within(
                &client,
                &base,
                &token,
                &product,
                &format!("paused-{i}"),
                false,
                Duration::from_secs(150),
            )
            .await
        }));
    }
    // Taken from the owner's stock (its gauge says so), so waiting in its writer.
    let gauge = format!("flashsale_product_stock_available{{product_id=\"{product}\"}}");
    let until = Instant::now() + Duration::from_secs(3);
    while a.metric(&gauge).await != 15.0 {
        assert!(Instant::now() < until, "the orders never reached the owner");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = Pid::from_raw(a.child.id() as i32);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    let paused_at = Instant::now();

    // The other instance takes the shard over once the lease lapses, and sells.
    let until = Instant::now() + Duration::from_secs(6 * LEASE_SECS);
    while owner_of(&db, &product).await.as_deref() != Some(b.base.as_str()) {
        assert!(Instant::now() < until, "never taken over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut sold_by_b = 0;
    for i in 0..20 {
        let answer = buy_until_definitive(
            &client,
            Arc::new(vec![b.base.clone()]),
            &shop.storefront,
            &product,
            &format!("b-{i}"),
            Duration::from_secs(20),
        )
        .await;
        if answer.status == 201 {
            sold_by_b += 1;
        }
    }
    assert_eq!(
        sold_by_b, 20,
        "the new owner sells the whole stock: the paused orders were never committed"
    );

    // Woken, the former owner writes its queued batch under the old epoch: refused.
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
    let paused_for = paused_at.elapsed();
    for task in in_flight {
        let answer = task.await.unwrap();
        if let Some(a) = answer {
            assert_eq!(
                a.status, 503,
                "a paused owner's order is not made (paused for {paused_for:?}): {a:?}"
            );
        }
    }
    let paused: i64 = db
        .query_one(
            "SELECT count(*) FROM orders WHERE idempotency_key LIKE 'paused-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(paused, 0, "the paused owner committed nothing");
    assert_eq!(assert_stock_adds_up(&db, &product).await, 20);
    let fenced = metric_sum(&[a], "flashsale_cluster_fenced_total{write=\"checkout\"}").await;
    assert!(
        fenced >= 1.0,
        "its batch was refused by the fence (paused for {paused_for:?})"
    );
}
