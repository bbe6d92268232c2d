//! Logs and traces.
//!
//! Logs: `tracing` to stdout, filtered by `RUST_LOG`.
//!
//! Traces: OpenTelemetry, exported over OTLP/HTTP (protobuf) when the standard variables
//! ask for it: `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set
//! (and `OTEL_SDK_DISABLED` not `true`); the exporter itself reads the other `OTEL_*`
//! variables (headers, timeout, …), and `OTEL_SERVICE_NAME` names the service (default
//! `flashsale`). Unset, no OpenTelemetry layer is installed, and the hop spans, which are
//! at DEBUG level, are disabled at their call sites: tracing off costs nothing.
//!
//! One trace per request: `http.request` (honouring an incoming W3C `traceparent`) →
//! (`store.route`, only when the store's actor starts the product's) → `product.<message>` → `writer.batch` (linked to every checkout span it
//! carries) → `db.*` statements. Span names are the constants below.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub const SPAN_HTTP: &str = "http.request";
pub const SPAN_STORE: &str = "store.route";
pub const SPAN_PRODUCT_CHECKOUT: &str = "product.checkout";
pub const SPAN_WRITER_BATCH: &str = "writer.batch";
pub const SPAN_DB_INSERT_ORDERS: &str = "db.insert_orders";
pub const SPAN_DB_TAKE_STOCK: &str = "db.take_stock";
pub const SPAN_DB_COMMIT: &str = "db.commit";
/// `db.system.name` of every database span (OpenTelemetry database semantic conventions).
pub const DB_SYSTEM: &str = "postgresql";

/// The database server the serving pools connect to, for `server.address` and
/// `server.port` on database spans.
static DB_SERVER: std::sync::OnceLock<(String, u16)> = std::sync::OnceLock::new();

/// Records the database server (the first pool made wins; all pools share it).
pub fn set_db_server(address: String, port: u16) {
    let _ = DB_SERVER.set((address, port));
}

/// (`server.address`, `server.port`) of database spans.
pub fn db_server() -> (&'static str, u16) {
    DB_SERVER
        .get()
        .map_or(("", 5432), |(address, port)| (address.as_str(), *port))
}

/// A database call's span, with OpenTelemetry's database semantic conventions: kind
/// client, `db.system.name`, `db.operation.name`, `db.collection.name`,
/// `server.address` and `server.port`, so tracing backends show it as a database call.
#[macro_export]
macro_rules! db_span {
    ($name:expr, $operation:expr, $collection:expr $(, $($field:tt)+)?) => {{
        let (address, port) = $crate::telemetry::db_server();
        tracing::debug_span!(
            $name,
            otel.kind = "client",
            db.system.name = $crate::telemetry::DB_SYSTEM,
            db.operation.name = $operation,
            db.collection.name = $collection,
            server.address = address,
            server.port = port
            $(, $($field)+)?
        )
    }};
}

/// One webhook delivery attempt (the dispatcher's POST).
pub const SPAN_WEBHOOK_DELIVERY: &str = "webhook.delivery";

/// What the OpenTelemetry layer records: every hop of this crate.
const TRACE_FILTER: &str = "flashsale=debug";

/// Keeps the tracer provider; dropping it flushes and stops the exporter.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Whether the standard variables ask for an OTLP exporter.
pub fn otlp_requested() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs logging, and tracing over OTLP if the environment asks for it.
pub fn init(default_filter: &str) -> Telemetry {
    let provider = if otlp_requested() {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => Some(provider_with(|b| b.with_batch_exporter(exporter))),
            Err(e) => {
                eprintln!("OTLP exporter not started: {e}");
                None
            }
        }
    } else {
        None
    };
    init_with(default_filter, provider)
}

/// A tracer provider named after the service (`OTEL_SERVICE_NAME`, default flashsale).
pub fn provider_with(
    add_exporter: impl FnOnce(
        opentelemetry_sdk::trace::TracerProviderBuilder,
    ) -> opentelemetry_sdk::trace::TracerProviderBuilder,
) -> SdkTracerProvider {
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "flashsale".to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    add_exporter(SdkTracerProvider::builder().with_resource(resource)).build()
}

/// Installs logging and, with a provider, the OpenTelemetry layer; a second call (tests)
/// is a no-op.
pub fn init_with(default_filter: &str, provider: Option<SdkTracerProvider>) -> Telemetry {
    let log_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_filter(log_filter);
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("flashsale"))
            .with_filter(EnvFilter::new(TRACE_FILTER))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    Telemetry { provider }
}

/// The remote parent named by a `traceparent` header, if any.
pub fn extract_parent(headers: &actix_web::http::header::HeaderMap) -> opentelemetry::Context {
    struct Carrier<'a>(&'a actix_web::http::header::HeaderMap);
    impl opentelemetry::propagation::Extractor for Carrier<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    TraceContextPropagator::new().extract(&Carrier(headers))
}

/// The W3C `traceparent` of `span`, for an outgoing request (a webhook delivery). Without
/// an OpenTelemetry layer the span has no context, and a fresh, unsampled trace id is
/// made, so that a receiver can still correlate its logs with ours.
pub fn traceparent(span: &tracing::Span) -> String {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent").unwrap_or_else(|| {
        format!(
            "00-{}-{}-00",
            hex::encode(rand::random::<[u8; 16]>()),
            hex::encode(rand::random::<[u8; 8]>())
        )
    })
}
