//! Routing and budgets, enforced in the engine: the whole mesh in one
//! process with `[engine]` and one `[[engine.remote]]` pointed at two
//! stand-in OpenAI-compatible servers (test doubles that follow fixed rules
//! and record every request they receive — these tests are about where
//! requests go, not about inference).
//!
//! The remote `cloud` is priced so that a call's worst case equals its real
//! cost (input free, 5 output tokens at most, and the double always reports
//! 5): each remote call reserves and then spends exactly $0.005, so a budget
//! of N × $0.005 lets exactly N remote calls through.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::sync::Arc;
use std::time::Duration;

use hearth_e2e::openai_double::{Mode, OpenAiDouble};
use hearth_e2e::{hearth, test_config, unique_prefix};
use hearth_launch::{Answer, Part, ask_task, mark_sensitive, new_task, start};
use hearth_mesh::config::{BackendKind, RemoteBackend, RoutePolicy};
use hearth_mesh::{Config, LocalBus, SharedBus};

const MOST: [Part; 4] = [
    Part::Engine,
    Part::Toolhost,
    Part::Operative,
    Part::Orchestrator,
];

const CALL_USD: f64 = 0.005;

/// `[engine]` on `local`, the remote `cloud` on `cloud` (not local), the
/// ledger in its own data directory.
fn routed(
    prefix: &str,
    local: &str,
    cloud: &str,
    policy: RoutePolicy,
) -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(&unique_prefix(prefix));
    c.data_dir = Some(dir.path().to_path_buf());
    c.engine.backend = BackendKind::Openai;
    c.engine.url = Some(local.to_string());
    c.engine.model = "local-model".into();
    c.engine.remote = vec![RemoteBackend {
        name: "cloud".into(),
        url: cloud.to_string(),
        model: "cloud-model".into(),
        input_usd_per_mtok: Some(0.0),
        output_usd_per_mtok: Some(CALL_USD * 1e6 / 5.0),
        max_tokens: Some(5),
        local: Some(false),
        ..Default::default()
    }];
    c.routing.policy = policy;
    c.routing.remote = Some("cloud".into());
    c.check_routing().unwrap();
    (c, dir)
}

async fn run(config: &Config, bus: SharedBus, question: &str, sensitive: bool) -> Answer {
    let mut task = new_task(question);
    if sensitive {
        mark_sensitive(&mut task);
    }
    ask_task(config, bus, &task, &|_| {}).await.unwrap()
}

#[tokio::test]
async fn cloud_first_sends_ordinary_work_out_and_keeps_sensitive_work_home() {
    let local = OpenAiDouble::start(Mode::Normal).await.unwrap();
    let cloud = OpenAiDouble::start(Mode::Normal).await.unwrap();
    let (config, _dir) = routed(
        "cloudfirst",
        &local.base_url,
        &cloud.base_url,
        RoutePolicy::CloudFirst,
    );
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus.clone(), &MOST).await.unwrap();

    // An ordinary task goes to the cloud: all three model calls.
    let a = run(&config, bus.clone(), "What is 17*23+4?", false).await;
    assert!(a.completed() && a.answer.contains("395"), "{a:?}");
    assert_eq!((cloud.requests().len(), local.requests().len()), (3, 0));
    assert!(cloud.requests().iter().all(|r| r["model"] == "cloud-model"));
    assert_eq!(a.usage.route, "cloud: policy", "{:?}", a.usage);
    assert!(!a.usage.sensitive);
    // Priced by the remote's own prices: 3 calls × $0.005.
    assert!(
        (a.usage.cost_usd.unwrap() - 3.0 * CALL_USD).abs() < 1e-9,
        "{:?}",
        a.usage
    );

    // `--sensitive`: the remote is never sent anything.
    let a = run(&config, bus.clone(), "What is 2+3?", true).await;
    assert!(a.completed() && a.answer.contains('5'), "{a:?}");
    assert_eq!(
        cloud.requests().len(),
        3,
        "a sensitive task reached the remote"
    );
    assert_eq!(local.requests().len(), 3);
    assert!(a.usage.sensitive);
    assert_eq!(a.usage.route, "local: sensitive");

    // An API key pasted into a prompt keeps that task local, subtask too
    // (the subtask's own text holds no key: its root task is tainted).
    let a = run(
        &config,
        bus.clone(),
        "My key is sk-proj-Zx81kLmNoPqRsTuVwXyZ01; what is 6*7?",
        false,
    )
    .await;
    assert!(a.completed() && a.answer.contains("42"), "{a:?}");
    assert_eq!(
        cloud.requests().len(),
        3,
        "a task holding a key reached the remote"
    );
    assert_eq!(local.requests().len(), 6);
    assert!(a.usage.sensitive);
    mesh.shutdown().await;
}

