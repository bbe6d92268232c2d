//! The real `flashsale` binary, for the tests that need their own deadlines (they are
//! process-wide), resident memory, or a kill -9.

use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::helpers::listening_url;

pub const TOKEN: &str = "op_binary_test";

/// A running binary; killed when dropped.
pub struct Binary {
    pub child: Child,
    pub base: String,
    pub client: reqwest::Client,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A store's keys and one of its products.
#[derive(Clone)]
pub struct Shop {
    pub admin: String,
    pub storefront: String,
    pub product: String,
}

impl Binary {
    /// Starts the binary on `db_url` with `env` on top of the test defaults.
    pub async fn start(db_url: &str, env: &[(&str, &str)]) -> Binary {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flashsale"));
        command
            .env("DATABASE_URL", db_url)
            .env("FLASHSALE_LISTEN", "127.0.0.1:0")
            .env("FLASHSALE_ADMIN_TOKEN", TOKEN)
            .env("FLASHSALE_SEED_DEMO", "false")
            .env("FLASHSALE_HTTP_WORKERS", "2")
            .env("FLASHSALE_ARBITERS", "2")
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("Failed to start flashsale");
        let base = listening_url(&mut child).await;
        Binary {
            child,
            base,
            client: crate::helpers::http_client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An enterprise store (no rate limits) with one product of `stock` units.
    pub async fn open_shop(&self, stock: i64, extra: Value) -> Shop {
        let (admin, storefront) = self.create_store("enterprise").await;
        let product = self.add_product(&admin, stock, extra).await;
        Shop {
            admin,
            storefront,
            product,
        }
    }

    /// A new store on `plan`: its (admin, storefront) keys.
    pub async fn create_store(&self, plan: &str) -> (String, String) {
        let store: Value = self
            .client
            .post(self.url("/api/v1/stores"))
            .bearer_auth(TOKEN)
            .json(&json!({"name": "Shop", "plan": plan}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = |role: &str| store["api_keys"][role].as_str().unwrap().to_owned();
        (key("admin"), key("storefront"))
    }

    pub async fn add_product(&self, admin: &str, stock: i64, extra: Value) -> String {
        let mut body = json!({"sku": flashsale::domain::ids::new_id("sku"), "name": "Drop", "price_cents": 100,
                              "currency": "EUR", "stock": stock});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let product: Value = self
            .client
            .post(self.url("/api/v1/products"))
            .bearer_auth(admin)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        product["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{product}"))
            .to_owned()
    }

    /// One checkout: (status, code or order id, raw body, Retry-After present).
    pub async fn checkout(
        &self,
        client: &reqwest::Client,
        token: &str,
        product: &str,
        key: &str,
        customer: &str,
    ) -> Answer {
        let response = client
            .post(self.url("/api/v1/checkout"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&crate::helpers::checkout_body(product, 1, customer))
            .send()
            .await
            .expect("answered");
        Answer::read(response).await
    }

    /// The whole `/metrics` page.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn metric(&self, line_prefix: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .filter(|l| l.starts_with(line_prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

/// What one request was answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub replayed: bool,
    pub retry_after: bool,
    pub body: String,
}

impl Answer {
    pub async fn read(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let retry_after = response.headers().contains_key("retry-after");
        let body = response.text().await.unwrap_or_default();
        Answer {
            status,
            replayed,
            retry_after,
            body,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The problem code, or the order id of a 201.
    pub fn code(&self) -> String {
        let v = self.json();
        v["code"]
            .as_str()
            .or_else(|| v["id"].as_str())
            .unwrap_or_default()
            .to_owned()
    }
}
