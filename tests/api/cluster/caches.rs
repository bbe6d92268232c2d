//! What stays per instance must still be right: listing caches and "missing" ids
//! follow other instances' writes (LISTEN/NOTIFY), also across a lost listening
//! connection (the rate limits' shares: `limits.rs`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{owner_of, start_cluster};
use crate::binary::Binary;
use crate::helpers::{connect, fresh_database};

/// The max-age listings advertise (`public, max-age=1`), and so how long a cached page
/// may live: a change seen sooner than this after the page was rendered was invalidated.
const MAX_AGE: Duration = Duration::from_secs(1);
/// The listening connection's name (`cluster::notify::APPLICATION_NAME`).
const LISTENER: &str = "flashsale-listen";
const APPLIED: &str = "flashsale_cache_notifications_total{event=\"applied\"}";
const RECONNECTS: &str = "flashsale_cache_listen_reconnects_total";

async fn get(node: &Binary, token: &str, path: &str) -> (u16, Value) {
    let response = node
        .client
        .get(node.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The item of `product` in a listing page, if listed.
fn item<'a>(page: &'a Value, product: &str) -> Option<&'a Value> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == product)
}

/// A product of the shop that `node` owns (made until one is), starting in an hour
/// (so that it is in the drop calendar).
async fn product_owned_by(
    db: &tokio_postgres::Client,
    node: &Binary,
    admin: &str,
    extra: &Value,
) -> String {
    for _ in 0..40 {
        let id = node.add_product(admin, 10, extra.clone()).await;
        if owner_of(db, &id).await.as_deref() == Some(node.base.as_str()) {
            return id;
        }
    }
    panic!("no product owned by {}", node.base);
}

