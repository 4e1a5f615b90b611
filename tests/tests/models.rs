//! `hearth models pull|rm`, `hearth doctor` and `hearth init` as a user runs
//! them: a pull from an HTTP server the test starts (resumed, checked, and a
//! wrong digest rejected with nothing left behind), doctor failing clearly
//! on missing and corrupt weights, and init writing a configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hearth_e2e::hearth;
use serde_json::Value;

/// A file server for one body that honours `Range: bytes=N-`, and remembers
/// the ranges it was asked for.
#[derive(Clone)]
struct Files {
    body: Arc<Vec<u8>>,
    ranges: Arc<Mutex<Vec<String>>>,
}

async fn serve_file(State(f): State<Files>, headers: HeaderMap) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    f.ranges
        .lock()
        .unwrap()
        .push(range.clone().unwrap_or_default());
    match range.and_then(|r| {
        r.strip_prefix("bytes=")?
            .strip_suffix('-')?
            .parse::<usize>()
            .ok()
    }) {
        Some(start) if start >= f.body.len() => StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
        Some(start) => (
            StatusCode::PARTIAL_CONTENT,
            [(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{}", f.body.len() - 1, f.body.len()),
            )],
            f.body[start..].to_vec(),
        )
            .into_response(),
        None => f.body.to_vec().into_response(),
    }
}

