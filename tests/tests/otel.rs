//! One trace per task across processes: five `hearth serve` processes over
//! a real nats-server export their spans over OTLP/HTTP to a receiver this
//! test runs, and the task's spans — from the CLI and from every service —
//! share one trace id, carried between processes in the bus messages'
//! `traceparent` headers. (The model is the scripted test double: this is
//! about the mesh, not the answer.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use hearth_e2e::{HearthProcess, NatsServer, hearth, unique_prefix};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;

/// One exported span: its process's service name, trace id, name and
/// attribute keys.
#[derive(Debug, Clone)]
struct Seen {
    service: String,
    trace: String,
    name: String,
    attributes: BTreeMap<String, String>,
}

type Store = Arc<Mutex<Vec<Seen>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

async fn receive(State(store): State<Store>, body: Bytes) -> Vec<u8> {
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
    let mut seen = store.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                seen.push(Seen {
                    service: service.clone(),
                    trace: hex(&span.trace_id),
                    name: span.name,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                });
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

#[tokio::test]
async fn a_task_through_five_processes_over_nats_is_one_trace() {
    // The OTLP/HTTP receiver.
    let store: Store = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let nats = NatsServer::start().await.unwrap();
    let prefix = unique_prefix("otel");
    let env = [
        ("HEARTH_NATS_URL", nats.url.as_str()),
        ("HEARTH_SUBJECT_PREFIX", prefix.as_str()),
        ("HEARTH_ENGINE_BACKEND", "scripted"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        // Export within a fraction of a second, not the default 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let parts = [
        "engine",
        "toolhost",
        "learning",
        "operative",
        "orchestrator",
    ];
    let mut procs = Vec::new();
    for part in parts {
        procs.push(HearthProcess::serve(part, &env).await.unwrap());
    }
    let (code, out, err) = hearth(
        &["ask", "What is 17*23+4?", "--json"],
        &env,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["answer"].as_str().unwrap().contains("395"), "{v}");
    let trace = v["trace_id"]
        .as_str()
        .expect("`hearth ask --json` names the task's trace when exporting")
        .to_string();
    assert_eq!(trace.len(), 32, "{trace}");

    // Every service's spans of this task arrive under the one trace id.
    let want: BTreeSet<String> = parts
        .iter()
        .map(|p| format!("hearth-{p}"))
        .chain(["hearth-cli".to_string()])
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans: Vec<Seen> = store
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace == trace)
            .cloned()
            .collect();
        let services: BTreeSet<String> = spans.iter().map(|s| s.service.clone()).collect();
        if want.is_subset(&services) {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans of trace {trace} came only from {services:?}, not all of {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let named = |service: &str, name: &str| {
        spans
            .iter()
            .any(|s| s.service == service && s.name.contains(name))
    };
    // The hops and the work, each from the service that did it.
    assert!(named("hearth-cli", "hearth ask"), "{spans:#?}");
    assert!(
        named("hearth-orchestrator", "orchestrator.send_task"),
        "{spans:#?}"
    );
    assert!(
        named("hearth-operative", "operative.send_task"),
        "{spans:#?}"
    );
    assert!(
        named("hearth-operative", "tool calculator.evaluate"),
        "{spans:#?}"
    );
    assert!(named("hearth-toolhost", "toolhost.call_tool"), "{spans:#?}");
    assert!(named("hearth-engine", "engine.generate"), "{spans:#?}");
    assert!(named("hearth-learning", "learning.record"), "{spans:#?}");
    let generate = spans
        .iter()
        .find(|s| s.service == "hearth-engine" && s.name.contains("generate"))
        .unwrap();
    assert_eq!(
        generate.attributes["gen_ai.system"], "scripted",
        "{generate:?}"
    );
    assert!(
        generate
            .attributes
            .contains_key("gen_ai.usage.input_tokens"),
        "{generate:?}"
    );
    let tool = spans
        .iter()
        .find(|s| s.service == "hearth-toolhost" && s.name.contains("call_tool"))
        .unwrap();
    assert_eq!(
        tool.attributes["hearth.tool"], "calculator.evaluate",
        "{tool:?}"
    );
    assert_eq!(tool.attributes["hearth.tool.outcome"], "ok", "{tool:?}");
    for p in procs {
        p.kill().await;
    }
}