#[tokio::test]
async fn a_spent_day_budget_sends_nothing_more_even_after_a_restart() {
    let local = OpenAiDouble::start(Mode::Normal).await.unwrap();
    let cloud = OpenAiDouble::start(Mode::Normal).await.unwrap();
    let (mut config, dir) = routed(
        "budget",
        &local.base_url,
        &cloud.base_url,
        RoutePolicy::CloudFirst,
    );
    // Two remote calls' worth.
    config.budget.usd_per_day = Some(2.0 * CALL_USD);
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus.clone(), &MOST).await.unwrap();
    let a = run(&config, bus.clone(), "What is 17*23+4?", false).await;
    assert!(a.completed() && a.answer.contains("395"), "{a:?}");
    // Two calls went out; the third was not sent and was served here.
    assert_eq!((cloud.requests().len(), local.requests().len()), (2, 1));
    assert_eq!(
        a.usage.route, "cloud: policy; local: budget",
        "{:?}",
        a.usage
    );
    mesh.shutdown().await;

    // A new mesh on the same data directory: the day is still spent.
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus.clone(), &MOST).await.unwrap();
    let a = run(&config, bus.clone(), "What is 1+1?", false).await;
    assert!(a.completed(), "{a:?}");
    assert_eq!(
        cloud.requests().len(),
        2,
        "the remote was sent a request past the budget"
    );
    assert_eq!(local.requests().len(), 4);
    mesh.shutdown().await;

    // `hearth usage` tells the same story.
    let data = dir.path().to_string_lossy().to_string();
    let (code, out, err) = hearth(
        &["usage", "--json"],
        &[
            ("HEARTH_DATA_DIR", &data),
            ("HEARTH_BUDGET_USD_PER_DAY", "0.01"),
        ],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["requests"], 6, "{v}");
    assert_eq!(v["kept_local"]["by_budget"], 4, "{v}");
    let cloud_usd: f64 = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["backend"] == "cloud")
        .filter_map(|r| r["usd"].as_f64())
        .sum();
    assert!((cloud_usd - 2.0 * CALL_USD).abs() < 1e-9, "{v}");
    let day = &v["budgets"][0];
    assert_eq!(day["budget"], "usd_per_day", "{v}");
    assert!(day["left_usd"].as_f64().unwrap() < 1e-9, "{v}");
}

#[tokio::test]
async fn twenty_concurrent_tasks_racing_for_a_budget_that_fits_five_spend_at_most_it() {
    let local = OpenAiDouble::start(Mode::Normal).await.unwrap();
    let cloud = OpenAiDouble::start(Mode::Normal).await.unwrap();
    let (mut config, _dir) = routed(
        "race",
        &local.base_url,
        &cloud.base_url,
        RoutePolicy::CloudFirst,
    );
    config.budget.usd_per_day = Some(5.0 * CALL_USD);
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus.clone(), &MOST).await.unwrap();
    let asks = (0..20).map(|i| {
        let (config, bus) = (config.clone(), bus.clone());
        async move { run(&config, bus, &format!("What is {i}+1?"), false).await }
    });
    let answers = futures::future::join_all(asks).await;
    mesh.shutdown().await;
    assert!(answers.iter().all(Answer::completed), "{answers:?}");
    assert_eq!(
        cloud.requests().len(),
        5,
        "the budget fits exactly five remote calls"
    );
    assert_eq!(local.requests().len(), 60 - 5);
}

