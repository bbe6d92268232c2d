//! Three instances behind a real HAProxy running the shipped deploy/haproxy.cfg: a
//! stampede on several products through it (by path: to the owner by the shard map, or
//! hashed on the product; by body: to the least busy instance) sells exactly the stock,
//! and every 201 is in the database. With `flashsale haproxy-map` keeping the shard map,
//! checkouts by path reach their owner (almost) without a forward, also after an
//! instance died.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashsale::cluster::{shard_of, SHARDS};
use serde_json::json;

use super::{
    assert_sold_exactly, assert_stock_adds_up, checkout_at, metric_sum, open_shop, owner_of,
    sell_out, start_cluster,
};
use crate::binary::{Binary, TOKEN};
use crate::helpers::{connect, fresh_database};

/// HAProxy with the shipped configuration, bound to a free port, in front of `nodes`.
struct Front {
    child: Child,
    base: String,
    dir: std::path::PathBuf,
    /// Its stats socket and its shard map file.
    socket: std::path::PathBuf,
    map: std::path::PathBuf,
    /// `flashsale haproxy-map`, once started.
    mapper: Option<Child>,
}

impl Drop for Front {
    fn drop(&mut self) {
        for child in self.mapper.iter_mut().chain(Some(&mut self.child)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The paths deploy/haproxy.cfg names for the stats socket and the shard map.
const SHIPPED_SOCKET: &str = "/run/haproxy/admin.sock";
const SHIPPED_MAP: &str = "/etc/haproxy/flashsale-shards.map";

fn haproxy_binary() -> String {
    [
        "/usr/sbin/haproxy",
        "/usr/local/sbin/haproxy",
        "/usr/bin/haproxy",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .map(str::to_owned)
    .expect("haproxy is needed for this test: apt-get install -y haproxy (.ci/run does)")
}

fn start_front(nodes: &[Binary]) -> Front {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!(
        "flashsale-haproxy-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (socket, map) = (dir.join("admin.sock"), dir.join("shards.map"));
    // HAProxy needs the map file to exist; empty, everything is placed by hashing.
    std::fs::write(&map, "").unwrap();
    let shipped = include_str!("../../../deploy/haproxy.cfg")
        .replace(SHIPPED_SOCKET, socket.to_str().unwrap())
        .replace(SHIPPED_MAP, map.to_str().unwrap());
    let mut config = String::new();
    for line in shipped.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("bind ") {
            config.push_str(&format!("    bind 127.0.0.1:{port}\n"));
        } else if trimmed.starts_with("server ") {
            // The shipped three server lines, pointed at our three instances.
            let name = trimmed.split_whitespace().nth(1).unwrap();
            let i = (name.as_bytes()[0] - b'a') as usize;
            let addr = nodes[i].base.trim_start_matches("http://");
            config.push_str(&format!("    server {name} {addr}\n"));
        } else {
            config.push_str(line);
            config.push('\n');
        }
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(haproxy_binary())
        .args(["-db", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Failed to start haproxy");
    Front {
        child,
        base: format!("http://127.0.0.1:{port}"),
        dir,
        socket,
        map,
        mapper: None,
    }
}

impl Front {
    /// Waits until HAProxy passes requests on (its health checks see an instance ready).
    async fn wait_up(&self) {
        let client = reqwest::Client::new();
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                return;
            }
            assert!(Instant::now() < until, "haproxy never passed requests on");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts `flashsale haproxy-map`, polling the instances every 200 ms.
    fn start_mapper(&mut self, nodes: &[Binary]) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flashsale"));
        command.arg("haproxy-map");
        for n in nodes {
            command.args(["--cluster-url", n.base.as_str()]);
        }
        command
            .arg("--socket")
            .arg(&self.socket)
            .arg("--map")
            .arg(&self.map)
            .args(["--every-ms", "200"])
            .env("FLASHSALE_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        self.mapper = Some(
            command
                .spawn()
                .expect("Failed to start flashsale haproxy-map"),
        );
    }

    /// The map file's entries: shard → server name.
    fn map_entries(&self) -> HashMap<usize, String> {
        std::fs::read_to_string(&self.map)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (shard, server) = l.split_once(' ')?;
                Some((usize::from_str_radix(shard, 16).ok()?, server.to_owned()))
            })
            .collect()
    }

    /// Waits until the map names an owner for every shard, among `servers` only.
    async fn wait_map_complete(&self, servers: &[&str]) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let entries = self.map_entries();
            if entries.len() == SHARDS && entries.values().all(|s| servers.contains(&s.as_str())) {
                return;
            }
            assert!(
                Instant::now() < until,
                "the shard map never named {servers:?} for every shard: {} entries",
                entries.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[actix_web::test]
async fn three_instances_behind_the_shipped_haproxy_sell_exactly_the_stock() {
    let db_url = fresh_database().await;
    let nodes = start_cluster(&db_url, 3, &[("FLASHSALE_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let front = start_front(&nodes);
    front.wait_up().await;

    let (products, stock, buyers_each) = (6, 15, 40);
    let shop = open_shop(&nodes[0], products, stock, json!({})).await;
    let sold = sell_out(&shop, vec![front.base.clone()], buyers_each, "h").await;
    let db = connect(&db_url).await;
    for product in &shop.products {
        let ids = sold.get(product).cloned().unwrap_or_default();
        assert_sold_exactly(&db, product, &ids, stock).await;
        // The buyer's address came through HAProxy and the forwarding hop into the order
        // row's consent record.
        let addrs: i64 = db
            .query_one(
                "SELECT count(*) FROM orders WHERE product_id = $1 AND client_addr = '127.0.0.1'",
                &[product],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(addrs, stock, "every consent record has the buyer's address");
    }
    let all: Vec<_> = nodes.iter().collect();
    let forwarded = metric_sum(
        &all,
        "flashsale_cluster_forwards_total{result=\"forwarded\"}",
    )
    .await;
    eprintln!(
        "forwarded through haproxy: {forwarded} of {} checkouts",
        products * buyers_each
    );
}

/// `count` checkouts by path through `base`, `concurrency` at a time, over `products`;
/// each retried (by path, through `base`) until definitive. Returns the 201s.
async fn checkouts_by_path(
    base: &str,
    token: &str,
    products: &[String],
    count: usize,
    prefix: &str,
) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let sold = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..24 {
        let (next, sold, base, token) = (
            next.clone(),
            sold.clone(),
            base.to_owned(),
            token.to_owned(),
        );
        let prefix = prefix.to_owned();
        let products = products.to_vec();
        workers.push(actix_web::rt::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    return;
                }
                let (product, key) = (&products[i % products.len()], format!("{prefix}{i}"));
                let until = Instant::now() + Duration::from_secs(30);
                loop {
                    let answer = checkout_at(&client, &base, &token, product, &key, true).await;
                    match answer {
                        Some(a) if a.status == 201 => {
                            sold.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Some(a) if a.status != 503 && a.code() != "idempotency_in_progress" => {
                            panic!("{key}: {a:?}")
                        }
                        other => assert!(Instant::now() < until, "{key}: {other:?}"),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    sold.load(Ordering::SeqCst)
}

/// Requests forwarded by `nodes`, all told.
async fn forwards(nodes: &[&Binary]) -> f64 {
    metric_sum(
        nodes,
        "flashsale_cluster_forwards_total{result=\"forwarded\"}",
    )
    .await
}

#[actix_web::test]
async fn with_the_shard_map_checkouts_by_path_reach_their_owner_also_after_a_death() {
    let db_url = fresh_database().await;
    let mut nodes =
        start_cluster(&db_url, 3, &[("FLASHSALE_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let mut front = start_front(&nodes);
    front.wait_up().await;
    front.start_mapper(&nodes);
    front.wait_map_complete(&["a", "b", "c"]).await;

    // The map names each product's owner under the key HAProxy computes for it: the
    // cluster's shard of the product.
    let db = connect(&db_url).await;
    let shop = open_shop(&nodes[0], 12, 10_000, json!({})).await;
    let server_of = |url: &str| {
        let i = nodes.iter().position(|n| n.base == url).unwrap();
        ["a", "b", "c"][i]
    };
    let entries = front.map_entries();
    for p in &shop.products {
        let owner = owner_of(&db, p).await.expect("owned");
        assert_eq!(entries[&shard_of(p)], server_of(&owner), "map entry of {p}");
    }

    // Checkouts by path through HAProxy: (almost) none is forwarded.
    let before = forwards(&nodes.iter().collect::<Vec<_>>()).await;
    let count = 600;
    let sold = checkouts_by_path(&front.base, &shop.storefront, &shop.products, count, "m").await;
    assert_eq!(sold, count);
    let forwarded = forwards(&nodes.iter().collect::<Vec<_>>()).await - before;
    assert!(
        forwarded < 0.05 * count as f64,
        "{forwarded} of {count} checkouts by path were forwarded"
    );

    // One instance dies: the fallback answers meanwhile (HAProxy's hashing and a hop),
    // and the map follows the new owners.
    let victim = 2;
    nodes[victim].child.kill().expect("kill -9");
    let _ = nodes[victim].child.wait();
    let sold = checkouts_by_path(&front.base, &shop.storefront, &shop.products, 120, "d").await;
    assert_eq!(sold, 120, "every checkout answered through the death");
    front.wait_map_complete(&["a", "b"]).await;
    let survivors: Vec<&Binary> = nodes.iter().take(2).collect();
    let before = forwards(&survivors).await;
    let sold = checkouts_by_path(&front.base, &shop.storefront, &shop.products, count, "n").await;
    assert_eq!(sold, count);
    let forwarded = forwards(&survivors).await - before;
    assert!(
        forwarded < 0.05 * count as f64,
        "after the death, {forwarded} of {count} checkouts by path were forwarded"
    );
    let mut orders = 0;
    for p in &shop.products {
        orders += assert_stock_adds_up(&db, p).await;
    }
    assert_eq!(
        orders as usize,
        2 * count + 120,
        "one order per checkout, none lost"
    );
}
