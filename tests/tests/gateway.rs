//! The gateway's A2A JSON-RPC endpoint: a task end to end, lookups, errors
//! by the book for malformed requests, and the token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::sync::Arc;

use hearth_e2e::{test_config, unique_prefix};
use hearth_launch::{Part, start};
use hearth_mesh::{LocalBus, Secret, SharedBus};
use serde_json::{Value, json};

async fn gateway(token: Option<&str>) -> (hearth_launch::Mesh, String) {
    let mut config = test_config(&unique_prefix("gw"));
    config.gateway.addr = "127.0.0.1:0".into();
    config.gateway.max_body_bytes = 64 * 1024;
    if let Some(t) = token {
        config.gateway.token = Secret::new(t);
    }
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus, &Part::ALL).await.unwrap();
    let url = format!("http://{}", mesh.gateway.unwrap());
    (mesh, url)
}

async fn rpc(url: &str, body: String, token: Option<&str>) -> (u16, Value) {
    hearth_e2e::a2a_rpc(
        &format!("{url}/"),
        body,
        token,
        std::time::Duration::from_secs(120),
    )
    .await
}

fn send(text: &str) -> String {
    json!({
        "jsonrpc": "2.0", "id": "a",
        "method": "SendMessage",
        "params": { "message": { "messageId": "m-1", "role": "ROLE_USER", "parts": [{ "text": text }] } }
    })
    .to_string()
}

#[tokio::test]
async fn send_message_then_get_task_over_a2a_jsonrpc() {
    let (mesh, url) = gateway(None).await;
    let (status, v) = rpc(&url, send("What is 17*23+4?"), None).await;
    assert_eq!(status, 200);
    let task = &v["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{v}");
    let answer = task["artifacts"][0]["parts"][0]["text"].as_str().unwrap();
    assert!(answer.contains("395"), "{answer}");
    let id = task["id"].as_str().unwrap().to_string();

    let get = json!({ "jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": { "id": id, "historyLength": 1 } });
    let (_, v) = rpc(&url, get.to_string(), None).await;
    assert_eq!(v["result"]["id"], id.as_str(), "{v}");
    assert_eq!(v["result"]["status"]["state"], "TASK_STATE_COMPLETED");
    assert_eq!(v["result"]["history"].as_array().map(Vec::len), Some(1));

    let missing = json!({ "jsonrpc": "2.0", "id": 3, "method": "GetTask", "params": { "id": "no-such-task" } });
    let (_, v) = rpc(&url, missing.to_string(), None).await;
    assert_eq!(v["error"]["code"], -32001, "{v}");
    mesh.shutdown().await;
}

