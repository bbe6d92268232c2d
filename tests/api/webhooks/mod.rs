//! Webhooks: a real HTTP receiver inside the test (actix-web on 127.0.0.1:0) records
//! every delivery and answers as each test tells it to.

mod burst;
mod crash;
mod delivery;
mod order;
mod routes;

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{StoreKeys, TestApp};

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
pub struct Got {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub event: Value,
    pub answered: u16,
    pub at: Instant,
}

impl Got {
    pub fn id(&self) -> &str {
        self.event["id"].as_str().unwrap_or_default()
    }
    pub fn kind(&self) -> &str {
        self.event["type"].as_str().unwrap_or_default()
    }
}

/// How the receiver answers: given the event and how many times its id arrived before
/// (0 the first time), a status and a delay before answering.
pub type Behaviour = Arc<dyn Fn(&Value, usize) -> (u16, Duration) + Send + Sync>;

/// What arrived, with indexes kept as it arrives (a sell-out sends thousands).
#[derive(Default)]
struct Log {
    all: Vec<Got>,
    /// Event id → requests with it so far.
    seen: HashMap<String, usize>,
    /// Event ids answered with a 2xx.
    delivered: HashSet<String>,
}

pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Log>>,
    handle: ServerHandle,
}

pub fn answer(status: u16) -> Behaviour {
    Arc::new(move |_, _| (status, Duration::ZERO))
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: Arc<Mutex<Log>> = Arc::default();
        let shared = got.clone();
        let server = HttpServer::new(move || {
            let got = shared.clone();
            let behaviour = behaviour.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let got = got.clone();
                let behaviour = behaviour.clone();
                async move {
                    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let id = event["id"].as_str().unwrap_or_default().to_owned();
                    let seen = got.lock().unwrap().seen.get(&id).copied().unwrap_or(0);
                    let (status, delay) = behaviour(&event, seen);
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    {
                        let mut log = got.lock().unwrap();
                        *log.seen.entry(id.clone()).or_default() += 1;
                        log.all.push(Got {
                            headers,
                            body: body.to_vec(),
                            event,
                            answered: status,
                            at: Instant::now(),
                        });
                    }
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    if (200..300).contains(&status) {
                        got.lock().unwrap().delivered.insert(id);
                    }
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                        .body("ok")
                }
            }))
        })
        .workers(2)
        // A hanging receiver must not run out of connections before the sender does.
        .max_connections(1024)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Receiver { url, got, handle }
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().all.clone()
    }

    /// Distinct event ids answered with a 2xx.
    pub fn delivered_ids(&self) -> HashSet<String> {
        self.got.lock().unwrap().delivered.clone()
    }

    /// How many distinct event ids were answered with a 2xx.
    pub fn delivered_count(&self) -> usize {
        self.got.lock().unwrap().delivered.len()
    }

    /// Waits (up to `limit`) until `n` distinct events were answered with a 2xx.
    pub async fn wait_delivered(&self, n: usize, limit: Duration) {
        let start = Instant::now();
        let mut last_report = Instant::now();
        while self.delivered_count() < n {
            if last_report.elapsed() >= Duration::from_secs(1) {
                println!(
                    "{:?}: {} of {n} delivered",
                    start.elapsed(),
                    self.delivered_count()
                );
                last_report = Instant::now();
            }
            assert!(
                start.elapsed() < limit,
                "gave up after {limit:?}: {} of {n} events delivered",
                self.delivered_count()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to `limit`) until `done` holds for what arrived; returns it.
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let start = Instant::now();
        loop {
            let got = {
                let log = self.got.lock().unwrap();
                if done(&log.all) {
                    return log.all.clone();
                }
                log.all.iter().rev().take(5).cloned().collect::<Vec<_>>()
            };
            assert!(
                start.elapsed() < limit,
                "gave up after {limit:?}; the last requests: {:?}",
                got.iter()
                    .map(|g| (g.kind().to_owned(), g.answered))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // The stop command is sent now; the future only waits for it.
        drop(self.handle.stop(false));
    }
}

/// Test settings for webhooks: the receiver's loopback allowed, a short schedule.
pub fn tune(s: &mut flashsale::config::Settings) {
    s.webhook_allow_nets = vec!["127.0.0.0/8".parse().unwrap()];
    s.webhook_retry_schedule =
        flashsale::domain::webhook::RetrySchedule::parse("0.2,0.2,0.2").unwrap();
}

/// Subscribes `url` for `events`; returns the endpoint (with its secret).
pub async fn subscribe(app: &TestApp, store: &StoreKeys, url: &str, events: &[&str]) -> Value {
    let response = app
        .post(
            "/api/v1/webhooks",
            &store.admin,
            &json!({"url": url, "events": events}),
        )
        .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

/// `Flashsale-Signature` checked by hand: every `v1=` is an HMAC of `t.body` under one
/// of `secrets`, and each secret signed.
pub fn verify_flashsale(got: &Got, secrets: &[&str]) {
    let header = &got.headers["flashsale-signature"];
    let mut parts = header.split(',');
    let t = parts.next().unwrap().strip_prefix("t=").expect("t= first");
    let sigs: Vec<&str> = parts.map(|p| p.strip_prefix("v1=").expect("v1=")).collect();
    assert_eq!(sigs.len(), secrets.len(), "{header}");
    for secret in secrets {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(&got.body);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert!(sigs.contains(&expected.as_str()), "{header}");
    }
}

/// The Standard Webhooks headers, checked by the `standardwebhooks` crate.
pub fn verify_standard(got: &Got, secret: &str) {
    let mut headers = reqwest::header::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, got.headers[name].parse().unwrap());
    }
    assert_eq!(got.headers["webhook-id"], got.id());
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&got.body, &headers)
        .unwrap_or_else(|e| panic!("{e:?}: {:?}", got.headers));
}

/// Polls the deliveries log of an endpoint until `done` holds for its items.
pub async fn wait_deliveries(
    app: &TestApp,
    store: &StoreKeys,
    endpoint: &str,
    limit: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let page: Value = app
            .get(
                &format!("/api/v1/webhooks/{endpoint}/deliveries?limit=200"),
                &store.admin,
            )
            .await
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if done(&items) {
            return items;
        }
        assert!(
            start.elapsed() < limit,
            "deliveries never got there: {items:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
