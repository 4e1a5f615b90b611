//! Every service answers its own health over a real nats-server: five
//! `hearth serve` processes, asked by `hearth status` (which reads each
//! service's checks), and `hearth status --check` failing for a part that
//! nobody serves — the health check a container runs. (The model is the
//! scripted test double: this is about the mesh, not the answer.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::time::Duration;

use hearth_e2e::{HearthProcess, NatsServer, hearth, unique_prefix};
use serde_json::Value;

fn service<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == name)
        .unwrap_or_else(|| panic!("no row for {name}: {v}"))
}

fn check<'a>(row: &'a Value, name: &str) -> &'a Value {
    row["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {row}"))
}

#[tokio::test]
async fn every_service_answers_its_health_over_nats_and_a_missing_one_fails_the_check() {
    let nats = NatsServer::start().await.unwrap();
    let prefix = unique_prefix("health");
    let data = tempfile::tempdir().unwrap();
    // The sandbox's interpreter where scripts/setup put it.
    let runtime =
        hearth_launch::builtins::code_options(&hearth_mesh::Config::default()).runtime_dir;
    let env = [
        ("HEARTH_NATS_URL", nats.url.as_str()),
        ("HEARTH_SUBJECT_PREFIX", prefix.as_str()),
        ("HEARTH_ENGINE_BACKEND", "scripted"),
        ("HEARTH_DATA_DIR", data.path().to_str().unwrap()),
        ("HEARTH_TOOLS_CODE_RUNTIME_DIR", runtime.to_str().unwrap()),
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
        &["status", "--json", "--timeout-ms", "2000"],
        &env,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "without --check, status only reports: {err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    for part in parts {
        let row = service(&v, part);
        assert_eq!(row["answered"], true, "{row}");
        assert_eq!(row["ready"], true, "{row}");
        assert!(row["uptime_s"].as_f64().unwrap() >= 0.0, "{row}");
    }
    // What each says of itself is its own decision, not re-derived here.
    let engine = service(&v, "engine");
    assert!(
        check(engine, "engine")["detail"]
            .as_str()
            .unwrap()
            .contains("scripted"),
        "{engine}"
    );
    let toolhost = service(&v, "toolhost");
    let calc = check(toolhost, "MCP server calculator");
    assert_eq!(calc["outcome"], "ok", "{calc}");
    assert!(
        calc["detail"].as_str().unwrap().contains("in-process"),
        "{calc}"
    );
    check(toolhost, "python sandbox");
    // The agents name their worker: the instance that answered.
    let op = service(&v, "operative");
    assert!(
        op["worker"].as_str().unwrap().starts_with("operative-"),
        "{op}"
    );
    // Nobody serves memory or the gateway here.
    for silent in ["memory", "gateway"] {
        let row = service(&v, silent);
        assert_eq!(row["answered"], false, "{row}");
        assert_eq!(row["ready"], false, "{row}");
    }

    // --check: the exit code says whether the named parts are ready.
    let (code, _, err) = hearth(
        &[
            "status",
            "--check",
            "engine,toolhost,operative",
            "--timeout-ms",
            "2000",
        ],
        &env,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = hearth(
        &[
            "status",
            "--check",
            "engine",
            "--check",
            "memory",
            "--timeout-ms",
            "1000",
        ],
        &env,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(code, 1, "memory is not served: {out}");
    assert!(out.contains("no answer") && out.contains("ready"), "{out}");

    for p in procs {
        p.kill().await;
    }
}

#[tokio::test]
async fn status_without_a_mesh_says_so() {
    let (code, _, err) = hearth(&["status"], &[], Duration::from_secs(30))
        .await
        .unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("HEARTH_NATS_URL is not set"), "{err}");
}