/// Waits (at most `bound`) until `node` applied more than `before` notifications.
async fn wait_applied(node: &Binary, before: f64, bound: Duration) -> Duration {
    let since = Instant::now();
    while node.metric(APPLIED).await <= before {
        assert!(
            since.elapsed() < bound,
            "{} applied no notification within {bound:?}",
            node.base
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    since.elapsed()
}

#[actix_web::test]
async fn listings_and_the_drop_calendar_follow_writes_made_on_another_instance() {
    let db_url = fresh_database().await;
    let nodes = start_cluster(&db_url, 2, &[]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let db = connect(&db_url).await;
    let starts = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let extra = json!({"sale_starts_at": starts});
    let shop = a.open_shop(10, extra.clone()).await;
    // Written by A's actor: the notification comes from A.
    let product = product_owned_by(&db, a, &shop.admin, &extra).await;
    let mut proven = 0;
    for round in 0..15 {
        let kind = ["create", "patch", "restock"][round % 3];
        // A page of its own for this round (its limit): rendered now, on B.
        let limit = 200 - round;
        let products_page = format!("/api/v1/products?limit={limit}");
        let drops_page = format!("/api/v1/drops?limit={limit}");
        let rendered = Instant::now();
        let (_, before) = get(b, &shop.storefront, &products_page).await;
        let (_, before_drops) = get(b, &shop.storefront, &drops_page).await;
        let applied = b.metric(APPLIED).await;
        let subject = match kind {
            "create" => a.add_product(&shop.admin, 3, extra.clone()).await,
            "patch" => {
                let answer = a
                    .client
                    .patch(a.url(&format!("/api/v1/products/{product}")))
                    .bearer_auth(&shop.admin)
                    .json(&json!({"name": format!("round {round}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 200);
                product.clone()
            }
            _ => {
                let answer = a
                    .client
                    .post(a.url(&format!("/api/v1/products/{product}/restock")))
                    .bearer_auth(&shop.admin)
                    .json(&json!({"quantity": 1}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 200);
                product.clone()
            }
        };
        // B hears of it well within the max-age, and its next read shows it.
        wait_applied(b, applied, MAX_AGE).await;
        let (_, after) = get(b, &shop.storefront, &products_page).await;
        let (_, after_drops) = get(b, &shop.storefront, &drops_page).await;
        let seen_by = rendered.elapsed();
        let row = db
            .query_one(
                "SELECT name, stock_total FROM products WHERE id = $1",
                &[&subject],
            )
            .await
            .unwrap();
        let (name, total): (String, i64) = (row.get(0), row.get(1));
        for (page, old) in [(&after, &before), (&after_drops, &before_drops)] {
            let shown = item(page, &subject).unwrap_or_else(|| panic!("{kind}: {page}"));
            assert_eq!(shown["name"], name.as_str(), "{kind}: as in the database");
            assert_eq!(shown["stock_total"], total, "{kind}: as in the database");
            if kind == "create" {
                assert!(item(old, &subject).is_none());
            } else {
                assert_ne!(item(old, &subject), Some(shown), "{kind}: the page changed");
            }
        }
        // Seen before the page B had rendered could have expired: invalidated, not aged.
        if seen_by < MAX_AGE {
            proven += 1;
        }
    }
    assert!(
        proven >= 3,
        "the change was seen before the old page's max-age ran out in {proven} rounds of 15 (machine too slow?)"
    );
}

/// Makes every product insert of the database slow (`seconds`) and shows the id being
/// inserted, before it commits, as the inserting session's `application_name`: a test
/// can then ask another instance for the id while it names nothing yet.
async fn slow_down_creations(db: &tokio_postgres::Client, seconds: f64) {
    db.batch_execute(&format!(
        "CREATE FUNCTION test_slow_create() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
             PERFORM set_config('application_name', 'creating ' || NEW.id, true);
             PERFORM pg_sleep({seconds});
             RETURN NEW;
         END $$;
         CREATE TRIGGER test_slow_create BEFORE INSERT ON products
             FOR EACH ROW EXECUTE FUNCTION test_slow_create();"
    ))
    .await
    .unwrap();
}

/// The id of the product being inserted now (see [`slow_down_creations`]).
async fn id_being_created(db: &tokio_postgres::Client) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let row = db
            .query_opt(
                "SELECT substr(application_name, 10) FROM pg_stat_activity \
                 WHERE application_name LIKE 'creating %' AND datname = current_database() LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return row.get(0);
        }
        assert!(Instant::now() < until, "no product insert seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates a product at `node` (in the background): its status and id.
fn create_in_background(
    node: &Binary,
    admin: &str,
) -> actix_web::rt::task::JoinHandle<(u16, String)> {
    let (client, url, admin) = (
        node.client.clone(),
        node.url("/api/v1/products"),
        admin.to_owned(),
    );
    actix_web::rt::spawn(async move {
        let body = json!({"sku": flashsale::domain::ids::new_id("sku"), "name": "Late",
                          "price_cents": 100, "currency": "EUR", "stock": 5});
        let answer = client
            .post(url)
            .bearer_auth(admin)
            .json(&body)
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let product: Value = answer.json().await.unwrap();
        (
            status,
            product["id"].as_str().unwrap_or_default().to_owned(),
        )
    })
}

/// Creates products at `a` until one being created is owned by `b`, and has `b` look it
/// up (404) while its insert has not committed: `b` remembers it as missing. Returns
/// the id and the creation, still running.
async fn missing_on(
    db: &tokio_postgres::Client,
    a: &Binary,
    b: &Binary,
    shop: &crate::binary::Shop,
) -> (String, actix_web::rt::task::JoinHandle<(u16, String)>) {
    for _ in 0..12 {
        let creation = create_in_background(a, &shop.admin);
        let id = id_being_created(db).await;
        if owner_of(db, &id).await.as_deref() != Some(b.base.as_str()) {
            assert_eq!(creation.await.unwrap().0, 201);
            continue;
        }
        for _ in 0..2 {
            let (status, body) = get(b, &shop.storefront, &format!("/api/v1/products/{id}")).await;
            assert_eq!(status, 404, "not committed yet: {body}");
        }
        return (id, creation);
    }
    panic!("no product created that {} owns", b.base);
}

/// Reads `id` at `node` until it is found: how long that took (at most `bound`).
async fn found_within(node: &Binary, token: &str, id: &str, bound: Duration) -> Duration {
    let since = Instant::now();
    loop {
        let (status, body) = get(node, token, &format!("/api/v1/products/{id}")).await;
        if status == 200 {
            assert_eq!(body["id"], id);
            return since.elapsed();
        }
        assert_eq!(status, 404);
        assert!(
            since.elapsed() < bound,
            "{id} still missing at {} after {bound:?}",
            node.base
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_web::test]
async fn a_product_created_on_one_instance_is_found_at_once_where_it_was_missing() {
    let db_url = fresh_database().await;
    let nodes = start_cluster(&db_url, 2, &[]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let db = connect(&db_url).await;
    let shop = a.open_shop(10, json!({})).await;
    slow_down_creations(&db, 1.5).await;
    let (id, creation) = missing_on(&db, a, b, &shop).await;
    let (status, created) = creation.await.unwrap();
    assert_eq!((status, created.as_str()), (201, id.as_str()));
    // B remembered it as missing (for 10 s); the creation's notification drops that.
    let took = found_within(b, &shop.storefront, &id, Duration::from_millis(500)).await;
    eprintln!("found on the other instance {took:?} after the 201");
    let stored: i64 = db
        .query_one("SELECT count(*) FROM products WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1);
}

/// The listening backends of the database (pids).
async fn listeners(db: &tokio_postgres::Client) -> Vec<i32> {
    db.query(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database() ORDER BY pid",
        &[&LISTENER],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The listening backends once both instances have one (one each), by `until`.
async fn both_listening(db: &tokio_postgres::Client, until: Instant) -> Vec<i32> {
    loop {
        let found = listeners(db).await;
        if found.len() == 2 {
            return found;
        }
        assert!(
            Instant::now() < until,
            "one listening connection per instance: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn a_lost_listening_connection_is_made_again_and_what_it_missed_is_forgotten() {
    let db_url = fresh_database().await;
    let nodes = start_cluster(&db_url, 2, &[]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let db = connect(&db_url).await;
    // Each instance connects its listener in the background once it serves.
    let before = both_listening(&db, Instant::now() + Duration::from_secs(10)).await;
    let shop = a.open_shop(10, json!({})).await;
    slow_down_creations(&db, 1.5).await;
    let (id, creation) = missing_on(&db, a, b, &shop).await;
    // The listeners die, and cannot come back until the creation has committed: its
    // notification reaches nobody.
    let name: String = db
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    // (A database's connections are barred from another one.)
    let admin = connect(&crate::helpers::with_database(&db_url, "postgres")).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS false"
        ))
        .await
        .unwrap();
    let killed: i64 = db
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND datname = current_database()",
            &[&LISTENER],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 2);
    let (status, created) = creation.await.unwrap();
    assert_eq!((status, created.as_str()), (201, id.as_str()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = get(b, &shop.storefront, &format!("/api/v1/products/{id}")).await;
    assert_eq!(
        status, 404,
        "B missed the notification: it still remembers the id"
    );
    let reconnects = b.metric(RECONNECTS).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS true"
        ))
        .await
        .unwrap();
    // B listens again, and forgot what it might have missed.
    let until = Instant::now() + Duration::from_secs(10);
    while b.metric(RECONNECTS).await <= reconnects {
        assert!(Instant::now() < until, "B never reconnected its listener");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    found_within(b, &shop.storefront, &id, Duration::from_millis(200)).await;
    // A too (its backoff may have it try a moment later).
    let after = both_listening(&db, until).await;
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "on new connections"
    );
    // And hears what comes next: a creation through A reaches B.
    db.batch_execute("DROP TRIGGER test_slow_create ON products")
        .await
        .unwrap();
    let applied = b.metric(APPLIED).await;
    let (status, _) = get(b, &shop.storefront, "/api/v1/products").await;
    assert_eq!(status, 200);
    let product = a.add_product(&shop.admin, 1, json!({})).await;
    wait_applied(b, applied, MAX_AGE).await;
    let (_, page) = get(b, &shop.storefront, "/api/v1/products").await;
    assert!(
        item(&page, &product).is_some(),
        "the new product is listed on B"
    );
}
