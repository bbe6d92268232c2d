//! A real caching proxy in front: nginx with the shipped deploy/nginx-flashsale.conf.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

/// nginx, run by the test with the shipped configuration pointed at `app`.
pub struct Edge {
    child: Child,
    pub port: u16,
    _dir: std::path::PathBuf,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn nginx_binary() -> String {
    [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/bin/nginx",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .map(str::to_owned)
    .expect("nginx is needed for this test: apt-get install -y nginx (.ci/run does)")
}

pub fn start_edge(app: &TestApp) -> Edge {
    let dir =
        std::env::temp_dir().join(format!("flashsale-edge-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("cache")).unwrap();
    // nginx's workers may run as another user: let them write the cache.
    use std::os::unix::fs::PermissionsExt;
    for d in [dir.clone(), dir.join("cache")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let shipped = include_str!("../../deploy/nginx-flashsale.conf");
    let site = shipped
        .replace(
            "/var/cache/nginx/flashsale",
            &dir.join("cache").display().to_string(),
        )
        .replace(
            "server 127.0.0.1:8080;",
            &format!("server {};", app.address),
        )
        .replace("listen 8081;", &format!("listen 127.0.0.1:{port};"));
    assert_ne!(
        site, shipped,
        "the shipped configuration changed shape; update this test"
    );
    std::fs::write(dir.join("site.conf"), site).unwrap();
    let user = if nix::unistd::geteuid().is_root() {
        "user root;"
    } else {
        ""
    };
    let d = dir.display();
    let main = format!(
        "daemon off; worker_processes 1; {user} pid {d}/nginx.pid; error_log {d}/error.log warn;
         events {{ worker_connections 256; }}
         http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
                fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
                include {d}/site.conf; }}"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let child = Command::new(nginx_binary())
        .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Failed to start nginx");
    // From here on, dropping the edge stops nginx (and reaps it).
    let edge = Edge {
        child,
        port,
        _dir: dir.clone(),
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return edge;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    panic!("nginx did not start: {log}");
}

#[actix_web::test]
async fn nginx_serves_product_pages_from_the_edge_revalidates_and_refreshes_after_patch() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let other = app.create_store().await;
    let product = app
        .create_product(&store, 10, json!({"price_cents": 1000}))
        .await;
    let edge = start_edge(&app);
    let url = format!("http://127.0.0.1:{}/api/v1/products/{product}", edge.port);
    let get = |key: &str| app.client.get(&url).bearer_auth(key).send();

    let first = get(&store.storefront).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-cache-status"], "MISS");
    let second = get(&store.storefront).await.unwrap();
    assert_eq!(
        second.headers()["x-cache-status"],
        "HIT",
        "served from the edge while fresh"
    );
    assert_eq!(second.json::<Value>().await.unwrap()["price_cents"], 1000);
    // Another store's key does not get the cached page.
    let foreign = get(&other.storefront).await.unwrap();
    assert_eq!(foreign.status(), 404);

    // Once stale (max-age 1 s, on nginx's whole-second clock), the edge revalidates:
    // flashsale answers 304 and the copy lives on.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let third = get(&store.storefront).await.unwrap();
    assert_eq!(third.status(), 200);
    assert_eq!(third.headers()["x-cache-status"], "REVALIDATED");

    // A PATCH: the edge shows the new price within the advertised max-age (1 s), give or
    // take nginx's clock, which counts whole seconds (so up to one more).
    let patched = app
        .client
        .patch(app.url(&format!("/api/v1/products/{product}")))
        .bearer_auth(&store.admin)
        .json(&json!({"price_cents": 1200}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let since = Instant::now();
    loop {
        let response = get(&store.storefront).await.unwrap();
        let status = response.headers()["x-cache-status"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = response.json().await.unwrap();
        if body["price_cents"] == 1200 {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_millis(2500),
            "the edge still serves the old price ({status}) after {:?}",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(edge);
}
