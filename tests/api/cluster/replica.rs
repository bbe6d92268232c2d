//! A real streaming replica: a private primary of its own, `pg_basebackup -R` into a hot
//! standby on another port, and the real binary with `DATABASE_REPLICA_URL`. Listings and
//! order reads are served by the standby; a caller's own write is read from the primary;
//! a paused standby (past the lag bound) and a stopped one leave every read to the
//! primary, answered 200 with the current data.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flashsale::db::embedded::{Durability, EmbeddedPostgres};
use serde_json::{json, Value};

use crate::binary::Binary;
use crate::helpers::connect;

/// The lag bound of this test: wide enough that a read right after pausing replay is
/// still within it on a busy machine.
const MAX_LAG_MS: u64 = 4_000;

/// A primary and its hot standby, in a folder of their own (removed at the end).
struct Pair {
    standby: Option<EmbeddedPostgres>,
    primary: Option<EmbeddedPostgres>,
    dir: PathBuf,
}

impl Drop for Pair {
    fn drop(&mut self) {
        drop(self.standby.take());
        drop(self.primary.take());
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A folder the `postgres` user may pass through (it makes its own data folders).
fn passable_dir(path: &Path) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o711)).unwrap();
}

/// A PostgreSQL client program from the folder of the server binaries.
fn pg_program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .iter()
        .filter_map(|dir| dir.join("postgres").canonicalize().ok())
        .filter_map(|server| server.parent().map(|d| d.join(name)))
        .chain(
            fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("bin").join(name)),
        )
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found beside the PostgreSQL server binaries"))
}

