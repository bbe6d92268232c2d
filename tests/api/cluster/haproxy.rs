//! Three instances behind a real HAProxy running the shipped deploy/haproxy.cfg: a
//! stampede on several products through it (by path: hashed on the product; by body:
//! to the least busy instance) sells exactly the stock, and every 201 is in the database.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{assert_sold_exactly, metric_sum, open_shop, sell_out, start_cluster};
use crate::binary::Binary;
use crate::helpers::{connect, fresh_database};

/// HAProxy with the shipped configuration, bound to a free port, in front of `nodes`.
struct Front {
    child: Child,
    base: String,
    dir: std::path::PathBuf,
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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
    let shipped = include_str!("../../../deploy/haproxy.cfg");
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
    let dir = std::env::temp_dir().join(format!(
        "flashsale-haproxy-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
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
    }
}

#[actix_web::test]
async fn three_instances_behind_the_shipped_haproxy_sell_exactly_the_stock() {
    let db_url = fresh_database().await;
    let nodes = start_cluster(&db_url, 3, &[("FLASHSALE_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let front = start_front(&nodes);
    let client = reqwest::Client::new();
    // Up once its health checks see the instances ready.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = client
            .get(format!("{}/readyz", front.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            break;
        }
        assert!(Instant::now() < until, "haproxy never passed requests on");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

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
