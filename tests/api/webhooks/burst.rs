//! A burst of deliveries newer than the table's statistics: the claim must not be
//! planned as if nothing were pending.

use std::time::{Duration, Instant};

use super::{answer, subscribe, tune, Receiver};
use crate::helpers::spawn_app_with;

/// 20,000 `order.expired` at once, as when a drop's holds all lapse together; they are
/// written straight to the outbox, as the product actors' transactions write them, so
/// that they arrive in one burst. The statistics were taken while 100 deliveries had
/// been made and none was pending, and autovacuum is off for the table, so only the
/// dispatcher can refresh them. Planned with those, one claim read every pending row
/// per candidate, and each claim of 512 took seconds.
#[actix_web::test]
async fn a_burst_newer_than_the_statistics_is_delivered() {
    const BURST: i64 = 20_000;
    let app = spawn_app_with(tune).await;
    let store = app.create_store().await;
    let receiver = Receiver::start(answer(200)).await;
    let endpoint = subscribe(&app, &store, &receiver.url, &["order.expired"]).await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let db = app.db().await;
    db.execute(
        "INSERT INTO webhook_deliveries (endpoint_id, store_id, event_id, type, subject_id, status)
         SELECT $1, $2, -g, 'order.expired', 'ord_before' || g, 'delivered'
         FROM generate_series(1, 100) g",
        &[&endpoint_id, &store.id],
    )
    .await
    .unwrap();
    db.batch_execute(
        "ANALYZE webhook_deliveries;
         ALTER TABLE webhook_deliveries SET (autovacuum_enabled = false)",
    )
    .await
    .unwrap();
    let started = Instant::now();
    db.execute(
        "INSERT INTO outbox_events (store_id, type, subject_id, data)
         SELECT $1, 'order.expired', 'ord_burst' || g, jsonb_build_object('id', 'ord_burst' || g)
         FROM generate_series(1, $2::bigint) g",
        &[&store.id, &BURST],
    )
    .await
    .unwrap();
    // Alone, the first 5,000 arrive in about 7 s, all of them in 21-22 s. Planned with
    // the old statistics, fewer than 5,000 had arrived after 30 s, and 9,728 after 90.
    receiver
        .wait_delivered(5_000, Duration::from_secs(30))
        .await;
    receiver
        .wait_delivered(BURST as usize, Duration::from_secs(120))
        .await;
    println!("{BURST} order.expired delivered in {:?}", started.elapsed());
    let analyzed: i64 = db
        .query_one(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'webhook_deliveries'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(analyzed >= 2, "the dispatcher refreshed the statistics");
}
