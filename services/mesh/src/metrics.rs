//! Prometheus metrics of this process: what `/metrics` shows.
//!
//! One registry per process. In the embedded default every service runs in
//! one process, so it covers the whole mesh; over NATS each `hearth serve`
//! process has its own (`--metrics-addr`). Recorded where the work happens:
//! every serving loop counts its hops and their latency, the agent services
//! count tasks by final state, the toolhost counts tool calls by tool and
//! outcome, the engine counts tokens and cost by backend. Requests in flight
//! (taken and not yet answered) are read at render time.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn hop_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

struct Metrics {
    registry: Registry,
    hops: Family<Labels, Histogram, fn() -> Histogram>,
    tasks: Family<Labels, Counter>,
    tools: Family<Labels, Counter>,
    tokens: Family<Labels, Counter>,
    cost: Family<Labels, Counter<f64, AtomicU64>>,
    routed: Family<Labels, Counter>,
    in_flight: Gauge<i64, AtomicI64>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("hearth");
        let hops = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            hop_histogram as fn() -> Histogram,
        );
        registry.register(
            "hop_duration_seconds",
            "Requests served on the bus, by service and method, and how long each took",
            hops.clone(),
        );
        let tasks = Family::<Labels, Counter>::default();
        registry.register("tasks", "Tasks that ended, by final state", tasks.clone());
        let tools = Family::<Labels, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls at the toolhost, by tool and outcome",
            tools.clone(),
        );
        let tokens = Family::<Labels, Counter>::default();
        registry.register(
            "model_tokens",
            "Model tokens, by backend and direction (input, output)",
            tokens.clone(),
        );
        let cost = Family::<Labels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "model_cost_usd",
            "Dollar cost of model calls, by backend",
            cost.clone(),
        );
        let routed = Family::<Labels, Counter>::default();
        registry.register(
            "routed_requests",
            "Model requests by the routing's choice: backend, whether it is local, and why (policy, sensitive, budget, fallback, escalated)",
            routed.clone(),
        );
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "requests_in_flight",
            "Requests this process has taken and not yet answered (its queue depth)",
            in_flight.clone(),
        );
        Metrics {
            registry,
            hops,
            tasks,
            tools,
            tokens,
            cost,
            routed,
            in_flight,
        }
    })
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// The histogram of one service's method, where each request served is
/// observed with its duration. A serving loop whose subject names one
/// method looks it up once, not per request (the lookup allocates its
/// labels).
pub fn hops(service: &str, method: &str) -> Histogram {
    metrics()
        .hops
        .get_or_create(&labels(&[("service", service), ("method", method)]))
        .clone()
}

/// A task that ended its turn in `state` (an A2A `TaskState`), counted as
/// `completed`, `failed`, `canceled`, `input_required`, ….
pub fn task_ended(state: i32) {
    let name = crate::a2a::state_name(state)
        .trim_start_matches("TASK_STATE_")
        .to_ascii_lowercase();
    metrics()
        .tasks
        .get_or_create(&labels(&[("state", &name)]))
        .inc();
}

/// A tool call at the toolhost and how it went (`ok`, `tool_error`,
/// `failed`, `refused`).
pub fn tool_call(tool: &str, outcome: &str) {
    metrics()
        .tools
        .get_or_create(&labels(&[("tool", tool), ("outcome", outcome)]))
        .inc();
}

/// One model call's tokens and cost (unknown cost: not counted).
pub fn model_call(backend: &str, tokens_in: u64, tokens_out: u64, cost_usd: Option<f64>) {
    let m = metrics();
    m.tokens
        .get_or_create(&labels(&[("backend", backend), ("direction", "input")]))
        .inc_by(tokens_in);
    m.tokens
        .get_or_create(&labels(&[("backend", backend), ("direction", "output")]))
        .inc_by(tokens_out);
    if let Some(c) = cost_usd.filter(|c| c.is_finite() && *c >= 0.0) {
        m.cost
            .get_or_create(&labels(&[("backend", backend)]))
            .inc_by(c);
    }
}

/// One model request as the engine's routing sent it: to `backend`
/// (local or not) because of `why`.
pub fn routed(backend: &str, local: bool, why: &str) {
    metrics()
        .routed
        .get_or_create(&labels(&[
            ("backend", backend),
            ("local", if local { "true" } else { "false" }),
            ("why", why),
        ]))
        .inc();
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// This process's metrics in the OpenMetrics text format.
pub fn render() -> String {
    let m = metrics();
    m.in_flight
        .set(i64::try_from(crate::rpc::in_flight()).unwrap_or(i64::MAX));
    let mut out = String::new();
    if encode(&mut out, &m.registry).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_are_rendered_with_their_labels() {
        hops("engine", "generate").observe(0.25);
        task_ended(hearth_proto::a2a::TaskState::Completed as i32);
        tool_call("calculator.evaluate", "ok");
        model_call("llama.cpp", 120, 7, Some(0.5));
        let text = render();
        for want in [
            "hearth_hop_duration_seconds_count{",
            "service=\"engine\"",
            "method=\"generate\"",
            "hearth_tasks_total{state=\"completed\"}",
            "hearth_tool_calls_total{",
            "tool=\"calculator.evaluate\"",
            "hearth_model_tokens_total{",
            "direction=\"input\"",
            "hearth_model_cost_usd_total{backend=\"llama.cpp\"}",
            "hearth_requests_in_flight",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }
}
