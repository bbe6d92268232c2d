//! Traces and metrics: the span tree of one checkout, the real OTLP/HTTP exporter of the
//! binary delivering to a receiver here, and every metric the dashboards and alerts use
//! present on /metrics.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::SpanData;
use serde_json::json;

use crate::helpers::{checkout_body, fresh_database, listening_url, spans, spawn_app};
use flashsale::telemetry::{
    SPAN_DB_COMMIT, SPAN_DB_INSERT_ORDERS, SPAN_DB_TAKE_STOCK, SPAN_HTTP, SPAN_PRODUCT_CHECKOUT,
    SPAN_STORE, SPAN_WRITER_BATCH,
};

fn find<'a>(
    spans: &'a [SpanData],
    name: &str,
    pred: impl Fn(&SpanData) -> bool,
) -> Option<&'a SpanData> {
    spans.iter().find(|s| s.name == name && pred(s))
}

#[actix_web::test]
async fn one_checkout_makes_one_trace_with_a_span_per_hop() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 5, json!({})).await;
    // The caller's trace: its context must be honoured.
    let trace_id = TraceId::from_bytes(rand::random::<[u8; 16]>());
    let caller_span = SpanId::from_bytes(rand::random::<[u8; 8]>());
    let response = app
        .client
        .post(app.url("/api/v1/checkout"))
        .bearer_auth(&store.storefront)
        .header("Idempotency-Key", "traced")
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&checkout_body(&product, 1, "alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // Spans are exported as they end; the request's root ends just after the response.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (http, store_hop, product_hop, batch) = loop {
        let all = spans().get_finished_spans().unwrap();
        let ours = |s: &SpanData| s.span_context.trace_id() == trace_id;
        let http = find(&all, SPAN_HTTP, ours).cloned();
        let store_hop = find(&all, SPAN_STORE, ours).cloned();
        let product_hop = find(&all, SPAN_PRODUCT_CHECKOUT, ours).cloned();
        let batch = product_hop.as_ref().and_then(|p| {
            let id = p.span_context.span_id();
            find(&all, SPAN_WRITER_BATCH, |b| {
                b.links.iter().any(|l| l.span_context.span_id() == id)
            })
            .cloned()
        });
        if let (Some(h), Some(s), Some(p), Some(b)) = (http, store_hop, product_hop, batch) {
            break (h, s, p, b);
        }
        assert!(
            Instant::now() < deadline,
            "the checkout's spans were not all exported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // HTTP (child of the caller) → store actor (the product's actor was not running:
    // the store looks the id up and starts it) → product actor.
    assert_eq!(http.parent_span_id, caller_span);
    assert_eq!(store_hop.parent_span_id, http.span_context.span_id());
    assert_eq!(product_hop.parent_span_id, store_hop.span_context.span_id());
    assert_direct_to_running_product(&app, &store.storefront, &product).await;
    let attributes: HashMap<String, String> = http
        .attributes
        .iter()
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect();
    assert_eq!(
        attributes.get("http.route").map(String::as_str),
        Some("/api/v1/checkout")
    );
    assert_eq!(
        attributes.get("http.status_code").map(String::as_str),
        Some("201")
    );
    // The batch that carried the order links to the checkout, and each statement is its child.
    let all = spans().get_finished_spans().unwrap();
    for statement in [SPAN_DB_INSERT_ORDERS, SPAN_DB_TAKE_STOCK, SPAN_DB_COMMIT] {
        let child = find(&all, statement, |s| {
            s.parent_span_id == batch.span_context.span_id()
        });
        let child = child.unwrap_or_else(|| panic!("{statement} under {SPAN_WRITER_BATCH}"));
        // OpenTelemetry's database semantic conventions: a client call to PostgreSQL.
        assert_eq!(
            child.span_kind,
            opentelemetry::trace::SpanKind::Client,
            "{statement}"
        );
        let attributes: HashMap<String, String> = child
            .attributes
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        assert_eq!(
            attributes.get("db.system.name").map(String::as_str),
            Some("postgresql")
        );
        for key in [
            "db.operation.name",
            "db.collection.name",
            "server.address",
            "server.port",
        ] {
            assert!(
                attributes.get(key).is_some_and(|v| !v.is_empty()),
                "{statement} lacks {key}: {attributes:?}"
            );
        }
    }
}

/// A checkout of a product whose actor runs goes from the HTTP worker straight to the
/// product's mailbox: its trace has no store hop, and the product span is the HTTP span's
/// child.
async fn assert_direct_to_running_product(app: &crate::helpers::TestApp, key: &str, product: &str) {
    let trace_id = TraceId::from_bytes(rand::random::<[u8; 16]>());
    let caller_span = SpanId::from_bytes(rand::random::<[u8; 8]>());
    let response = app
        .client
        .post(app.url("/api/v1/checkout"))
        .bearer_auth(key)
        .header("Idempotency-Key", "traced-again")
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&checkout_body(product, 1, "bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let deadline = Instant::now() + Duration::from_secs(5);
    let ours = |s: &SpanData| s.span_context.trace_id() == trace_id;
    let (http, product_hop, all) = loop {
        let all = spans().get_finished_spans().unwrap();
        let http = find(&all, SPAN_HTTP, ours).cloned();
        let product_hop = find(&all, SPAN_PRODUCT_CHECKOUT, ours).cloned();
        if let (Some(h), Some(p)) = (http, product_hop) {
            break (h, p, all);
        }
        assert!(
            Instant::now() < deadline,
            "the second checkout's spans were not exported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(http.parent_span_id, caller_span);
    assert_eq!(product_hop.parent_span_id, http.span_context.span_id());
    assert!(
        find(&all, SPAN_STORE, ours).is_none(),
        "a running product's checkout went through the store actor"
    );
}

/// A minimal OTLP/HTTP receiver: decodes each POSTed ExportTraceServiceRequest and sends
/// (service name, span names) down the channel.
fn otlp_receiver() -> (u16, mpsc::Receiver<(String, Vec<String>)>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let request =
                        ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
                    for resource_spans in request.resource_spans {
                        let service = resource_spans
                            .resource
                            .iter()
                            .flat_map(|r| r.attributes.iter())
                            .find(|kv| kv.key == "service.name")
                            .and_then(|kv| kv.value.as_ref())
                            .map(|v| format!("{:?}", v.value))
                            .unwrap_or_default();
                        let names = resource_spans
                            .scope_spans
                            .iter()
                            .flat_map(|s| s.spans.iter().map(|sp| sp.name.clone()))
                            .collect();
                        let _ = tx.send((service, names));
                    }
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    (port, rx)
}

#[actix_web::test]
async fn the_binary_exports_its_spans_over_otlp_http() {
    let (port, received) = otlp_receiver();
    let db_url = fresh_database().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .env("DATABASE_URL", &db_url)
        .env("FLASHSALE_LISTEN", "127.0.0.1:0")
        .env("FLASHSALE_ADMIN_TOKEN", "op_otlp")
        .env("FLASHSALE_SEED_DEMO", "false")
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .env("OTEL_SERVICE_NAME", "flashsale-under-test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let base = listening_url(&mut child).await;
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("{base}/api/v1/stores"))
        .bearer_auth("op_otlp")
        .json(&json!({"name": "Otlp", "plan": "pro"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product: serde_json::Value = client
        .post(format!("{base}/api/v1/products"))
        .bearer_auth(created["api_keys"]["admin"].as_str().unwrap())
        .json(&json!({"sku": "s", "name": "n", "price_cents": 1, "currency": "EUR", "stock": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = client
        .post(format!("{base}/api/v1/checkout"))
        .bearer_auth(created["api_keys"]["storefront"].as_str().unwrap())
        .header("Idempotency-Key", "otlp-1")
        .json(&checkout_body(product["id"].as_str().unwrap(), 1, "a"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // SIGTERM: the binary flushes its exporter on the way out.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());

    let mut names = Vec::new();
    let mut services = Vec::new();
    while let Ok((service, batch)) = received.recv_timeout(Duration::from_secs(2)) {
        services.push(service);
        names.extend(batch);
    }
    for expected in [
        SPAN_HTTP,
        SPAN_STORE,
        SPAN_PRODUCT_CHECKOUT,
        SPAN_WRITER_BATCH,
        SPAN_DB_COMMIT,
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not received; got {names:?}"
        );
    }
    assert!(
        services.iter().all(|s| s.contains("flashsale-under-test")),
        "{services:?}"
    );
}

#[actix_web::test]
async fn every_metric_of_the_dashboards_and_alerts_is_on_metrics() {
    let app = spawn_app().await;
    let store = app.create_store().await;
    let product = app.create_product(&store, 5, json!({})).await;
    assert_eq!(
        app.checkout(&store.storefront, "m1", &checkout_body(&product, 1, "a"))
            .await
            .status(),
        201
    );
    assert_eq!(
        app.checkout(&store.storefront, "m1", &checkout_body(&product, 1, "a"))
            .await
            .status(),
        201
    );
    assert_eq!(
        app.get(&format!("/api/v1/products/{product}"), &store.storefront)
            .await
            .status(),
        200
    );
    let metrics = app.metrics_text().await;
    let used = include_str!("../../grafana/metrics.txt");
    let missing: Vec<&str> = used
        .lines()
        .map(str::trim)
        .filter(|m| !m.is_empty() && !m.starts_with('#'))
        .filter(|m| {
            !metrics
                .lines()
                .any(|l| l.starts_with(&format!("{m}{{")) || l.starts_with(&format!("{m} ")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "used by dashboards or alerts but not on /metrics: {missing:?}"
    );
    // And they carry what this workload did.
    assert!(metrics.contains(&format!(
        "flashsale_product_stock_available{{product_id=\"{product}\"}} 4"
    )));
    assert!(metrics.contains(
        "flashsale_http_requests_total{method=\"POST\",route=\"/api/v1/checkout\",status=\"201\"}"
    ));
}
