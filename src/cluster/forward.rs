//! Forwarding: a request about a product owned by another instance is sent on to its
//! owner over a pooled keep-alive connection, with its deadline, its `traceparent` and
//! the buyer's address, and the owner's answer is ours. A forwarded request carries the
//! cluster's secret (migration V14), so that only an instance's word is believed for
//! the buyer's address and the deadline, and a hop count: during a handover a request
//! may meet a stale view, so it is forwarded at most [`MAX_HOPS`] times (a misroute
//! costs a hop, never a loop).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};

use super::{Cluster, Route, Ticket};
use crate::http::errors::ApiError;
use crate::metrics::CLUSTER_FORWARDS;

/// Proves a request comes from an instance of this cluster (its secret).
pub const FORWARDED_BY: &str = "flashsale-forwarded-by";
/// Hops so far.
pub const HOPS: &str = "flashsale-hops";
/// The buyer's address, as the first instance learnt it.
pub const CLIENT_ADDR: &str = "flashsale-client-addr";
/// Milliseconds left until the answer is due.
pub const DEADLINE_MS: &str = "flashsale-deadline-ms";
/// The first instance already counted the request against the store's rate limits
/// (it authenticated it before forwarding): the owner does not count it again.
pub const LIMITS_COUNTED: &str = "flashsale-limits-counted";
/// Hops a request may take at most.
pub const MAX_HOPS: u8 = 2;
/// How often a request about a moving shard looks again for its holder.
const SETTLE_POLL: Duration = Duration::from_millis(20);

/// Whether nothing listens at `url` (its connection is refused). A peer that is slow,
/// paused or unreachable is not "refusing": only a refusal proves it dead.
pub async fn refuses_connections(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return false;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let connect = tokio::net::TcpStream::connect((host, port));
    match tokio::time::timeout(Duration::from_millis(500), connect).await {
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    }
}

/// Why a request was not answered by the owner.
pub enum NotForwarded {
    /// The owner's address refuses connections: it is dead (nothing was sent).
    Refused,
    /// No connection to the owner could be made (nothing was sent): try again while
    /// the request may wait, the shard may move meanwhile.
    Unreachable,
    /// Answer this.
    Failed(ApiError),
}

/// Where a request is served.
pub enum Placed {
    /// Here, under this ticket.
    Here(Ticket),
    /// By the owner at this URL.
    Owner(Arc<str>),
}

/// How a request was served by [`Cluster::serve_elsewhere`].
pub enum Served {
    /// Serve it here, under this ticket.
    Here(Ticket),
    /// The owner's answer.
    There(HttpResponse),
}

/// What a trusted forwarded request said about itself (request extension).
#[derive(Debug, Clone)]
pub struct Via {
    pub hops: u8,
    pub client_addr: Option<String>,
    pub answer_by: Option<Instant>,
    /// Counted against the store's rate limits by an earlier instance.
    pub limits_counted: bool,
}

/// Request extension: this request was counted against its store's rate limits here.
#[derive(Debug, Clone, Copy)]
pub struct LimitsCounted;

/// The HTTP client for forwarding: keep-alive pools per owner, no redirects.
pub struct Forwarder {
    client: reqwest::Client,
}

impl Forwarder {
    pub fn new(lease: Duration) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .connect_timeout(lease.clamp(Duration::from_millis(200), Duration::from_secs(2)))
            .tcp_nodelay(true)
            .build()
            .expect("HTTP client");
        Forwarder { client }
    }
}

/// Headers not passed on (per hop, or ours to set).
fn passes(name: &str) -> bool {
    !matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
            | "content-length"
            | "traceparent"
            | FORWARDED_BY
            | HOPS
            | CLIENT_ADDR
            | DEADLINE_MS
            | LIMITS_COUNTED
    )
}

impl Cluster {
    /// What a request carries from an earlier instance, if it proves it is one.
    pub fn via(&self, req: &actix_web::dev::ServiceRequest) -> Option<Via> {
        let proof = req.headers().get(FORWARDED_BY)?.as_bytes();
        let secret = self.secret.get()?;
        if crate::domain::ids::hash_secret(&String::from_utf8_lossy(proof)) != secret.1 {
            return None;
        }
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Some(Via {
            hops: header(HOPS).and_then(|h| h.parse().ok()).unwrap_or(1),
            client_addr: header(CLIENT_ADDR).filter(|a| !a.is_empty()),
            answer_by: header(DEADLINE_MS)
                .and_then(|ms| ms.parse::<u64>().ok())
                .map(|ms| Instant::now() + Duration::from_millis(ms)),
            limits_counted: header(LIMITS_COUNTED).is_some(),
        })
    }

