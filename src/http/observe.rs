//! Every request: a root span (the trace's first hop, child of an incoming W3C
//! `traceparent`) and the RED metrics by matched route.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use foldhash::HashMap;
use prometheus::{Histogram, IntCounter};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::products::HotRead;
use crate::metrics::{HTTP_DURATION, HTTP_REQUESTS};
use crate::telemetry::{extract_parent, SPAN_HTTP};

/// The front door of every request, one middleware (each layer costs a boxed future per
/// request, measurable on the read path): admission control first, then the request is
/// served inside its root span (a hot read by the front door itself, see [`HotRead`];
/// anything else by the router), and its RED metrics are recorded, shed ones included.
pub async fn front_door(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let hot = HotRead::of(&req);
    let junk = super::junk::check_request(req.path(), req.query_string()).err();
    let response = match admit(&req) {
        Some(_counted) if junk.is_some() => {
            let response = junk.as_ref().map(|e| e.error_response());
            req.into_response(response.unwrap_or_else(|| HttpResponse::BadRequest().finish()))
                .map_into_right_body()
        }
        Some(_counted) => 'served: {
            let span = tracing::debug_span!(
                SPAN_HTTP,
                http.method = %method,
                http.route = tracing::field::Empty,
                http.status_code = tracing::field::Empty
            );
            if !span.is_disabled() && req.headers().contains_key("traceparent") {
                let _ = span.set_parent(extract_parent(req.headers()));
            }
            // Another instance's product: its owner answers.
            let (req, via) = match super::routing::place(req).instrument(span.clone()).await {
                Ok(placed) => placed,
                Err(answered) => break 'served answered.map_into_right_body(),
            };
            let answer_by = via.and_then(|v| v.answer_by);
            let response = match hot {
                Some(read) => read
                    .serve(req)
                    .instrument(span.clone())
                    .await
                    .map_into_right_body(),
                None => crate::actors::mailbox::within(answer_by, next.call(req))
                    .instrument(span.clone())
                    .await?
                    .map_into_left_body(),
            };
            if !span.is_disabled() {
                span.record("http.route", &**route_of(hot, &response));
                span.record("http.status_code", response.status().as_str());
            }
            response
        }
        None => {
            crate::metrics::MAILBOX_REJECTIONS
                .with_label_values(&["admission"])
                .inc();
            let response = super::errors::ApiError::Overloaded.error_response();
            req.into_response(response).map_into_right_body()
        }
    };
    if method != Method::GET && method != Method::HEAD {
        note_write(&response);
    }
    record_red(
        route_of(hot, &response),
        &response,
        method,
        started.elapsed().as_secs_f64(),
    );
    Ok(response)
}

/// With a read replica: a request that may have written (any answer but a refusal, which
/// writes nothing) makes its caller's reads go to the primary until the replica has it.
fn note_write<B>(response: &ServiceResponse<B>) {
    if response.status().is_client_error() {
        return;
    }
    let request = response.request();
    let Some(state) = request.app_data::<actix_web::web::Data<super::AppState>>() else {
        return;
    };
    let Some(replica) = &state.replica else {
        return;
    };
    if let Some(caller) = super::auth::token_hash(request.headers()) {
        replica.note_write(caller);
    }
}

/// The label of the request's route: a hot read's, else the matched resource's (see
/// [`super::RouteLabel`]; routing happened inside, and the matched pattern keeps the label
/// set bounded).
fn route_of<B>(hot: Option<HotRead>, response: &ServiceResponse<B>) -> &Arc<str> {
    static UNMATCHED: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("unmatched"));
    match hot {
        Some(read) => read.label(),
        None => response
            .request()
            .app_data::<super::RouteLabel>()
            .map_or(&UNMATCHED, |l| &l.0),
    }
}

/// A route's RED series for one method and status.
struct Red {
    /// Holds the label, so that its address (part of the key) is not reused.
    _route: Arc<str>,
    requests: IntCounter,
    duration: Histogram,
}

thread_local! {
    /// The series each HTTP worker has used, by (route label address, method, status):
    /// `with_label_values` hashes the label strings and takes a lock on every call.
    static RED: RefCell<HashMap<(usize, &'static str, u16), Red>> = RefCell::new(HashMap::default());
}

/// A request method as a metrics label: one of the standard methods, else `other`, so
/// that no request can add a series by inventing a method.
pub fn method_label(method: &Method) -> &'static str {
    const STANDARD: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::CONNECT, "CONNECT"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::TRACE, "TRACE"),
        (Method::PATCH, "PATCH"),
    ];
    STANDARD
        .iter()
        .find(|(m, _)| m == method)
        .map_or(crate::metrics::OTHER_METHOD, |(_, label)| label)
}

fn record_red<B>(route: &Arc<str>, response: &ServiceResponse<B>, method: Method, seconds: f64) {
    let status = response.status();
    let key = (
        Arc::as_ptr(route).cast::<u8>() as usize,
        method_label(&method),
        status.as_u16(),
    );
    RED.with_borrow_mut(|series| {
        let red = series.entry(key).or_insert_with_key(|(_, method, _)| Red {
            _route: route.clone(),
            requests: HTTP_REQUESTS.with_label_values(&[&**route, method, status.as_str()]),
            duration: HTTP_DURATION.with_label_values(&[&**route, method]),
        });
        red.requests.inc();
        red.duration.observe(seconds);
    });
}

/// How much a request matters when the service must shed load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Priority {
    /// Browsing: shed first (from half the in-flight limit).
    Browse,
    /// New checkouts: shed from 80 % of it.
    Checkout,
    /// Confirm and cancel (money already moving): shed only beyond it.
    Settle,
    /// Health and metrics: never shed.
    Operations,
}

fn priority(path: &str) -> Priority {
    if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        Priority::Operations
    } else if path.starts_with("/api/v1/orders/")
        && (path.ends_with("/confirm") || path.ends_with("/cancel"))
    {
        Priority::Settle
    } else if path == "/api/v1/checkout" {
        Priority::Checkout
    } else {
        Priority::Browse
    }
}

/// Counts the request in flight until it is dropped.
struct InFlight(Option<std::sync::Arc<super::AppState>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(state) = &self.0 {
            state.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Admission control: past a share of `FLASHSALE_MAX_IN_FLIGHT` requests in flight, the
/// less important ones get 503 `overloaded` at once, so that what matters most still gets
/// through: confirm and cancel before new checkouts, checkouts before browsing.
/// `Some`: admitted, and counted in flight until the guard drops.
fn admit(req: &ServiceRequest) -> Option<InFlight> {
    let Some(state) = req.app_data::<actix_web::web::Data<super::AppState>>() else {
        return Some(InFlight(None));
    };
    let max = state.max_in_flight.max(1);
    let now = state.in_flight.fetch_add(1, Ordering::AcqRel);
    let counted = InFlight(Some(state.clone().into_inner()));
    let shed_from = match priority(req.path()) {
        Priority::Browse => max / 2,
        Priority::Checkout => max * 8 / 10,
        Priority::Settle => max,
        Priority::Operations => usize::MAX,
    };
    (now < shed_from).then_some(counted)
}
