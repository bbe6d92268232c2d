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
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
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
