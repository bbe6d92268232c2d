//! Every request: a root span (the trace's first hop, child of an incoming W3C
//! `traceparent`) and the RED metrics by matched route.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{HTTP_DURATION, HTTP_REQUESTS};
use crate::telemetry::{extract_parent, SPAN_HTTP};

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let method = req.method().as_str().to_owned();
    let span = tracing::debug_span!(
        SPAN_HTTP,
        http.method = %method,
        http.route = tracing::field::Empty,
        http.status_code = tracing::field::Empty
    );
    if !span.is_disabled() && req.headers().contains_key("traceparent") {
        let _ = span.set_parent(extract_parent(req.headers()));
    }
    let started = Instant::now();
    let response = next.call(req).instrument(span.clone()).await?;
    // Routing happened inside: the matched pattern keeps the label set bounded.
    let route = response
        .request()
        .app_data::<super::RouteLabel>()
        .map_or_else(|| "unmatched".to_owned(), |l| l.0.clone());
    let status = response.status().as_u16().to_string();
    span.record("http.route", route.as_str());
    span.record("http.status_code", status.as_str());
    HTTP_REQUESTS
        .with_label_values(&[&route, &method, &status])
        .inc();
    HTTP_DURATION
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
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
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Admission control: past a share of `FLASHSALE_MAX_IN_FLIGHT` requests in flight, the
/// less important ones get 503 `overloaded` at once, so that what matters most still gets
/// through: confirm and cancel before new checkouts, checkouts before browsing.
pub async fn admit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    use actix_web::ResponseError;
    let Some(state) = req
        .app_data::<actix_web::web::Data<super::AppState>>()
        .cloned()
    else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let max = state.max_in_flight.max(1);
    let now = state
        .in_flight
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let _counted = InFlight(&state.in_flight);
    let shed_from = match priority(req.path()) {
        Priority::Browse => max / 2,
        Priority::Checkout => max * 8 / 10,
        Priority::Settle => max,
        Priority::Operations => usize::MAX,
    };
    if now >= shed_from {
        crate::metrics::MAILBOX_REJECTIONS
            .with_label_values(&["admission"])
            .inc();
        let response = super::errors::ApiError::Overloaded.error_response();
        return Ok(req.into_response(response).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}
