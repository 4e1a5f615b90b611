//! The engine on Ollama's native API (`/api/chat`, NDJSON streaming), served
//! by an HTTP double the test starts: the whole spine with the ollama
//! backend, and the wire it speaks checked from the server's side.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::sync::Arc;

use hearth_e2e::openai_double::{Mode, OpenAiDouble};
use hearth_e2e::{test_config, unique_prefix};
use hearth_launch::{Part, ask, start};
use hearth_mesh::{LocalBus, SharedBus};

#[tokio::test]
async fn ollama_backend_answers_with_tool_calls_over_ndjson() {
    let double = OpenAiDouble::start(Mode::Normal).await.unwrap();
    let mut config = test_config(&unique_prefix("ollama"));
    config.engine.backend = hearth_mesh::config::BackendKind::Ollama;
    config.engine.url = Some(double.root_url.clone());
    config.engine.model = "llama3.2".into();
    let bus: SharedBus = Arc::new(LocalBus::default());
    let parts = [
        Part::Engine,
        Part::Toolhost,
        Part::Operative,
        Part::Orchestrator,
    ];
    let mesh = start(&config, bus.clone(), &parts).await.unwrap();
    let answer = ask(&config, bus, "What is 17*23+4?", &|_| {})
        .await
        .unwrap();
    mesh.shutdown().await;
    assert!(answer.completed(), "{answer:?}");
    assert!(answer.answer.contains("395"), "{}", answer.answer);
    // Usage from the `done` lines: 13 in / 6 out per call, three calls (the
    // orchestrator passes the operative's answer on without a fourth).
    assert_eq!(answer.usage.model_calls, 3);
    assert_eq!((answer.usage.tokens_in, answer.usage.tokens_out), (39, 18));
    assert_eq!(answer.usage.model, "llama3.2");

    let reqs = double.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter()
            .all(|r| r["stream"] == true && r["model"] == "llama3.2")
    );
    // The tool result went back as a `tool` turn naming its tool, and the
    // call before it carried its arguments as an object.
    let fed_back = reqs.iter().any(|r| {
        r["messages"].as_array().is_some_and(|ms| {
            ms.iter().any(|m| {
                m["role"] == "tool"
                    && m["content"] == "395"
                    && m["tool_name"] == "calculator__evaluate"
            }) && ms
                .iter()
                .any(|m| m["tool_calls"][0]["function"]["arguments"]["expression"] == "17*23+4")
        })
    });
    assert!(fed_back, "no request carried the tool turn: {reqs:#?}");
}

#[tokio::test]
async fn an_ollama_that_is_not_there_is_a_clear_error() {
    let mut config = test_config(&unique_prefix("ollama-dead"));
    config.engine.backend = hearth_mesh::config::BackendKind::Ollama;
    config.engine.url = Some(format!("http://127.0.0.1:{}", hearth_e2e::free_port()));
    config.engine.model = "llama3.2".into();
    let bus: SharedBus = Arc::new(LocalBus::default());
    let parts = [
        Part::Engine,
        Part::Toolhost,
        Part::Operative,
        Part::Orchestrator,
    ];
    let mesh = start(&config, bus.clone(), &parts).await.unwrap();
    let answer = ask(&config, bus, "What is 2+2?", &|_| {}).await.unwrap();
    mesh.shutdown().await;
    assert_eq!(answer.state, "TASK_STATE_FAILED");
    assert!(answer.answer.contains("unreachable"), "{}", answer.answer);
}