    /// Where a request about `product_id` goes, waiting (up to twice the lease, never
    /// past the request's deadline) while its shard moves between instances. `hops`:
    /// how often it was forwarded already; past [`MAX_HOPS`] it is served here or not
    /// at all.
    pub async fn place(self: &Arc<Self>, product_id: &str, hops: u8) -> Result<Placed, ApiError> {
        let deadline = crate::actors::mailbox::Deadline::from_now();
        let patience = (Instant::now() + self.lease * 2).min(deadline.start_by);
        loop {
            if let Some(ticket) = self.admit(product_id) {
                return Ok(Placed::Here(ticket));
            }
            match self.route(product_id) {
                Route::Forward(url) if hops < MAX_HOPS => return Ok(Placed::Owner(url)),
                Route::Local(_) | Route::Forward(_) | Route::Unsettled => {}
            }
            if Instant::now() + SETTLE_POLL > patience {
                return Err(ApiError::Unavailable);
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }

    /// Serves a request about `product_id` by its owner when that is another instance:
    /// `Served::There(answer)`, or `Served::Here(ticket)` to serve it here. An owner
    /// found dead on the way (connection refused) is evicted and the request placed
    /// again.
    pub async fn serve_elsewhere(
        self: &Arc<Self>,
        req: &HttpRequest,
        product_id: &str,
        body: Bytes,
        via: Option<&Via>,
        client_addr: Option<String>,
    ) -> Result<Served, ApiError> {
        // Bounded like `place`: twice the lease, never past the request's deadline.
        let until = (Instant::now() + self.lease * 2)
            .min(crate::actors::mailbox::Deadline::from_now().start_by);
        loop {
            let owner = match self.place(product_id, via.map_or(0, |v| v.hops)).await? {
                Placed::Here(ticket) => return Ok(Served::Here(ticket)),
                Placed::Owner(owner) => owner,
            };
            match self
                .forward(req, body.clone(), &owner, via, client_addr.clone())
                .await
            {
                Ok(answer) => return Ok(Served::There(answer)),
                Err(NotForwarded::Refused) => self.evict(&owner).await,
                Err(NotForwarded::Unreachable) if Instant::now() < until => {
                    tokio::time::sleep(SETTLE_POLL * 5).await
                }
                Err(NotForwarded::Unreachable) => return Err(ApiError::Unavailable),
                Err(NotForwarded::Failed(e)) => return Err(e),
            }
        }
    }

    /// Sends `req` (with `body`) to the owner at `base` and answers with its answer.
    /// Not sent (the owner unreachable): 503 `unavailable`, nothing was done. Sent and
    /// no answer: a read is `unavailable`, a write `outcome_unknown` (a retry with its
    /// Idempotency-Key learns it).
    pub async fn forward(
        &self,
        req: &HttpRequest,
        body: Bytes,
        base: &str,
        via: Option<&Via>,
        client_addr: Option<String>,
    ) -> Result<HttpResponse, NotForwarded> {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{base}{path}");
        let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
            .map_err(|_| NotForwarded::Failed(ApiError::Unavailable))?;
        let deadline = crate::actors::mailbox::Deadline::from_now();
        let left = deadline.answer_by.saturating_duration_since(Instant::now());
        let Some((secret, _)) = self.secret.get() else {
            return Err(NotForwarded::Failed(ApiError::Unavailable));
        };
        let mut out = self
            .forwarder
            .client
            .request(method.clone(), url)
            .timeout(left)
            .header(FORWARDED_BY, secret.as_str())
            .header(HOPS, (via.map_or(0, |v| v.hops) + 1).to_string())
            .header(DEADLINE_MS, left.as_millis().to_string())
            .header(
                "traceparent",
                crate::telemetry::traceparent(&tracing::Span::current()),
            );
        if let Some(addr) = client_addr {
            out = out.header(CLIENT_ADDR, addr);
        }
        let counted = via.is_some_and(|v| v.limits_counted)
            || actix_web::HttpMessage::extensions(req)
                .get::<LimitsCounted>()
                .is_some();
        if counted {
            out = out.header(LIMITS_COUNTED, "1");
        }
        for (name, value) in req.headers() {
            if passes(name.as_str()) {
                out = out.header(name.as_str(), value.as_bytes());
            }
        }
        let answer = match out.body(body).send().await {
            Ok(answer) => answer,
            Err(e) => {
                CLUSTER_FORWARDS.with_label_values(&["failed"]).inc();
                tracing::warn!(error = %e, owner = %base, "forwarding failed");
                if e.is_connect() {
                    return Err(if refuses_connections(base).await {
                        NotForwarded::Refused
                    } else {
                        NotForwarded::Unreachable
                    });
                }
                return Err(NotForwarded::Failed(
                    if e.is_connect() || method == reqwest::Method::GET {
                        ApiError::Unavailable
                    } else {
                        ApiError::OutcomeUnknown
                    },
                ));
            }
        };
        let status = StatusCode::from_u16(answer.status().as_u16())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = HttpResponse::build(status);
        for (name, value) in answer.headers() {
            if passes(name.as_str()) {
                response.append_header((name.as_str(), value.as_bytes()));
            }
        }
        let bytes = match answer.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => {
                CLUSTER_FORWARDS.with_label_values(&["failed"]).inc();
                tracing::warn!(error = %e, owner = %base, "forwarded answer lost");
                return Err(NotForwarded::Failed(if method == reqwest::Method::GET {
                    ApiError::Unavailable
                } else {
                    ApiError::OutcomeUnknown
                }));
            }
        };
        CLUSTER_FORWARDS.with_label_values(&["forwarded"]).inc();
        Ok(response.body(bytes))
    }
}
