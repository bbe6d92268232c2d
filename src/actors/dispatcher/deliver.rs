//! One delivery attempt: the HTTP client (pooled, keep-alive, no redirects, a timeout),
//! the address guard on every connection, signing, and what the answer means.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tracing::Instrument;

use crate::db::webhooks::{event_body, AttemptRecord, Claimed};
use crate::domain::webhook::{check_addr, parse_retry_after, parse_url, secret_key, sign};
use crate::domain::webhook::{RetrySchedule, UrlError};
use crate::metrics::{WEBHOOK_ATTEMPTS, WEBHOOK_LAG};
use crate::telemetry::SPAN_WEBHOOK_DELIVERY;

/// Most of a response body kept in the log of attempts.
const SNIPPET_BYTES: usize = 1024;
/// Most of a response body read (the rest is not waited for; the connection is then
/// not reused).
const READ_BYTES: usize = 64 * 1024;

/// Resolves hosts for the client, refusing a name that resolves to an internal address
/// outside the allowed nets: checked at every connection, since DNS can change between
/// the endpoint's creation and any delivery.
struct GuardedResolver {
    allow: Arc<Vec<IpNet>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            for a in &addrs {
                check_addr(a.ip(), &allow)?;
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The one HTTP client of the dispatcher.
pub fn build_client(allow: Arc<Vec<IpNet>>, timeout: Duration, per_host: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(per_host)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .user_agent(concat!("flashsale-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver { allow }))
        .build()
        .expect("the webhook HTTP client")
}

/// What one attempt came to.
pub struct Outcome {
    pub record: AttemptRecord,
    /// For the metrics: `delivered`/`failed` when the delivery finished.
    pub finished: Option<&'static str>,
}

/// POSTs one claimed delivery, signed afresh, and decides what follows.
pub async fn attempt(
    client: &reqwest::Client,
    allow: &[IpNet],
    schedule: &RetrySchedule,
    c: &Claimed,
) -> Outcome {
    let span = tracing::info_span!(
        SPAN_WEBHOOK_DELIVERY,
        webhook.endpoint_id = %c.endpoint_id,
        event.id = %c.event_id,
        event.kind = %c.kind,
        delivery.attempt = c.attempt,
        http.status_code = tracing::field::Empty,
    );
    let started = Instant::now();
    let sent = send(client, allow, c, &span).instrument(span.clone()).await;
    let duration_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
    let mut record = AttemptRecord {
        delivery_id: c.delivery_id,
        status_code: None,
        duration_ms,
        error: None,
        response_snippet: None,
        delivered: false,
        gone: false,
        retry_in_secs: None,
    };
    let mut retry_after = None;
    let result = match sent {
        Ok((status, headers, snippet)) => {
            span.record("http.status_code", status);
            record.status_code = Some(i32::from(status));
            record.response_snippet = Some(snippet).filter(|s| !s.is_empty());
            if (200..300).contains(&status) {
                record.delivered = true;
                "success"
            } else {
                record.gone = status == 410;
                if matches!(status, 429 | 503) {
                    retry_after = headers.and_then(|h| parse_retry_after(&h));
                }
                record.error = Some(format!("HTTP {status}"));
                "http_error"
            }
        }
        Err(Failed { result, error }) => {
            record.error = Some(error);
            result
        }
    };
    WEBHOOK_ATTEMPTS.with_label_values(&[result]).inc();
    let finished = if record.delivered {
        let lag = (chrono::Utc::now() - c.event_created_at).num_milliseconds();
        WEBHOOK_LAG.observe(lag.max(0) as f64 / 1000.0);
        Some("delivered")
    } else if record.gone {
        Some("failed")
    } else {
        let jitter = rand::random::<f64>() * 2.0 - 1.0;
        record.retry_in_secs = schedule
            .next_delay(c.attempt, retry_after, jitter)
            .map(|d| d.as_secs_f64());
        record.retry_in_secs.is_none().then_some("failed")
    };
    tracing::debug!(
        parent: &span,
        delivery.id = c.delivery_id,
        attempt.result = result,
        attempt.duration_ms = duration_ms,
        "webhook attempt"
    );
    Outcome { record, finished }
}

/// Why no response came.
struct Failed {
    result: &'static str,
    error: String,
}

impl Failed {
    fn forbidden(e: &UrlError) -> Self {
        Failed {
            result: "forbidden",
            error: format!("url_forbidden: {e}"),
        }
    }
}

/// The request itself: (status, Retry-After, snippet).
async fn send(
    client: &reqwest::Client,
    allow: &[IpNet],
    c: &Claimed,
    span: &tracing::Span,
) -> Result<(u16, Option<String>, String), Failed> {
    let url = parse_url(&c.url).map_err(|e| Failed::forbidden(&e))?;
    // An address written in the URL never reaches the resolver: it is checked here.
    if let Some(host) = url.host_str() {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            check_addr(ip, allow).map_err(|e| Failed::forbidden(&e))?;
        }
    }
    let body = serde_json::to_vec(&event_body(
        &c.event_id,
        &c.kind,
        c.event_created_at,
        &c.data,
    ))
    .unwrap_or_default();
    let keys: Vec<Vec<u8>> = c.secrets.iter().filter_map(|s| secret_key(s)).collect();
    let t = chrono::Utc::now().timestamp();
    let signatures = sign(&keys, &c.event_id, t, &body);
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Flashsale-Signature", signatures.flashsale)
        .header("webhook-id", &c.event_id)
        .header("webhook-timestamp", t.to_string())
        .header("webhook-signature", signatures.standard)
        .header("traceparent", crate::telemetry::traceparent(span))
        .body(body)
        .send()
        .await
        .map_err(|e| classify(&e))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut snippet = Vec::new();
    let mut read = 0;
    let mut response = response;
    while let Ok(Some(chunk)) = response.chunk().await {
        read += chunk.len();
        let room = SNIPPET_BYTES.saturating_sub(snippet.len());
        snippet.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if read >= READ_BYTES {
            break;
        }
    }
    Ok((
        status,
        retry_after,
        String::from_utf8_lossy(&snippet).into_owned(),
    ))
}

/// A transport error, with its causes (reqwest's own message names only the top one).
fn classify(e: &reqwest::Error) -> Failed {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    let mut chain = Vec::new();
    while let Some(s) = source {
        if let Some(u) = s.downcast_ref::<UrlError>() {
            return Failed::forbidden(u);
        }
        chain.push(s.to_string());
        source = s.source();
    }
    Failed {
        result: if e.is_timeout() { "timeout" } else { "error" },
        error: chain.join(": "),
    }
}
