//! The engine pointed at a real OpenAI-compatible HTTP server started by the
//! test, so the HTTP backend, SSE streaming and tool-call parsing run for real.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_e2e::openai_double::{Mode, OpenAiDouble};
use hearth_e2e::{hearth, test_config, unique_prefix};
use hearth_launch::{Part, ask, start};
use hearth_mesh::{LocalBus, SharedBus};

const MOST: [Part; 4] = [
    Part::Engine,
    Part::Toolhost,
    Part::Operative,
    Part::Orchestrator,
];

#[tokio::test]
async fn openai_backend_streams_and_parses_tool_calls() {
    let double = OpenAiDouble::start(Mode::Normal).await.unwrap();
    let mut config = test_config(&unique_prefix("openai"));
    config.engine.backend = hearth_mesh::config::BackendKind::Openai;
    config.engine.url = Some(double.base_url.clone());
    config.engine.model = "double-model".into();
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus.clone(), &MOST).await.unwrap();
    let answer = ask(&config, bus, "What is 17*23+4?", &|_| {})
        .await
        .unwrap();
    mesh.shutdown().await;
    assert!(answer.completed(), "{answer:?}");
    assert!(answer.answer.contains("395"), "{}", answer.answer);
    // Usage came from the server's own usage chunks: 11 in / 5 out per call,
    // three calls (the orchestrator passes the operative's answer on).
    assert_eq!(answer.usage.model_calls, 3);
    assert_eq!(answer.usage.tokens_in, 33);
    assert_eq!(answer.usage.tokens_out, 15);
    assert_eq!(answer.usage.model, "double-model");

    let reqs = double.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter()
            .all(|r| r["stream"] == true && r["model"] == "double-model")
    );
    let offered: Vec<String> = reqs
        .iter()
        .flat_map(|r| r["tools"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["function"]["name"].as_str().map(str::to_string))
        .collect();
    assert!(
        offered.contains(&"calculator__evaluate".to_string()),
        "{offered:?}"
    );
    assert!(
        offered.contains(&"hearth__delegate".to_string()),
        "{offered:?}"
    );
    // The tool result went back to the model with the call it answers.
    let fed_back = reqs.iter().any(|r| {
        r["messages"].as_array().is_some_and(|ms| {
            ms.iter().any(|m| {
                m["role"] == "tool" && m["content"] == "395" && m["tool_call_id"] == "call_1"
            })
        })
    });
    assert!(fed_back, "no request carried the tool result: {reqs:#?}");
}

#[tokio::test]
async fn hearth_ask_against_an_openai_server_from_the_cli() {
    let double = OpenAiDouble::start(Mode::Normal).await.unwrap();
    let (code, out, err) = hearth(
        &["ask", "What is 17*23+4?", "--json"],
        &[
            ("HEARTH_ENGINE_BACKEND", "openai"),
            ("HEARTH_ENGINE_URL", &double.base_url),
            ("HEARTH_ENGINE_MODEL", "m"),
        ],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["answer"].as_str().unwrap().contains("395"), "{v}");
}

#[tokio::test]
async fn an_engine_that_never_answers_fails_the_task_at_its_deadline() {
    let double = OpenAiDouble::start(Mode::Hang).await.unwrap();
    let mut config = test_config(&unique_prefix("hang"));
    config.engine.backend = hearth_mesh::config::BackendKind::Openai;
    config.engine.url = Some(double.base_url.clone());
    config.engine.timeout_ms = 500;
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus.clone(), &MOST).await.unwrap();
    let t = Instant::now();
    let answer = ask(&config, bus, "What is 17*23+4?", &|_| {})
        .await
        .unwrap();
    mesh.shutdown().await;
    assert_eq!(answer.state, "TASK_STATE_FAILED", "{answer:?}");
    assert!(
        answer.answer.contains("did not answer within"),
        "{}",
        answer.answer
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[tokio::test]
async fn an_engine_that_is_not_there_fails_the_task_clearly() {
    let mut config = test_config(&unique_prefix("noengine"));
    config.engine.backend = hearth_mesh::config::BackendKind::Openai;
    config.engine.url = Some(format!("http://127.0.0.1:{}/v1", hearth_e2e::free_port()));
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus.clone(), &MOST).await.unwrap();
    let answer = ask(&config, bus, "What is 2+2?", &|_| {}).await.unwrap();
    mesh.shutdown().await;
    assert_eq!(answer.state, "TASK_STATE_FAILED");
    assert!(answer.answer.contains("unreachable"), "{}", answer.answer);
}
