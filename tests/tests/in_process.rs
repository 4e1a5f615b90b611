//! The spine in one process: orchestrator → operative → engine (the scripted
//! double decides to call the tool) → toolhost → calculator MCP server (a
//! real child process over stdio) → back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_e2e::{hearth, test_config, unique_prefix};
use hearth_launch::{Part, ask, start};
use hearth_mesh::clients::ToolhostClient;
use hearth_mesh::{LocalBus, SharedBus};
use hearth_proto::v1::CallToolRequest;
use tonic::Code;

const MOST: [Part; 4] = [
    Part::Engine,
    Part::Toolhost,
    Part::Operative,
    Part::Orchestrator,
];

#[tokio::test]
async fn calculator_question_travels_the_whole_mesh_in_process() {
    let config = test_config(&unique_prefix("inproc"));
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus.clone(), &MOST).await.unwrap();
    let progress = std::sync::Mutex::new(Vec::new());
    let answer = ask(&config, bus, "What is 17*23+4?", &|p| {
        progress.lock().unwrap().push(p.to_string())
    })
    .await
    .unwrap();
    mesh.shutdown().await;
    assert!(answer.completed(), "{answer:?}");
    assert!(answer.answer.contains("395"), "{}", answer.answer);
    // One model call by the orchestrator (delegate; the operative's answer is
    // passed on as it is), two by the operative (tool, answer).
    assert_eq!(answer.usage.model_calls, 3);
    assert!(answer.usage.tokens_in > 0 && answer.usage.latency_ms > 0.0);
    let progress = progress.into_inner().unwrap().join("\n");
    assert!(progress.contains("calling hearth.delegate"), "{progress}");
    assert!(
        progress.contains("calling calculator.evaluate"),
        "{progress}"
    );
}

#[tokio::test]
async fn hearth_ask_json_prints_answer_task_id_and_usage() {
    let (code, out, err) = hearth(
        &["ask", "What is 17*23+4?", "--json"],
        &[("HEARTH_ENGINE_BACKEND", "scripted")],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "stderr: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["answer"].as_str().unwrap().contains("395"), "{v}");
    assert!(!v["task_id"].as_str().unwrap().is_empty());
    assert_eq!(v["state"], "TASK_STATE_COMPLETED");
    assert!(v["usage"]["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(v["usage"]["tokens_in"].as_u64().unwrap() > 0);
    assert!(v["usage"]["tokens_out"].as_u64().unwrap() > 0);
    // Not measured, so not invented.
    assert!(v["usage"]["energy_joules"].is_null());
}

#[tokio::test]
async fn hearth_ask_without_an_engine_url_says_how_to_fix_it() {
    let (code, _out, err) = hearth(
        &["ask", "hi"],
        &[("HEARTH_ENGINE_BACKEND", "openai")],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("HEARTH_ENGINE_URL"), "{err}");
}

#[tokio::test]
async fn unknown_tool_is_a_clear_not_found() {
    let config = test_config(&unique_prefix("unknown"));
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus.clone(), &[Part::Toolhost])
        .await
        .unwrap();
    let th = ToolhostClient::new(bus, config.subjects(), Duration::from_secs(10));
    let err = th
        .call_tool(&CallToolRequest {
            name: "nosuch.tool".into(),
            arguments_json: "{}".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    mesh.shutdown().await;
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("nosuch.tool") && err.message().contains("calculator.evaluate"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn malformed_expression_and_arguments_are_clear_errors() {
    let config = test_config(&unique_prefix("malformed"));
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus.clone(), &[Part::Toolhost])
        .await
        .unwrap();
    let th = ToolhostClient::new(bus, config.subjects(), Duration::from_secs(10));
    let r = th
        .call_tool(&CallToolRequest {
            name: "calculator.evaluate".into(),
            arguments_json: r#"{"expression":"17*/+"}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.is_error);
    assert!(r.content.contains("17*/+"), "{}", r.content);
    let bad = th
        .call_tool(&CallToolRequest {
            name: "calculator.evaluate".into(),
            arguments_json: "[1,2".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    // The server is still fine afterwards.
    let ok = th
        .call_tool(&CallToolRequest {
            name: "calculator.evaluate".into(),
            arguments_json: r#"{"expression":"2^10"}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    mesh.shutdown().await;
    assert_eq!(ok.content, "1024");
}

#[tokio::test]
async fn with_no_operative_running_the_task_fails_clearly_and_quickly() {
    let config = test_config(&unique_prefix("noop"));
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(
        &config,
        bus.clone(),
        &[Part::Engine, Part::Toolhost, Part::Orchestrator],
    )
    .await
    .unwrap();
    let t = Instant::now();
    let answer = ask(&config, bus, "What is 17*23+4?", &|_| {})
        .await
        .unwrap();
    mesh.shutdown().await;
    assert_eq!(answer.state, "TASK_STATE_FAILED", "{answer:?}");
    assert!(
        answer.answer.contains("no service is listening"),
        "{}",
        answer.answer
    );
    assert!(answer.answer.contains("operative"), "{}", answer.answer);
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn with_no_orchestrator_ask_is_unavailable_not_a_hang() {
    let config = test_config(&unique_prefix("noorch"));
    let bus: SharedBus = Arc::new(LocalBus::default());
    let err = ask(&config, bus, "hi", &|_| {}).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("no service is listening") && msg.contains("orchestrator.send_task"),
        "{msg}"
    );
}

#[tokio::test]
async fn hearth_batch_runs_a_file_in_process_and_a_second_run_redoes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("q.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"a\", \"prompt\": \"What is 17*23+4?\"}\n\"What is 6*7?\"\nWhat is 2*21?\n",
    )
    .unwrap();
    let env = [
        ("HEARTH_ENGINE_BACKEND", "scripted"),
        ("HEARTH_DATA_DIR", dir.path().to_str().unwrap()),
    ];
    let (code, out, err) = hearth(
        &["batch", input.to_str().unwrap(), "--json"],
        &env,
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{out} {err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["completed"], 3, "{summary}");
    assert_eq!(summary["durable"], false, "{summary}");
    let results = std::fs::read_to_string(dir.path().join("q.results.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = results
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{results}");
    for (id, want) in [("a", "395"), ("2", "42"), ("3", "42")] {
        let row = rows.iter().find(|r| r["id"] == id).unwrap();
        assert!(row["answer"].as_str().unwrap().contains(want), "{row}");
        assert_eq!(row["state"], "TASK_STATE_COMPLETED");
    }
    // Run again: every line is there already, so nothing is redone.
    let (code, out, err) = hearth(
        &["batch", input.to_str().unwrap(), "--json"],
        &env,
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{out} {err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["already_done"], 3, "{summary}");
    assert_eq!(summary["completed"], 0, "{summary}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("q.results.jsonl")).unwrap(),
        results
    );
}
