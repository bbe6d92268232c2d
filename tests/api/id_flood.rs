//! A flood of unknown product ids against the real binary: the store asks the database
//! whether each id is its product before it starts an actor, so the flood starts no
//! product actor, costs bounded memory, and another store's buyer (reading cold
//! products, which need the same lookups, and buying) never sees a 503.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::json;

use crate::binary::{Answer, Binary};
use crate::helpers::fresh_database;

const UNKNOWN_IDS: usize = 6000;
const CONNECTIONS: usize = 32;

#[actix_web::test]
async fn a_flood_of_unknown_ids_starts_no_actor_and_spares_other_stores() {
    let db_url = fresh_database().await;
    // The pool of the run in which 16 concurrent unknown ids opened the breaker.
    let app = Arc::new(Binary::start(&db_url, &[("FLASHSALE_DB_POOL_SIZE", "6")]).await);
    let attacker = app.open_shop(1, json!({})).await;
    let victim = app.open_shop(1_000, json!({})).await;
    let mut cold = Vec::new();
    for _ in 0..40 {
        cold.push(app.add_product(&victim.admin, 10, json!({})).await);
    }
    let actors = "flashsale_product_actors";
    let actors_before = app.metric(actors).await;
    let loads_before = app.metric("flashsale_product_loads_total").await;
    let rss_before = app.rss_kib();

    // The flood: distinct ids, from many connections at once.
    // One client (its pool opens a connection per request in flight): a client costs
    // ~90 ms to build, and building 32 inside the flood once blocked this single-threaded
    // runtime past the server's 5 s request timeout, which answered the buyer's fresh
    // connection 408 before its request was written.
    let flood = {
        let (app, key) = (app.clone(), attacker.storefront.clone());
        let client = reqwest::Client::new();
        actix_web::rt::spawn(async move {
            let (found, shed, other) = (
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
            );
            let mut max_actors = 0.0f64;
            let mut requests = futures_util::stream::iter((0..UNKNOWN_IDS).map(|i| {
                let (app, key, client) = (&app, &key, &client);
                let (found, shed, other) = (&found, &shed, &other);
                async move {
                    let r = client
                        .get(app.url(&format!("/api/v1/products/prd_flood{i:07}")))
                        .bearer_auth(key)
                        .send()
                        .await
                        .expect("answered");
                    let a = Answer::read(r).await;
                    match (a.status, a.code().as_str()) {
                        (404, _) => found.fetch_add(1, Ordering::Relaxed),
                        (503, "overloaded") if a.retry_after => {
                            shed.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => {
                            eprintln!("unexpected answer to an unknown id: {a:?}");
                            other.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }))
            .buffer_unordered(CONNECTIONS)
            .enumerate();
            while let Some((n, ())) = requests.next().await {
                if n % 500 == 0 {
                    max_actors = max_actors.max(app.metric("flashsale_product_actors").await);
                }
            }
            drop(requests);
            (
                found.into_inner(),
                shed.into_inner(),
                other.into_inner(),
                max_actors,
            )
        })
    };

    // Meanwhile the other store's buyer reads its cold products (each needs a lookup)
    // and its hot one, and buys.
    let client = app.client.clone();
    let mut victim_503s = Vec::new();
    let mut victim_answers = 0;
    let mut round = 0;
    while !flood.is_finished() || round == 0 {
        for product in cold.iter().skip(round % cold.len()).take(4) {
            let r = client
                .get(app.url(&format!("/api/v1/products/{product}")))
                .bearer_auth(&victim.storefront)
                .send()
                .await
                .unwrap();
            let a = Answer::read(r).await;
            victim_answers += 1;
            assert_ne!(a.status, 404, "the victim's own product: {a:?}");
            if a.status == 503 {
                victim_503s.push(a);
            }
        }
        let a = app
            .checkout(
                &client,
                &victim.storefront,
                &victim.product,
                &format!("v{round}"),
                &format!("buyer{round}"),
            )
            .await;
        victim_answers += 1;
        if a.status == 503 {
            victim_503s.push(a.clone());
        }
        assert!(a.status == 201 || a.status == 503, "{a:?}");
        round += 4;
    }
    let (not_found, shed, other, max_actors) = flood.await.unwrap();
    let rss_after = app.rss_kib();

    assert_eq!(
        other, 0,
        "unknown ids answered other than 404 or 503 overloaded"
    );
    assert_eq!(not_found + shed, UNKNOWN_IDS);
    assert!(
        not_found > UNKNOWN_IDS / 2,
        "only {not_found} of {UNKNOWN_IDS} unknown ids were looked up (the rest shed)"
    );
    assert!(
        victim_503s.is_empty(),
        "the other store's buyer got {} 503s of {victim_answers}: {:?}",
        victim_503s.len(),
        victim_503s.first()
    );
    assert!(
        victim_answers > 10,
        "the buyer barely ran: {victim_answers}"
    );
    // No actor for any unknown id: the only actors started are the victim's products.
    let loads = app.metric("flashsale_product_loads_total").await - loads_before;
    assert!(
        loads <= (cold.len() + 1) as f64,
        "{loads} product actors started during the flood"
    );
    assert!(
        max_actors <= actors_before + (cold.len() + 1) as f64,
        "{max_actors} product actors ran during the flood (before: {actors_before})"
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "resident memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert_eq!(
        app.metric("flashsale_db_up").await,
        1.0,
        "the breaker opened"
    );
}