/// Starts a primary (PostgreSQL's defaults stream WAL: `wal_level=replica`,
/// `max_wal_senders=10`, and initdb's replication lines in `pg_hba.conf`), makes the
/// `flashsale` database on it, copies it with `pg_basebackup -R` and starts the copy as a
/// hot standby.
async fn start_pair() -> Pair {
    let dir = std::env::temp_dir().join(format!(
        "flashsale-replica-{}",
        uuid::Uuid::new_v4().simple()
    ));
    passable_dir(&dir);
    let mut pair = Pair {
        standby: None,
        primary: None,
        dir: dir.clone(),
    };
    let primary_dir = dir.join("primary");
    let primary = tokio::task::spawn_blocking(move || {
        EmbeddedPostgres::start(&primary_dir, Durability::Fast).expect("primary starts")
    })
    .await
    .unwrap();
    flashsale::db::ensure_database(&primary.url("postgres"), "flashsale")
        .await
        .unwrap();
    let standby_root = dir.join("standby");
    passable_dir(&standby_root);
    let pgdata = standby_root.join("pgdata");
    fs::create_dir_all(&pgdata).unwrap();
    fs::set_permissions(&pgdata, fs::Permissions::from_mode(0o700)).unwrap();
    // The standby starts like any private server: with the cluster's password beside it.
    fs::copy(
        primary.root().join("password"),
        standby_root.join("password"),
    )
    .unwrap();
    let mut backup = Command::new(pg_program("pg_basebackup"));
    backup
        .arg("-D")
        .arg(&pgdata)
        .args(["-R", "-X", "stream", "-c", "fast", "-d"])
        .arg(primary.url("postgres"));
    if nix::unistd::geteuid().is_root() {
        let postgres = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        nix::unistd::chown(&pgdata, Some(postgres.uid), Some(postgres.gid)).unwrap();
        backup.uid(postgres.uid.as_raw()).gid(postgres.gid.as_raw());
    }
    let output = backup.output().expect("pg_basebackup runs");
    assert!(
        output.status.success(),
        "pg_basebackup failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    pair.primary = Some(primary);
    let standby = tokio::task::spawn_blocking(move || {
        EmbeddedPostgres::start(&standby_root, Durability::Fast).expect("standby starts")
    })
    .await
    .unwrap();
    pair.standby = Some(standby);
    pair
}

/// The sum of `flashsale_replica_reads_total` over the series with these labels.
async fn replica_reads(node: &Binary, target: &str, reasons: &[&str]) -> f64 {
    node.metrics_text()
        .await
        .lines()
        .filter(|l| l.starts_with("flashsale_replica_reads_total{"))
        .filter(|l| l.contains(&format!("target=\"{target}\"")))
        .filter(|l| {
            reasons
                .iter()
                .any(|r| l.contains(&format!("reason=\"{r}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The replica's metrics, for a failure's message.
async fn replica_metrics(node: &Binary) -> String {
    node.metrics_text()
        .await
        .lines()
        .filter(|l| l.starts_with("flashsale_replica"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A GET answered 200, as JSON.
async fn get_ok(node: &Binary, path: &str, token: &str) -> Value {
    let response = node
        .client
        .get(node.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The name of `product` in a listing page that no recent read has cached (`limit`
/// differs from the last 199 reads', far more than a max-age ago).
async fn listed_name(node: &Binary, token: &str, product: &str, page: &mut i64) -> String {
    *page += 1;
    let limit = *page % 200 + 1;
    let listing = get_ok(node, &format!("/api/v1/products?limit={limit}"), token).await;
    listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == product)
        .and_then(|p| p["name"].as_str())
        .unwrap_or_else(|| panic!("{product} not listed: {listing}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_replica_serves_reads_and_the_primary_takes_over_when_it_lags_or_stops() {
    let mut pair = start_pair().await;
    let primary_url = pair.primary.as_ref().unwrap().url("flashsale");
    let standby_url = pair.standby.as_ref().unwrap().url("flashsale");
    let max_lag = MAX_LAG_MS.to_string();
    let node = Binary::start(
        &primary_url,
        &[
            ("DATABASE_REPLICA_URL", standby_url.as_str()),
            ("FLASHSALE_REPLICA_MAX_LAG_MS", max_lag.as_str()),
        ],
    )
    .await;
    let shop = node.open_shop(100, json!({"name": "first"})).await;
    let mut orders = Vec::new();
    for i in 0..3 {
        // A 503 did nothing: the same key again (a busy machine may refuse a few).
        let mut tries = 0;
        let answer = loop {
            let answer = node
                .checkout(
                    &node.client,
                    &shop.storefront,
                    &shop.product,
                    &format!("k{i}"),
                    &format!("c{i}"),
                )
                .await;
            tries += 1;
            if answer.status != 503 || tries == 5 {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(answer.status, 201, "{}", answer.body);
        orders.push(answer.code());
    }
    // The buyer's own order, right after its checkout: found (on the primary).
    let order = get_ok(
        &node,
        &format!("/api/v1/orders/{}", orders[0]),
        &shop.storefront,
    )
    .await;
    assert_eq!(order["id"], orders[0]);

    // Past the bound, the writes are the replica's too: listings and order lists are
    // served by it.
    tokio::time::sleep(Duration::from_millis(MAX_LAG_MS + 500)).await;
    let mut page = 0;
    let served_by_replica = replica_reads(&node, "replica", &["fresh"]).await;
    assert_eq!(
        listed_name(&node, &shop.storefront, &shop.product, &mut page).await,
        "first"
    );
    let listed = get_ok(&node, "/api/v1/orders", &shop.admin).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 3, "{listed}");
    get_ok(&node, "/api/v1/drops", &shop.storefront).await;
    get_ok(&node, "/api/v1/events", &shop.admin).await;
    assert_eq!(
        replica_reads(&node, "replica", &["fresh"]).await - served_by_replica,
        4.0,
        "the listing, order list, drop calendar and events were served by the replica:\n{}",
        replica_metrics(&node).await
    );

    // Replay paused: a change made straight in the primary is not on the replica, and a
    // read within the bound shows the replica's (older) copy: the replica served it.
    let standby_db = connect(&standby_url).await;
    let paused_at = Instant::now();
    standby_db
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    while standby_db
        .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
        .await
        .unwrap()
        .get::<_, String>(0)
        != "paused"
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let primary_db = connect(&primary_url).await;
    primary_db
        .execute(
            "UPDATE products SET name = 'changed behind' WHERE id = $1",
            &[&shop.product],
        )
        .await
        .unwrap();
    assert_eq!(
        listed_name(&node, &shop.storefront, &shop.product, &mut page).await,
        "first",
        "read from the paused replica"
    );
    assert!(
        paused_at.elapsed() < Duration::from_millis(MAX_LAG_MS),
        "the read came after the bound: this test proves nothing on so slow a machine"
    );

    // The store's own catalog write is read from the primary at once.
    let own_writes = replica_reads(&node, "primary", &["own_write"]).await;
    let patched = node
        .client
        .patch(node.url(&format!("/api/v1/products/{}", shop.product)))
        .bearer_auth(&shop.admin)
        .json(&json!({"name": "patched"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    assert_eq!(
        listed_name(&node, &shop.storefront, &shop.product, &mut page).await,
        "patched"
    );
    assert_eq!(
        replica_reads(&node, "primary", &["own_write"]).await - own_writes,
        1.0
    );

    // Past the bound with replay still paused: the replica lags, reads go to the
    // primary and see everything.
    tokio::time::sleep(Duration::from_millis(MAX_LAG_MS + 500)).await;
    let lagging = replica_reads(&node, "primary", &["lagging"]).await;
    assert_eq!(
        listed_name(&node, &shop.storefront, &shop.product, &mut page).await,
        "patched"
    );
    let order = get_ok(
        &node,
        &format!("/api/v1/orders/{}", orders[1]),
        &shop.storefront,
    )
    .await;
    assert_eq!(order["id"], orders[1]);
    assert_eq!(
        replica_reads(&node, "primary", &["lagging"]).await - lagging,
        2.0
    );
    assert!(node.metric("flashsale_replica_lag_seconds").await >= MAX_LAG_MS as f64 / 1000.0);

    // Replay resumed: the replica catches up and serves again.
    standby_db
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let before = replica_reads(&node, "replica", &["fresh"]).await;
        let name = listed_name(&node, &shop.storefront, &shop.product, &mut page).await;
        if replica_reads(&node, "replica", &["fresh"]).await > before {
            assert_eq!(name, "patched", "the caught-up replica has every change");
            break;
        }
        assert!(Instant::now() < until, "the replica never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Standby stopped: every read still answers 200, from the primary.
    drop(standby_db);
    let standby = pair.standby.take().unwrap();
    tokio::task::spawn_blocking(move || standby.stop())
        .await
        .unwrap();
    let on_primary = replica_reads(&node, "primary", &["down", "replica_failed"]).await;
    for round in 1..=3 {
        assert_eq!(
            listed_name(&node, &shop.storefront, &shop.product, &mut page).await,
            "patched"
        );
        let listed = get_ok(&node, "/api/v1/orders", &shop.admin).await;
        assert_eq!(listed["items"].as_array().unwrap().len(), 3, "{listed}");
        let order = get_ok(&node, &format!("/api/v1/orders/{}", orders[2]), &shop.admin).await;
        assert_eq!(order["id"], orders[2]);
        // Each its own page: a cached one would not be read at all.
        let drops = format!("/api/v1/drops?limit={round}");
        get_ok(&node, &drops, &shop.storefront).await;
        get_ok(&node, "/api/v1/events", &shop.admin).await;
    }
    assert_eq!(
        replica_reads(&node, "primary", &["down", "replica_failed"]).await - on_primary,
        15.0,
        "every read after the stop was served by the primary"
    );
    // The gauge is the last probe's finding (a probe every 250 ms): it says so soon.
    let until = Instant::now() + Duration::from_secs(5);
    while node.metric("flashsale_replica_up").await != 0.0 {
        assert!(
            Instant::now() < until,
            "the probe never found the replica down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `DATABASE_REPLICA_URL` that is no standby (a database on an ordinary server, say a
/// mistaken URL) is never read from: its data would not be the primary's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_url_that_is_no_standby_is_never_read() {
    let primary_url = crate::helpers::fresh_database().await;
    let not_a_standby = crate::helpers::fresh_database().await;
    let node = Binary::start(
        &primary_url,
        &[
            ("DATABASE_REPLICA_URL", not_a_standby.as_str()),
            ("FLASHSALE_REPLICA_MAX_LAG_MS", "100"),
        ],
    )
    .await;
    let shop = node
        .open_shop(10, json!({"name": "only on the primary"}))
        .await;
    // Past the bound and several probes: the writes are no reason any more.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut page = 0;
    for _ in 0..3 {
        assert_eq!(
            listed_name(&node, &shop.storefront, &shop.product, &mut page).await,
            "only on the primary"
        );
    }
    assert_eq!(replica_reads(&node, "replica", &["fresh"]).await, 0.0);
    assert_eq!(replica_reads(&node, "primary", &["down"]).await, 3.0);
    assert_eq!(node.metric("flashsale_replica_up").await, 0.0);
}
