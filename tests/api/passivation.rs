//! Passivation keeps every promise. A product that stopped for idleness comes back from
//! the database with only a filter of its orders' keys and hashed per-customer counts;
//! under concurrent replays and new checkouts it still answers each key's original 201
//! byte for byte (buying nothing), holds each customer to the limit, and the database
//! agrees.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::{checkout_body, spawn_app_with, stock_from_db, TestApp};

/// Whether the product's actor is loaded now: its stock gauge is exported exactly while
/// it is (the gauge is per product, unlike the process-wide passivation counter that
/// tests running beside this one move too).
async fn is_loaded(app: &TestApp, product: &str) -> bool {
    let line = format!("flashsale_product_stock_available{{product_id=\"{product}\"}}");
    app.metrics_text()
        .await
        .lines()
        .any(|l| l.starts_with(&line))
}

/// Waits (up to `within`) for the loaded product to passivate.
pub async fn wait_passivated(app: &TestApp, product: &str, within: Duration) {
    assert!(is_loaded(app, product).await, "the product is not loaded");
    for _ in 0..within.as_millis() / 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !is_loaded(app, product).await {
            return;
        }
    }
    panic!("the idle product never passivated");
}

#[actix_web::test]
async fn passivated_products_replay_keys_and_hold_limits_under_concurrency() {
    let app = spawn_app_with(|s| {
        s.product_idle_secs = 1;
        // Idle time is at least twice the work budget (most of the deadline): ~3 s.
        s.request_deadline_ms = 2000;
        // No answers kept in the process: every replay below must come from the
        // product's key filter and the database.
        s.idempotency_cache = 0;
    })
    .await;
    let store = app.create_store().await;
    let product = app
        .create_product(&store, 100, json!({"max_per_customer": 2}))
        .await;
    let zoe = checkout_body(&product, 1, "zoe");
    let first = app.checkout(&store.storefront, "z1", &zoe).await;
    assert_eq!(first.status(), 201);
    let original = first.bytes().await.unwrap();

    for round in 0..2 {
        wait_passivated(&app, &product, Duration::from_secs(30)).await;
        // All at once, the first of them reactivating the product: replays of zoe's
        // first key, new keys of zoe's (one unit left to her in round 0, none in
        // round 1), and other buyers.
        let (app, front, zoe) = (&app, &store.storefront, &zoe);
        let replays = join_all((0..10).map(|_| app.checkout(front, "z1", zoe)));
        let zoes = join_all((0..10).map(|i| {
            let key = format!("z-{round}-{i}");
            async move { app.checkout(front, &key, zoe).await }
        }));
        let others = join_all((0..10).map(|i| {
            let (key, body) = (
                format!("o-{round}-{i}"),
                checkout_body(&product, 1, &format!("other-{round}-{i}")),
            );
            async move { app.checkout(front, &key, &body).await }
        }));
        let (replays, zoes, others) = futures_util::join!(replays, zoes, others);
        for r in replays {
            assert_eq!(r.status(), 201, "a replay after passivation");
            assert_eq!(r.headers()["idempotent-replayed"], "true");
            assert_eq!(r.bytes().await.unwrap(), original, "not the original 201");
        }
        let mut bought = 0;
        for r in zoes {
            match r.status().as_u16() {
                201 => bought += 1,
                409 => {
                    let body: serde_json::Value = r.json().await.unwrap();
                    assert_eq!(body["code"], "customer_limit_exceeded", "{body}");
                }
                s => panic!("zoe's new key: {s} {}", r.text().await.unwrap()),
            }
        }
        assert_eq!(bought, 1 - round, "zoe's new keys in round {round}");
        for r in others {
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        }
    }

    // The database: zoe has exactly her limit, her first key one order, every unit
    // accounted for.
    let db = app.db().await;
    let zoe_row = db
        .query_one(
            "SELECT count(*), coalesce(sum(quantity), 0)::bigint, \
                    count(*) FILTER (WHERE idempotency_key = 'z1') \
             FROM orders WHERE product_id = $1 AND customer_id = 'zoe'",
            &[&product],
        )
        .await
        .unwrap();
    let (orders, units, first_key): (i64, i64, i64) =
        (zoe_row.get(0), zoe_row.get(1), zoe_row.get(2));
    assert_eq!((orders, units, first_key), (2, 2, 1));
    let (total, available, held, live) = stock_from_db(&db, &product).await;
    assert_eq!((total, available, held, live), (100, 78, 22, 22));
}