#[tokio::test]
async fn a_tasks_budget_stops_its_delegated_subtask_from_going_out() {
    let local = OpenAiDouble::start(Mode::Normal).await.unwrap();
    let cloud = OpenAiDouble::start(Mode::Normal).await.unwrap();
    let (mut config, _dir) = routed(
        "pertask",
        &local.base_url,
        &cloud.base_url,
        RoutePolicy::CloudFirst,
    );
    // The orchestrator's call and the subtask's first fit; the subtask's
    // second does not.
    config.budget.usd_per_task = Some(2.5 * CALL_USD);
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus.clone(), &MOST).await.unwrap();
    let a = run(&config, bus.clone(), "What is 17*23+4?", false).await;
    assert!(a.completed() && a.answer.contains("395"), "{a:?}");
    assert_eq!((cloud.requests().len(), local.requests().len()), (2, 1));
    // The remote saw the orchestrator's request (delegate offered) and the
    // operative's first (the calculator offered).
    let offered = |r: &serde_json::Value, suffix: &str| {
        r["tools"].as_array().is_some_and(|ts| {
            ts.iter().any(|t| {
                t["function"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(suffix))
            })
        })
    };
    let sent = cloud.requests();
    assert!(
        offered(&sent[0], "delegate") && offered(&sent[1], "evaluate"),
        "{sent:#?}"
    );
    // A second task has a budget of its own.
    let a = run(&config, bus.clone(), "What is 1+2?", false).await;
    assert!(a.completed(), "{a:?}");
    assert_eq!(cloud.requests().len(), 4);
    mesh.shutdown().await;
}

#[tokio::test]
async fn local_first_escalates_a_malformed_call_and_cloud_first_survives_a_dead_remote() {
    // The local model calls the calculator with arguments that are not an
    // object: the retry goes to the remote.
    let local = OpenAiDouble::start(Mode::Malformed).await.unwrap();
    let cloud = OpenAiDouble::start(Mode::Normal).await.unwrap();
    let (config, _dir) = routed(
        "escalate",
        &local.base_url,
        &cloud.base_url,
        RoutePolicy::LocalFirst,
    );
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus.clone(), &MOST).await.unwrap();
    let a = run(&config, bus.clone(), "What is 17*23+4?", false).await;
    mesh.shutdown().await;
    assert!(a.completed(), "{a:?}");
    assert_eq!(cloud.requests().len(), 1, "{:#?}", cloud.requests());
    assert!(a.usage.route.contains("cloud: escalated"), "{:?}", a.usage);
    // What the remote was sent: the conversation with the malformed call
    // and the error it got.
    let msgs = cloud.requests()[0]["messages"].as_array().cloned().unwrap();
    assert!(
        msgs.iter().any(|m| m["role"] == "tool"
            && m["content"]
                .as_str()
                .is_some_and(|c| c.contains("malformed"))),
        "{msgs:#?}"
    );

    // cloud-first with the remote gone: served here, and said so.
    let local = OpenAiDouble::start(Mode::Normal).await.unwrap();
    let dead = format!("http://127.0.0.1:{}/v1", hearth_e2e::free_port());
    let (config, _dir) = routed(
        "deadremote",
        &local.base_url,
        &dead,
        RoutePolicy::CloudFirst,
    );
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus.clone(), &MOST).await.unwrap();
    let a = run(&config, bus.clone(), "What is 17*23+4?", false).await;
    mesh.shutdown().await;
    assert!(a.completed() && a.answer.contains("395"), "{a:?}");
    assert_eq!(local.requests().len(), 3);
    assert_eq!(a.usage.route, "local: fallback", "{:?}", a.usage);
}

#[tokio::test]
async fn bad_routing_configuration_is_refused_at_start_with_a_clear_message() {
    for (toml, says) in [
        (
            "[routing]\npolicy = \"cloud-first\"\nremote = \"nowhere\"\n",
            "names no [[engine.remote]]",
        ),
        ("[budget]\nusd_per_day = -1\n", "0 or more"),
        ("[routing]\npolicy = \"sometimes\"\n", "local-only"),
        ("[routing]\npolicy = \"cloud-first\"\n", "needs a remote"),
        (
            "[routing]\nsensitive_patterns = [\"(unclosed\"]\n",
            "not a valid regex",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hearth.toml");
        std::fs::write(&file, toml).unwrap();
        let (code, _out, err) = hearth(
            &["ask", "What is 1+1?"],
            &[("HEARTH_CONFIG", &file.to_string_lossy())],
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_ne!(code, 0, "{toml} was accepted");
        assert!(err.contains(says), "{toml}: {err}");
    }
}
