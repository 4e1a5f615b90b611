//! Tracing set-up shared by every binary, and the trace context carried
//! across the bus.
//!
//! Logs: `RUST_LOG` filters them, and they go to stderr so stdout stays the
//! command's own output.
//!
//! Traces: when the standard OpenTelemetry variables name a collector
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`),
//! Hearth's spans (one per hop on the bus, per task, per model and tool
//! call) are exported over OTLP/HTTP — `http/protobuf` by default,
//! `http/json` when `OTEL_EXPORTER_OTLP_PROTOCOL` says so — under the
//! service name `OTEL_SERVICE_NAME` (default `hearth-<service>`). When none
//! is set nothing is exported and the spans are not even built: the layer
//! is absent and the log filter (warnings by default) disables them.
//!
//! Across processes the context travels in the bus message's headers as
//! W3C `traceparent`/`tracestate` ([`inject`] on the caller's side,
//! [`adopt`] on the server's), so a task through five processes is one
//! trace.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::bus::Headers;

/// Keeps the trace exporter alive; dropping it (or [`Telemetry::shutdown`])
/// sends what is still buffered.
#[must_use = "dropping it at once stops the trace export"]
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the buffered spans and stops exporting.
    pub fn shutdown(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Why the OTLP exporter was not started.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A protocol this build does not speak.
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL={0:?} is not supported; use \"http/protobuf\" or \"http/json\""
    )]
    Protocol(String),
    /// The exporter could not be built.
    #[error("the OTLP exporter could not start: {0}")]
    Build(String),
}

/// Whether the environment names an OTLP collector for traces.
pub fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
}

fn protocol() -> Result<Protocol, ExportError> {
    let raw = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    match raw.trim() {
        "" | "http/protobuf" => Ok(Protocol::HttpBinary),
        "http/json" => Ok(Protocol::HttpJson),
        other => Err(ExportError::Protocol(other.to_string())),
    }
}

/// The exporter's provider, when the environment asks for one.
fn provider(service: &str) -> Result<Option<SdkTracerProvider>, ExportError> {
    if !otlp_configured() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol()?)
        .build()
        .map_err(|e| ExportError::Build(e.to_string()))?;
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| service.to_string());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(name)
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

/// Installs a stderr subscriber, and the OTLP exporter when the environment
/// names a collector. `default` is the log filter when `RUST_LOG` is unset;
/// `service` is the default OpenTelemetry service name (`hearth-engine`).
/// Safe to call more than once (later calls install nothing).
pub fn init(default: &str, json: bool, service: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let (provider, problem) = match provider(service) {
        Ok(p) => (p, None),
        Err(e) => (None, Some(e)),
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("hearth"))
            // Hearth's own spans; the libraries' stay out of the trace.
            .with_filter(Targets::new().with_target("hearth", tracing::Level::INFO))
    });
    let installed = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .is_ok();
    if let Some(e) = problem {
        tracing::warn!("traces are not exported: {e}");
    }
    let provider = provider.filter(|_| installed);
    if provider.is_some() {
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Telemetry { provider }
}

struct HeaderInjector<'a>(&'a mut Headers);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value);
    }
}

struct HeaderExtractor<'a>(&'a Headers);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().collect()
    }
}

/// Whether this process exports spans (an OTLP exporter is installed).
/// When it does not, the functions below return at once: a hop pays nothing
/// for tracing it does not do.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Writes `span`'s trace context into `headers` (nothing when the span is
/// not being exported).
pub fn inject(span: &tracing::Span, headers: &mut Headers) {
    if !exporting() {
        return;
    }
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

/// Makes the trace context in `headers`, if any, the parent of `span`.
pub fn adopt(span: &tracing::Span, headers: &Headers) {
    if !exporting() || headers.get("traceparent").is_none() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(cx);
}

/// Adds an attribute to `span`'s exported span (what is known only once the
/// work is done: tokens, a tool's outcome). Nothing when not exporting.
pub fn annotate(span: &tracing::Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    if !exporting() {
        return;
    }
    span.set_attribute(key, value);
}

/// The trace id of `span` as 32 hex digits, when it is being exported.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    if !exporting() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_tracer_nothing_is_injected_and_a_bad_header_is_ignored() {
        let span = tracing::info_span!("t");
        let mut h = Headers::new();
        inject(&span, &mut h);
        assert!(h.is_empty(), "{h:?}");
        let mut bad = Headers::new();
        bad.insert("traceparent", "not-a-trace");
        adopt(&span, &bad);
        assert_eq!(trace_id(&span), None);
    }
}