async fn file_server(body: Vec<u8>) -> (String, Files) {
    let files = Files {
        body: Arc::new(body),
        ranges: Arc::default(),
    };
    let app = Router::new()
        .route("/models/tiny.gguf", get(serve_file))
        .with_state(files.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/models/tiny.gguf"), files)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::process::{Command, Stdio};
    // The digest computed by another implementation than Hearth's own.
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn body() -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend((0..300_000u32).flat_map(|i| (i.wrapping_mul(2_654_435_761)).to_le_bytes()));
    b
}

#[tokio::test]
async fn a_pull_with_the_wrong_digest_is_rejected_and_leaves_nothing_behind() {
    let (url, _files) = file_server(body()).await;
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().to_str().unwrap();
    let wrong = "0".repeat(64);
    let (code, out, err) = hearth(
        &["models", "pull", &url, "--sha256", &wrong],
        &[("HEARTH_ENGINE_MODELS_DIR", models)],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("SHA-256") && err.contains(&wrong), "{err}");
    assert!(err.contains("deleted"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing half-written: {left:?}");
}

#[tokio::test]
async fn an_interrupted_pull_resumes_and_the_file_is_checked() {
    let data = body();
    let digest = sha256_hex(&data);
    let (url, files) = file_server(data.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().to_str().unwrap();
    // What an interrupted pull left: the first 1000 bytes.
    std::fs::write(dir.path().join("tiny.gguf.part"), &data[..1000]).unwrap();
    let (code, out, err) = hearth(
        &["models", "pull", &url, "--sha256", &digest, "--json"],
        &[("HEARTH_ENGINE_MODELS_DIR", models)],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["resumed_from"], 1000, "{v}");
    assert_eq!(v["sha256"], digest.as_str());
    assert_eq!(v["verified"], true);
    assert_eq!(files.ranges.lock().unwrap().as_slice(), ["bytes=1000-"]);
    assert_eq!(std::fs::read(dir.path().join("tiny.gguf")).unwrap(), data);
    assert!(!dir.path().join("tiny.gguf.part").exists());

    // Pulling again finds it there and intact, without downloading.
    let (code, out, err) = hearth(
        &["models", "pull", &url, "--sha256", &digest, "--json"],
        &[("HEARTH_ENGINE_MODELS_DIR", models)],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["already_present"],
        true
    );
    assert_eq!(files.ranges.lock().unwrap().len(), 1);

    // And rm takes it away.
    let (code, out, err) = hearth(
        &["models", "rm", "tiny.gguf"],
        &[("HEARTH_ENGINE_MODELS_DIR", models)],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed"), "{out}");
    assert!(!dir.path().join("tiny.gguf").exists());
}

async fn doctor(env: &[(&str, &str)]) -> (i32, Value) {
    let (code, out, err) = hearth(
        &["doctor", "--json", "--no-probe"],
        env,
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, v)
}

fn find<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {v}"))
}

#[tokio::test]
async fn doctor_fails_clearly_when_the_weights_are_missing_or_corrupt() {
    let data = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let models_dir = models.path().to_str().unwrap();

    // Missing: a catalog model that is nowhere on this machine.
    let (code, v) = doctor(&[
        ("HEARTH_DATA_DIR", data_dir),
        ("HEARTH_ENGINE_MODELS_DIR", models_dir),
        ("HEARTH_ENGINE_MODEL", "phi-4"),
    ])
    .await;
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["ok"], false);
    let w = find(&v, "model weights");
    assert_eq!(w["outcome"], "fail", "{w}");
    assert!(
        w["fix"]
            .as_str()
            .unwrap()
            .contains("hearth models pull phi-4"),
        "{w}"
    );
    assert_eq!(find(&v, "engine")["outcome"], "fail");

    // Corrupt: the default model's file name, with the wrong bytes, found
    // first in the models directory.
    std::fs::write(
        models.path().join("gemma-3-270m-q4_k_m.gguf"),
        b"GGUF but not really a model",
    )
    .unwrap();
    let (code, v) = doctor(&[
        ("HEARTH_DATA_DIR", data_dir),
        ("HEARTH_ENGINE_MODELS_DIR", models_dir),
    ])
    .await;
    assert_eq!(code, 1, "{v}");
    let w = find(&v, "model weights");
    assert_eq!(w["outcome"], "fail", "{w}");
    assert!(w["detail"].as_str().unwrap().contains("corrupt"), "{w}");
    assert!(
        w["fix"]
            .as_str()
            .unwrap()
            .contains("hearth models pull gemma-3-270m --force"),
        "{w}"
    );
    // A missing interpreter fails its own check, with the fix.
    let v2 = doctor(&[
        ("HEARTH_DATA_DIR", data_dir),
        ("HEARTH_ENGINE_MODELS_DIR", models_dir),
    ])
    .await
    .1;
    let sandbox = find(&v2, "python sandbox");
    assert_eq!(sandbox["outcome"], "fail", "{sandbox}");
    assert!(
        sandbox["fix"].as_str().unwrap().contains("scripts/setup"),
        "{sandbox}"
    );
    // The other checks still ran and passed.
    assert_eq!(find(&v, "MCP server calculator")["outcome"], "ok", "{v}");
    assert_eq!(find(&v, "NATS")["outcome"], "ok", "{v}");
}

#[tokio::test]
async fn doctor_passes_on_the_default_setup_and_probes_the_engine() {
    let data = tempfile::tempdir().unwrap();
    // The data dir is the test's own; the Python sandbox's interpreter is
    // where scripts/setup put it.
    let runtime =
        hearth_launch::builtins::code_options(&hearth_mesh::Config::default()).runtime_dir;
    // … and so is the embedding model.
    let embed = hearth_e2e::embed_model();
    let (code, out, err) = hearth(
        &["doctor"],
        &[
            ("HEARTH_DATA_DIR", data.path().to_str().unwrap()),
            ("HEARTH_TOOLS_CODE_RUNTIME_DIR", runtime.to_str().unwrap()),
            ("HEARTH_ENGINE_EMBED_MODEL", embed.to_str().unwrap()),
        ],
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    for line in [
        "✅ hardware fit",
        "✅ model weights",
        "✅ engine",
        "✅ MCP server calculator",
        "✅ embedding model",
        "✅ memory",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(out.contains("SHA-256 matches"), "{out}");
    assert!(out.contains("all checks passed"), "{out}");
}

#[tokio::test]
async fn init_recommends_for_this_machine_and_writes_hearth_toml() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("hearth.toml");
    let target_s = target.to_str().unwrap();
    let (code, out, err) = hearth(
        &["init", "--output", target_s, "--json"],
        &[],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["hardware"]["cpu"]["threads"].as_u64().unwrap() >= 1,
        "{v}"
    );
    assert!(v["hardware"]["memory_bytes"].as_u64().unwrap() > 0, "{v}");
    let rec = &v["recommendation"];
    assert!(rec["reasons"].as_array().unwrap().len() >= 3, "{v}");
    let written = std::fs::read_to_string(&target).unwrap();
    assert!(
        written.contains(&format!("model = \"{}\"", rec["model"].as_str().unwrap()))
            || written.contains("url = "),
        "{written}"
    );
    // The file parses as Hearth's configuration.
    let (code, _, err) = hearth(
        &["models", "list", "--json"],
        &[("HEARTH_CONFIG", target_s)],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    // A second init does not overwrite it without --force.
    let (code, _, err) = hearth(
        &["init", "--output", target_s],
        &[],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("--force"), "{err}");
}

#[tokio::test]
async fn config_show_says_where_each_value_came_from_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hearth.toml");
    std::fs::write(
        &file,
        "[engine]\nmodel = \"from-the-file\"\n[gateway]\ntoken = \"file-secret-token\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let env = [
        ("HEARTH_CONFIG", file.to_str().unwrap()),
        ("HEARTH_ENGINE_API_KEY", "sk-env-secret-key"),
        ("HEARTH_DATA_DIR", data.to_str().unwrap()),
    ];
    let (code, out, err) = hearth_e2e::hearth(
        &["config", "show", "--json"],
        &env,
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("sk-env-secret-key") && !out.contains("file-secret-token"),
        "a secret was printed: {out}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let values = &v["values"];
    assert_eq!(values["engine.model"]["value"], "from-the-file", "{v}");
    assert_eq!(values["engine.model"]["origin"]["from"], "file");
    assert_eq!(values["engine.api_key"]["value"], "********");
    assert_eq!(values["engine.api_key"]["origin"]["from"], "environment");
    assert_eq!(
        values["engine.api_key"]["origin"]["name"],
        "HEARTH_ENGINE_API_KEY"
    );
    assert_eq!(values["gateway.token"]["value"], "********");
    assert_eq!(values["data_dir"]["value"], data.to_str().unwrap());
    assert_eq!(values["gateway.addr"]["origin"]["from"], "default");

    // The table says the same for a person; an unknown backend is refused
    // with the valid ones listed.
    let (code, table, err) = hearth_e2e::hearth(
        &["config", "show", "--changed"],
        &env,
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        table.contains("engine.model") && table.contains("env HEARTH_ENGINE_API_KEY"),
        "{table}"
    );
    assert!(
        !table.contains("gateway.addr"),
        "--changed shows only changed values: {table}"
    );
    let (code, _, err) = hearth_e2e::hearth(
        &["config", "show"],
        &[
            ("HEARTH_CONFIG", file.to_str().unwrap()),
            ("HEARTH_ENGINE_BACKEND", "lama"),
        ],
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_ne!(code, 0);
    for name in ["lama", "llama", "openai", "ollama"] {
        assert!(err.contains(&format!("`{name}`")), "{err}");
    }
}