#[tokio::test]
async fn malformed_a2a_requests_get_jsonrpc_errors() {
    let (mesh, url) = gateway(None).await;
    let (_, v) = rpc(&url, "{not json".into(), None).await;
    assert_eq!(v["error"]["code"], -32700, "{v}");
    let (_, v) = rpc(&url, json!({ "id": 1, "method": 5 }).to_string(), None).await;
    assert_eq!(v["error"]["code"], -32600, "{v}");
    let (_, v) = rpc(
        &url,
        json!({ "jsonrpc": "2.0", "id": 1, "method": "Frobnicate", "params": {} }).to_string(),
        None,
    )
    .await;
    assert_eq!(v["error"]["code"], -32601, "{v}");
    let (_, v) = rpc(
        &url,
        json!({ "jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": { "message": 7 } })
            .to_string(),
        None,
    )
    .await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    // Oversize bodies are refused, not buffered.
    let (status, _) = rpc(&url, send(&"x".repeat(200 * 1024)), None).await;
    assert_eq!(status, 413);
    // And the gateway still works.
    let (_, v) = rpc(&url, send("What is 1+2?"), None).await;
    assert_eq!(
        v["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED",
        "{v}"
    );
    mesh.shutdown().await;
}

#[tokio::test]
async fn a_configured_token_is_required_but_the_card_stays_public() {
    let (mesh, url) = gateway(Some("s3cret")).await;
    let (status, _) = rpc(&url, send("What is 1+2?"), None).await;
    assert_eq!(status, 401);
    let (status, _) = rpc(&url, send("What is 1+2?"), Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, v) = rpc(&url, send("What is 1+2?"), Some("s3cret")).await;
    assert_eq!(status, 200);
    assert_eq!(
        v["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED",
        "{v}"
    );

    let card: Value = reqwest::get(format!("{url}/.well-known/agent-card.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(card["name"], "Hearth");
    assert_eq!(card["supportedInterfaces"][0]["protocolBinding"], "JSONRPC");
    assert!(card["securitySchemes"]["bearer"].is_object(), "{card}");
    assert!(!card.to_string().contains("s3cret"));
    mesh.shutdown().await;
}

#[tokio::test]
async fn failed_token_attempts_are_limited_per_address_and_the_rest_of_the_gateway_is_undisturbed()
{
    let (mesh, url) = gateway(Some("s3cret")).await;
    // Ten wrong tokens in a minute (the default) are each refused 401…
    for i in 0..10 {
        let (status, _) = rpc(&url, send("What is 1+2?"), Some(&format!("guess-{i}"))).await;
        assert_eq!(status, 401, "attempt {i}");
    }
    // …then this address is refused 429, right token or not, saying when
    // to come back.
    let resp = reqwest::Client::new()
        .post(format!("{url}/"))
        .header("A2A-Version", "1.0")
        .header("Content-Type", "application/json")
        .bearer_auth("s3cret")
        .body(send("What is 1+2?"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(resp.text().await.unwrap().contains("too many requests"));
    // The agent card stays public.
    let card = reqwest::get(format!("{url}/.well-known/agent-card.json"))
        .await
        .unwrap();
    assert_eq!(card.status().as_u16(), 200);
    mesh.shutdown().await;
}

/// The value of the sample `name{…labels…}` whose labels include all of
/// `want`, from Prometheus text.
fn sample(text: &str, name: &str, want: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| want.iter().all(|w| l.contains(w)))
        .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
}

#[tokio::test]
async fn the_gateway_metrics_cover_the_in_process_mesh_behind_the_token() {
    let (mesh, url) = gateway(Some("m3trics")).await;
    let get = |token: Option<&'static str>| {
        let url = url.clone();
        async move {
            let mut rb = reqwest::Client::new().get(format!("{url}/metrics"));
            if let Some(t) = token {
                rb = rb.bearer_auth(t);
            }
            let resp = rb.send().await.unwrap();
            let status = resp.status().as_u16();
            let ctype = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (status, ctype, resp.text().await.unwrap())
        }
    };
    assert_eq!(get(None).await.0, 401, "metrics are behind the token");
    assert_eq!(get(Some("wrong")).await.0, 401);
    let (_, _, before) = get(Some("m3trics")).await;
    let completed =
        |t: &str| sample(t, "hearth_tasks_total", &["state=\"completed\""]).unwrap_or(0.0);
    let calc = |t: &str| {
        sample(
            t,
            "hearth_tool_calls_total",
            &["tool=\"calculator.evaluate\"", "outcome=\"ok\""],
        )
        .unwrap_or(0.0)
    };
    let (status, v) = rpc(&url, send("What is 17*23+4?"), Some("m3trics")).await;
    assert_eq!(status, 200);
    assert_eq!(
        v["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED",
        "{v}"
    );
    let (status, ctype, after) = get(Some("m3trics")).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    // The metrics are the process's: tests beside this one add to them, so
    // only growth is checked. A task through the orchestrator and an
    // operative ends twice (the subtask too).
    assert!(completed(&after) >= completed(&before) + 2.0, "{after}");
    assert!(calc(&after) >= calc(&before) + 1.0, "{after}");
    for (service, method) in [("engine", "generate"), ("toolhost", "call_tool")] {
        let n = sample(
            &after,
            "hearth_hop_duration_seconds_count",
            &[
                &format!("service=\"{service}\""),
                &format!("method=\"{method}\""),
            ],
        );
        assert!(
            n.is_some_and(|n| n >= 1.0),
            "no {service}.{method} hops in:\n{after}"
        );
    }
    assert!(
        sample(
            &after,
            "hearth_model_tokens_total",
            &["direction=\"input\""]
        )
        .is_some_and(|n| n > 0.0),
        "{after}"
    );
    assert!(after.contains("hearth_requests_in_flight"), "{after}");
    assert!(after.trim_end().ends_with("# EOF"));
    mesh.shutdown().await;
}