/// A product left idle compacts: its actor stops, and only its published page and
/// sold-out gate stay. Its reads are still served from memory (the database is not
/// asked: a change made behind the server's back is not seen), and the next checkout
/// loads it again from PostgreSQL, after which keys replay, the per-customer limit
/// holds, the gate refuses once sold out (compacted again), and the database agrees.
#[actix_web::test]
async fn a_compacted_product_serves_reads_from_memory_and_sells_after_reloading() {
    let app = spawn_app_with(|s| {
        // Compaction after at least twice the work budget (most of the deadline): ~6 s
        // (a deadline long enough for a reload on a busy machine); never passivated, so
        // what compacted stays.
        s.product_compact_secs = 1;
        s.product_idle_secs = 0;
        s.request_deadline_ms = 4000;
        s.idempotency_cache = 0;
    })
    .await;
    let store = app.create_store().await;
    let product = app
        .create_product(&store, 3, json!({"max_per_customer": 1}))
        .await;
    let path = format!("/api/v1/products/{product}");
    let zoe = checkout_body(&product, 1, "zoe");
    let first = app.checkout(&store.storefront, "c1", &zoe).await;
    assert_eq!(first.status(), 201);
    let original = first.bytes().await.unwrap();
    let page = app.get(&path, &store.storefront).await;
    let etag = page.headers()["etag"].clone();
    let page: serde_json::Value = page.json().await.unwrap();
    assert_eq!(page["stock_available"], 2);

    // Idle past the compaction time; then the name changes behind the server's back.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let db = app.db().await;
    db.execute(
        "UPDATE products SET name = 'renamed behind its back' WHERE id = $1",
        &[&product],
    )
    .await
    .unwrap();
    let served = app.get(&path, &store.storefront).await;
    assert_eq!(served.status(), 200);
    assert_eq!(
        served.headers()["etag"],
        etag,
        "not the page kept in memory"
    );
    let served: serde_json::Value = served.json().await.unwrap();
    assert_eq!(
        served["name"], page["name"],
        "the compacted page was reloaded"
    );
    let stock = app.get(&format!("{path}/stock"), &store.storefront).await;
    let stock: serde_json::Value = stock.json().await.unwrap();
    assert_eq!(
        (stock["stock_available"].as_i64(), stock["status"].as_str()),
        (Some(2), Some("live"))
    );

    // Checkouts start the actor again from the database: replays and zoe over her
    // limit, all at once; then four others for the last two units, all at once.
    let (front, zoe) = (&store.storefront, &zoe);
    let replays = join_all((0..5).map(|_| app.checkout(front, "c1", zoe)));
    let over = app.checkout(front, "c2", zoe);
    let (replays, over) = futures_util::join!(replays, over);
    let others = join_all((0..4).map(|i| {
        let (key, body) = (
            format!("o{i}"),
            checkout_body(&product, 1, &format!("other{i}")),
        );
        let app = &app;
        async move { app.checkout(front, &key, &body).await }
    }))
    .await;
    for r in replays {
        assert_eq!(r.status(), 201, "a replay after compaction");
        assert_eq!(r.headers()["idempotent-replayed"], "true");
        assert_eq!(r.bytes().await.unwrap(), original, "not the original 201");
    }
    assert_eq!(over.status(), 409);
    let over: serde_json::Value = over.json().await.unwrap();
    assert_eq!(over["code"], "customer_limit_exceeded", "{over}");
    let sold = others.iter().filter(|r| r.status() == 201).count();
    assert_eq!(sold, 2, "the last two units, to two of the four");
    let page: serde_json::Value = app
        .get(&path, &store.storefront)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        page["name"], "renamed behind its back",
        "not reloaded for the checkout"
    );
    assert_eq!(page["stock_available"], 0);

    // Sold out and compacted again: the gate still refuses a new key as sold out, and
    // the first key still replays its 201.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let new = app
        .checkout(front, "c3", &checkout_body(&product, 1, "late"))
        .await;
    assert_eq!(new.status(), 409);
    let new: serde_json::Value = new.json().await.unwrap();
    assert_eq!(new["code"], "sold_out");
    let replay = app.checkout(front, "c1", zoe).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.bytes().await.unwrap(), original);

    let (total, available, held, live) = stock_from_db(&db, &product).await;
    assert_eq!((total, available, held, live), (3, 0, 3, 3));
    let zoes: i64 = db
        .query_one(
            "SELECT count(*) FROM orders WHERE product_id = $1 AND customer_id = 'zoe'",
            &[&product],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(zoes, 1);
}
