//! Every request: a root span (the trace's first hop, child of an incoming W3C
//! `traceparent`) and the RED metrics by matched route.

use std::sync::atomic::Ordering;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::ResponseError;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{HTTP_DURATION, HTTP_REQUESTS};
use crate::telemetry::{extract_parent, SPAN_HTTP};

/// The front door of every request, one middleware (each layer costs a boxed future per
/// request, measurable on the read path): admission control first, then the request is
/// served inside its root span, and its RED metrics are recorded, shed ones included.
pub async fn front_door(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let response = match admit(&req) {
        Some(_counted) => {
            let span = tracing::debug_span!(
                SPAN_HTTP,
                http.method = %method,
                http.route = tracing::field::Empty,
                http.status_code = tracing::field::Empty
            );
            if !span.is_disabled() && req.headers().contains_key("traceparent") {
                let _ = span.set_parent(extract_parent(req.headers()));
            }
            let response = next.call(req).instrument(span.clone()).await?;
            if !span.is_disabled() {
                span.record("http.route", route_of(&response));
                span.record("http.status_code", response.status().as_str());
            }
            response.map_into_left_body()
        }
        None => {
            crate::metrics::MAILBOX_REJECTIONS
                .with_label_values(&["admission"])
                .inc();
            let response = super::errors::ApiError::Overloaded.error_response();
            req.into_response(response).map_into_right_body()
        }
    };
    // Routing happened inside: the matched pattern keeps the label set bounded.
    let route = route_of(&response);
    HTTP_REQUESTS
        .with_label_values(&[route, method.as_str(), response.status().as_str()])
        .inc();
    HTTP_DURATION
        .with_label_values(&[route, method.as_str()])
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
}

/// The matched resource's label (see [`super::RouteLabel`]).
fn route_of<B>(response: &ServiceResponse<B>) -> &str {
    response
        .request()
        .app_data::<super::RouteLabel>()
        .map_or("unmatched", |l| l.0.as_str())
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
