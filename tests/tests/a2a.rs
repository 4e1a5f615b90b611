//! A2A against things nobody here wrote: the official Python `a2a-sdk` 1.x
//! as a client of the gateway over JSON-RPC, HTTP+JSON, gRPC and its v0.3
//! compatibility client; an agent built on the same SDK joined as an
//! external agent; errors by the book for malformed requests; and the
//! official `openai` Python SDK against the gateway's OpenAI face. The chat
//! model is the scripted double (the tests are about the protocol and the
//! mesh, not the model's judgement).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hearth_e2e::{UrlProcess, free_port, hearth, test_config, unique_prefix};
use hearth_launch::{Part, start};
use hearth_mesh::{LocalBus, Secret, SharedBus};
use serde_json::{Value, json};
use tokio::process::Command;

const TOKEN: &str = "tok-a2a-test";

fn a2a_python() -> PathBuf {
    PathBuf::from(std::env::var_os("HEARTH_TEST_A2A_PYTHON").unwrap_or_else(|| {
        panic!("HEARTH_TEST_A2A_PYTHON is not set: run the tests with scripts/test (scripts/setup-tests installs a2a-sdk)")
    }))
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("a2a")
        .join(name)
}

/// The whole mesh in this process with the gateway on free ports.
async fn mesh(token: Option<&str>) -> (hearth_launch::Mesh, String) {
    let mut config = test_config(&unique_prefix("a2a"));
    // Real embeddings beside the scripted chat double (/v1/embeddings).
    config.engine.embed_model = Some(hearth_e2e::embed_model().display().to_string());
    config.gateway.addr = "127.0.0.1:0".into();
    config.gateway.max_body_bytes = 64 * 1024;
    // The test's webhook listens on loopback.
    config.gateway.push_allow_private = true;
    if let Some(t) = token {
        config.gateway.token = Secret::new(t);
    }
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus, &Part::ALL).await.unwrap();
    let url = format!("http://{}", mesh.gateway.unwrap());
    (mesh, url)
}

/// Runs one of the Python SDK scripts and reads the JSON object on its last
/// line.
async fn run_script(name: &str, args: &[&str], label: &str) -> Value {
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        Command::new(a2a_python())
            .arg(script(name))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{label}: {stderr}\n{stdout}");
    serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{label}: {e}: {stdout}\n{stderr}"))
}

async fn python_client(url: &str, binding: &str) -> Value {
    run_script("client.py", &[url, binding, "--token", TOKEN], binding).await
}

fn texts(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_python_a2a_sdk_speaks_every_binding_with_the_gateway() {
    let (mesh, url) = mesh(Some(TOKEN)).await;
    for binding in ["JSONRPC", "HTTP+JSON", "GRPC", "V03"] {
        let r = python_client(&url, binding).await;
        let ctx = format!("{binding}: {r:#}");
        assert!(r.get("fatal").is_none(), "{ctx}");
        assert_eq!(
            r["card"]["bindings"],
            json!(["GRPC", "HTTP+JSON", "JSONRPC"]),
            "{ctx}"
        );
        assert_eq!(r["card"]["schemes"], json!(["apiKey", "bearer"]), "{ctx}");
        for cap in ["streaming", "push", "extended"] {
            assert_eq!(r["card"][cap], true, "{cap}: {ctx}");
        }
        // Send and get.
        assert_eq!(r["send"]["state"], "TASK_STATE_COMPLETED", "{ctx}");
        assert!(texts(&r["send"]["answer"]).contains("395"), "{ctx}");
        assert_eq!(r["get"]["history"], 1, "{ctx}");
        if binding != "V03" {
            assert_eq!(r["list"]["has_sent"], true, "{ctx}");
        }
        // Streaming: every event parsed by the SDK's own types.
        let kinds = texts(&r["stream"]["kinds"]);
        for k in ["task", "status_update", "artifact_update"] {
            assert!(kinds.contains(k), "{k}: {ctx}");
        }
        assert_eq!(r["stream"]["state"], "TASK_STATE_COMPLETED", "{ctx}");
        assert!(texts(&r["stream"]["answer"]).contains('5'), "{ctx}");
        // Multi-turn: a question, then the answer on the same task, heard by
        // a subscriber.
        let mt = &r["multi_turn"];
        assert_eq!(mt["first"], "TASK_STATE_INPUT_REQUIRED", "{ctx}");
        assert_eq!(mt["question"], "Which city?", "{ctx}");
        assert_eq!(mt["second"], "TASK_STATE_COMPLETED", "{ctx}");
        assert_eq!(mt["same_task"], true, "{ctx}");
        assert_eq!(mt["history"], 4, "{ctx}");
        assert!(texts(&mt["answer"]).contains("Lisbon"), "{ctx}");
        let sub = mt["subscribed"].as_array().unwrap();
        assert_eq!(
            sub.first().unwrap(),
            "task:TASK_STATE_INPUT_REQUIRED",
            "{ctx}"
        );
        assert_eq!(sub.last().unwrap(), "task:TASK_STATE_COMPLETED", "{ctx}");
        // Push notifications reach the webhook with its token.
        let push = &r["push"];
        assert_eq!(push["got_url"], true, "{ctx}");
        assert_eq!(push["listed"], 1, "{ctx}");
        assert!(push["calls"].as_u64().unwrap() >= 2, "{ctx}");
        assert_eq!(push["tokens"], json!([format!("tok-{binding}")]), "{ctx}");
        assert_eq!(push["after_delete"], 0, "{ctx}");
        // Cancel, and the errors after it.
        assert_eq!(r["cancel"]["state"], "TASK_STATE_CANCELED", "{ctx}");
        assert!(r["cancel"]["again"].is_object(), "{ctx}");
        assert!(r["cancel"]["unknown"].is_object(), "{ctx}");
        // The extended card names the operatives too.
        assert!(texts(&r["extended"]).contains("operative"), "{ctx}");
    }
    mesh.shutdown().await;
}

/// WebChat in a real headless Chromium (Debian's, driven by Selenium from
/// PyPI): the page, the token it asks for, a question sent with the
/// keyboard, the answer with its tool calls and cost, a reload, a long task
/// stopped, a phone-sized screen, a screenshot, no console errors.
#[tokio::test]
async fn webchat_works_in_a_real_browser() {
    let mut config = test_config(&unique_prefix("webchat"));
    config.gateway.addr = "127.0.0.1:0".into();
    config.gateway.token = Secret::new(TOKEN);
    // Each model call takes a second: a task is long enough to stop.
    config.engine.scripted_delay_ms = 1000;
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus, &Part::ALL).await.unwrap();
    let url = format!("http://{}", mesh.gateway.unwrap());
    let r = run_script("webchat.py", &[url.as_str(), TOKEN], "webchat").await;
    let ctx = format!("{r:#}");
    assert!(r.get("fatal").is_none(), "{ctx}");
    assert!(
        r["redirected_to"].as_str().unwrap().ends_with("/chat"),
        "a browser's GET / goes to the page: {ctx}"
    );
    assert_eq!(r["asked_for_token"], true, "{ctx}");
    assert_eq!(
        r["shift_enter"],
        json!({"value": "first line\nsecond line", "messages": 0}),
        "{ctx}"
    );
    let a = &r["answer"];
    assert!(a["text"].as_str().unwrap().contains("395"), "{ctx}");
    assert!(a["cost"].as_str().unwrap().contains("tokens in"), "{ctx}");
    assert_eq!(a["steps_collapsed"], true, "{ctx}");
    assert!(
        texts(&a["steps"]).contains("calling calculator.evaluate")
            && texts(&a["steps"]).contains("answered: 395"),
        "each tool call and its result: {ctx}"
    );
    assert!(
        r["after_reload"]["text"].as_str().unwrap().contains("395"),
        "{ctx}"
    );
    assert_eq!(
        r["after_reload"]["conversations"],
        json!(["What is 17*23+4?"]),
        "{ctx}"
    );
    assert_eq!(r["stopped"]["note"], "stopped", "{ctx}");
    assert!(
        texts(&r["stopped"]["task_states"]).contains("TASK_STATE_CANCELED"),
        "the stop button canceled the task: {ctx}"
    );
    assert_eq!(
        r["narrow"],
        json!({"menu": true, "overflow": false, "input_visible": true}),
        "{ctx}"
    );
    assert!(
        r["screenshot"]["colours"].as_u64().unwrap() > 10,
        "the screenshot is not blank: {ctx}"
    );
    assert_eq!(r["console"], json!([]), "no console errors: {ctx}");
    let bytes = r["transfer_bytes"].as_u64().unwrap();
    assert!(
        bytes > 0 && bytes < 100 * 1024,
        "the page is under 100 KB: {ctx}"
    );
    eprintln!(
        "webchat: {bytes} bytes transferred, interactive after {} ms",
        r["time_to_interactive_ms"]
    );
    mesh.shutdown().await;
}

/// Webhooks in: a GitHub-style signed delivery starts a task whose answer
/// reaches the callback server the test runs; the bearer secret works too;
/// a bad signature, no secret, a query-string secret and an unknown hook
/// are refused; a replayed delivery starts no second task.
#[tokio::test]
async fn a_signed_webhook_starts_a_task_and_its_answer_is_called_back() {
    use hmac::Mac;
    // The callback server: every POST it gets goes to `got`.
    let (tx, mut got) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/done",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}/done", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let secret = "a-hook-secret-0123456789";
    let mut config = test_config(&unique_prefix("hooks"));
    config.gateway.addr = "127.0.0.1:0".into();
    config.gateway.token = Secret::new(TOKEN);
    // The callback server is on loopback.
    config.gateway.push_allow_private = true;
    config.hooks = vec![hearth_mesh::config::HookConfig {
        name: "ci".into(),
        agent: "orchestrator".into(),
        template: "What is {{ payload.build.passed }}*{{ payload.build.failed }}+4?".into(),
        secret: Secret::new(secret),
        secret_file: None,
        callback_url: Some(callback),
    }];
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus, &Part::ALL).await.unwrap();
    let url = format!("http://{}", mesh.gateway.unwrap());
    let body = json!({"build": {"passed": 17, "failed": 23}}).to_string();
    let sign = |body: &str, key: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let post = |path: &str, body: String, headers: Vec<(&'static str, String)>| {
        let mut r = reqwest::Client::new()
            .post(format!("{url}{path}"))
            .header("Content-Type", "application/json")
            .body(body);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };
    // Signed, as GitHub signs: 202 with the task, then the answer called back.
    let resp = post(
        "/hooks/ci",
        body.clone(),
        vec![
            ("X-Hub-Signature-256", sign(&body, secret)),
            ("X-GitHub-Delivery", "delivery-1".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let accepted: Value = resp.json().await.unwrap();
    let task_id = accepted["task_id"].as_str().unwrap().to_string();
    assert!(!task_id.is_empty(), "{accepted}");
    assert!(
        accepted["status_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/tasks/{task_id}")),
        "{accepted}"
    );
    let called = tokio::time::timeout(Duration::from_secs(30), got.recv())
        .await
        .expect("the callback came")
        .unwrap();
    assert_eq!(called["task_id"], task_id.as_str(), "{called}");
    assert_eq!(called["hook"], "ci", "{called}");
    assert_eq!(called["state"], "TASK_STATE_COMPLETED", "{called}");
    assert!(
        called["answer"].as_str().unwrap().contains("395"),
        "the template's prompt was answered through the mesh: {called}"
    );
    // The status URL is an A2A task (behind the gateway token).
    let task: Value = reqwest::Client::new()
        .get(accepted["status_url"].as_str().unwrap())
        .bearer_auth(TOKEN)
        .header("A2A-Version", "1.0")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(task["id"], task_id.as_str(), "{task}");
    // The same delivery again: no second task.
    let again: Value = post(
        "/hooks/ci",
        body.clone(),
        vec![
            ("X-Hub-Signature-256", sign(&body, secret)),
            ("X-GitHub-Delivery", "delivery-1".into()),
        ],
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(again["task_id"], task_id.as_str(), "{again}");
    assert_eq!(again["replayed"], true, "{again}");
    // The bearer secret works too (a new delivery, a new task).
    let resp = post(
        "/hooks/ci",
        body.clone(),
        vec![("Authorization", format!("Bearer {secret}"))],
    )
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let second: Value = resp.json().await.unwrap();
    assert_ne!(second["task_id"], task_id.as_str(), "{second}");
    let _ = tokio::time::timeout(Duration::from_secs(30), got.recv()).await;
    // Refused: a wrong signature, no secret at all, the gateway token in its
    // place, a secret in the query string, an unknown hook, a body that is
    // not JSON.
    for (path, body, headers, status) in [
        (
            "/hooks/ci",
            body.clone(),
            vec![("X-Hub-Signature-256", sign(&body, "not-the-secret-at-all"))],
            401,
        ),
        ("/hooks/ci", body.clone(), vec![], 401),
        (
            "/hooks/ci",
            body.clone(),
            vec![("Authorization", format!("Bearer {TOKEN}"))],
            401,
        ),
        (
            "/hooks/ci?secret=a-hook-secret-0123456789",
            body.clone(),
            vec![],
            400,
        ),
        (
            "/hooks/nope",
            body.clone(),
            vec![("Authorization", format!("Bearer {secret}"))],
            404,
        ),
        (
            "/hooks/ci",
            "{not json".to_string(),
            vec![("Authorization", format!("Bearer {secret}"))],
            400,
        ),
    ] {
        let resp = post(path, body, headers).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    // Nothing else reached the callback: the refused deliveries started no task.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(got.try_recv().is_err(), "a refused delivery started a task");
    mesh.shutdown().await;
}

#[tokio::test]
async fn the_official_openai_sdk_chats_with_the_mesh_plain_and_streamed() {
    let (mesh, url) = mesh(Some(TOKEN)).await;
    let r = run_script("openai_client.py", &[url.as_str(), TOKEN], "openai").await;
    let ctx = format!("{r:#}");
    assert!(r.get("fatal").is_none(), "{ctx}");
    assert_eq!(r["models"], json!(["hearth", "hearth-embed"]), "{ctx}");
    // A plain completion, answered through the mesh: the scripted model
    // calls the calculator on the toolhost, which computes 395.
    let plain = &r["plain"];
    assert_eq!(plain["object"], "chat.completion", "{ctx}");
    assert_eq!(plain["role"], "assistant", "{ctx}");
    assert_eq!(plain["finish"], "stop", "{ctx}");
    assert!(plain["content"].as_str().unwrap().contains("395"), "{ctx}");
    assert!(plain["prompt_tokens"].as_u64().unwrap() > 0, "{ctx}");
    assert_eq!(plain["hearth_usage"]["type"], "hearth.usage", "{ctx}");
    assert!(
        plain["hearth_usage"]["model_calls"].as_u64().unwrap() >= 1,
        "{ctx}"
    );
    assert!(
        plain["hearth_usage"]["latency_ms"].as_f64().unwrap() > 0.0,
        "{ctx}"
    );
    // Streamed: the answer's text, progress under `hearth`, the finish and
    // the usage on the last chunk.
    let stream = &r["stream"];
    assert!(stream["text"].as_str().unwrap().contains("395"), "{ctx}");
    assert!(
        texts(&stream["progress"]).contains("hearth.status"),
        "{ctx}"
    );
    assert!(texts(&stream["progress"]).contains("hearth.final"), "{ctx}");
    assert_eq!(stream["finish"], "stop", "{ctx}");
    assert_eq!(stream["usage_hearth"]["type"], "hearth.usage", "{ctx}");
    // The same `user` is one conversation; another user is another.
    let ann = r["user"]["ann"].as_array().unwrap();
    // X-Hearth-Sensitive reached the engine: served locally, as sensitive.
    let sens = &r["sensitive"];
    assert_eq!(sens["marked"]["sensitive"], true, "{ctx}");
    assert_eq!(sens["marked"]["route"], "local: policy", "{ctx}");
    assert_eq!(sens["unmarked"]["sensitive"], false, "{ctx}");
    assert_eq!(ann[0], ann[1], "{ctx}");
    assert!(!ann[0].as_str().unwrap().is_empty(), "{ctx}");
    assert_ne!(ann[0], r["user"]["bob"], "{ctx}");
    // Errors as the SDK knows them.
    let e = &r["errors"];
    assert_eq!(e["wrong_key"]["class"], "AuthenticationError", "{ctx}");
    assert_eq!(e["wrong_key"]["code"], "invalid_api_key", "{ctx}");
    assert_eq!(e["unknown_model"]["class"], "NotFoundError", "{ctx}");
    assert_eq!(e["unknown_model"]["code"], "model_not_found", "{ctx}");
    assert_eq!(e["tools"]["class"], "BadRequestError", "{ctx}");
    assert_eq!(e["tools"]["code"], "tools_not_supported", "{ctx}");
    assert_eq!(e["no_messages"]["class"], "BadRequestError", "{ctx}");
    assert_eq!(e["hot"]["class"], "BadRequestError", "{ctx}");
    assert_eq!(e["hot"]["code"], "invalid_temperature", "{ctx}");
    assert_eq!(e["embed_model"]["class"], "NotFoundError", "{ctx}");
    // temperature reached the operative's model call through delegation;
    // stop and max_tokens cut the answer (the scripted engine cannot count
    // tokens: about four characters a token).
    let l = &r["limits"];
    assert_eq!(l["hot"], "temperature 0.25", "{ctx}");
    assert_eq!(l["cold"], "temperature none", "{ctx}");
    assert_eq!(l["stopped"], json!(["The answer is ", "stop"]), "{ctx}");
    assert_eq!(l["short"][1], "length", "{ctx}");
    let short = l["short"][0].as_str().unwrap();
    assert!(
        !short.is_empty() && short.len() <= 8 && "The answer is 395.".starts_with(short),
        "{ctx}"
    );
    assert_eq!(l["short_stream"], short, "{ctx}");
    // Embeddings from the memory's model: similar texts closer.
    let em = &r["embeddings"];
    assert_eq!(em["count"], 3, "{ctx}");
    assert_eq!(em["dims"], 384, "{ctx}");
    assert!(
        em["near"].as_f64().unwrap() > em["far"].as_f64().unwrap(),
        "{ctx}"
    );
    assert!(em["float_same"].as_f64().unwrap() > 0.999, "{ctx}");
    // A stream dropped by its client does not stop the gateway.
    assert!(r["after_drop"].as_str().unwrap().contains("395"), "{ctx}");

    // Bad input by hand: malformed JSON, a wrong type, a body over the limit.
    let post = |body: String| {
        reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    for (body, status) in [
        ("{\"model\": ".to_string(), 400),
        (json!({"model": 7, "messages": []}).to_string(), 400),
        (
            json!({"model": "hearth", "messages": [{"role": "user", "content": "x".repeat(70 * 1024)}]})
                .to_string(),
            413,
        ),
    ] {
        let resp = post(body).await.unwrap();
        assert_eq!(resp.status().as_u16(), status);
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(v["error"]["type"].is_string(), "{v}");
    }
    // Against DNS rebinding and cross-site pages: a foreign Host, a foreign
    // page's Origin and a sandboxed page are refused (with OpenAI's error
    // shape on /v1/); a local page's Origin is served.
    let get = |host: Option<&str>, origin: Option<&str>| {
        let mut r = reqwest::Client::new()
            .get(format!("{url}/v1/models"))
            .bearer_auth(TOKEN);
        if let Some(h) = host {
            r = r.header("Host", h);
        }
        if let Some(o) = origin {
            r = r.header("Origin", o);
        }
        r.send()
    };
    for (host, origin, status) in [
        (Some("evil.example:8777"), None, 403),
        (None, Some("https://evil.example"), 403),
        (None, Some("null"), 403),
        (None, Some("http://localhost:3000"), 200),
        (Some("localhost"), None, 200),
    ] {
        let resp = get(host, origin).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{host:?} {origin:?}");
        if status == 403 {
            let v: Value = resp.json().await.unwrap();
            assert!(
                v["error"]["message"].as_str().unwrap().contains("not"),
                "{v}"
            );
        }
    }
    mesh.shutdown().await;
}

async fn rpc(url: &str, body: &str, version: Option<&str>, token: Option<&str>) -> (u16, Value) {
    let mut rb = reqwest::Client::new()
        .post(format!("{url}/"))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(v) = version {
        rb = rb.header("A2A-Version", v);
    }
    if let Some(t) = token {
        rb = rb.header("X-API-Key", t);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn versions_v03_names_and_bad_requests_get_the_right_answers() {
    let (mesh, url) = mesh(Some(TOKEN)).await;
    let t = Some(TOKEN);
    let v1 = json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
        "params": {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "What is 1+2?"}]}}})
    .to_string();
    // No A2A-Version header means 0.3, which has no `SendMessage`.
    let (_, v) = rpc(&url, &v1, None, t).await;
    assert_eq!(v["error"]["code"], -32009, "{v}");
    let (_, v) = rpc(&url, &v1, Some("1.0"), t).await;
    assert_eq!(
        v["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED",
        "{v}"
    );

    // HTTP+JSON honours the header the same way.
    let rest_body = json!({"message": {"messageId": "r", "role": "ROLE_USER",
        "parts": [{"text": "What is 2+2?"}]}})
    .to_string();
    for version in [None, Some("0.3"), Some("2.0")] {
        let mut rb = reqwest::Client::new()
            .post(format!("{url}/message:send"))
            .header("Content-Type", "application/json")
            .header("X-API-Key", TOKEN)
            .body(rest_body.clone());
        if let Some(v) = version {
            rb = rb.header("A2A-Version", v);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{version:?}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            v["error"]["details"][0]["reason"], "VERSION_NOT_SUPPORTED",
            "{version:?}: {v}"
        );
    }
    let resp = reqwest::Client::new()
        .post(format!("{url}/message:send"))
        .header("Content-Type", "application/json")
        .header("X-API-Key", TOKEN)
        .header("A2A-Version", "1.0")
        .body(rest_body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{v}");

    // v0.3 names, v0.3 shapes.
    let v03 = json!({"jsonrpc": "2.0", "id": "x", "method": "message/send",
        "params": {"message": {"kind": "message", "messageId": "m2", "role": "user",
            "parts": [{"kind": "text", "text": "What is 6*7?"}]}}})
    .to_string();
    let (status, v) = rpc(&url, &v03, None, t).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["kind"], "task", "{v}");
    assert_eq!(v["result"]["status"]["state"], "completed", "{v}");
    assert_eq!(
        v["result"]["artifacts"][0]["parts"][0]["kind"], "text",
        "{v}"
    );
    assert!(v.to_string().contains("42"), "{v}");
    let id = v["result"]["id"].as_str().unwrap().to_string();
    let get = json!({"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"id": id, "historyLength": 1}});
    let (_, v) = rpc(&url, &get.to_string(), Some("0.3"), t).await;
    assert_eq!(
        v["result"]["history"].as_array().map(Vec::len),
        Some(1),
        "{v}"
    );
    let cancel = json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/cancel", "params": {"id": id}});
    let (_, v) = rpc(&url, &cancel.to_string(), None, t).await;
    assert_eq!(
        v["error"]["code"], -32002,
        "a completed task is not cancelable: {v}"
    );

    // Errors by the book, each followed by the server still serving.
    let cases: Vec<(String, i64)> = vec![
        ("{not json".into(), -32700),
        (json!({"jsonrpc": "1.0", "id": 1, "method": "message/send", "params": {}}).to_string(), -32600),
        (json!({"id": 1, "method": 5}).to_string(), -32600),
        (json!({"jsonrpc": "2.0", "id": 1, "method": "tasks/frobnicate", "params": {}}).to_string(), -32601),
        (json!({"jsonrpc": "2.0", "id": 1, "method": "Frobnicate", "params": {}}).to_string(), -32601),
        (json!({"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {}}).to_string(), -32602),
        (json!({"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": {"role": "robot", "parts": []}}}).to_string(), -32602),
        (json!({"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"id": "no-such-task"}}).to_string(), -32001),
        (json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "no-such-task"}}).to_string(), -32001),
        (json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": 7}}).to_string(), -32602),
        (json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {}}).to_string(), -32602),
    ];
    for (body, code) in &cases {
        let version = if body.contains("/") {
            None
        } else {
            Some("1.0")
        };
        let (_, v) = rpc(&url, body, version, t).await;
        assert_eq!(v["error"]["code"], *code, "{body} → {v}");
    }
    // A message naming a task that does not exist, or one that has ended.
    let ghost = json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
        "params": {"message": {"messageId": "m", "role": "ROLE_USER", "taskId": "ghost", "parts": [{"text": "hi"}]}}});
    let (_, v) = rpc(&url, &ghost.to_string(), Some("1.0"), t).await;
    assert_eq!(v["error"]["code"], -32001, "{v}");
    let ended = json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
        "params": {"message": {"messageId": "m", "role": "ROLE_USER", "taskId": id, "parts": [{"text": "more"}]}}});
    let (_, v) = rpc(&url, &ended.to_string(), Some("1.0"), t).await;
    assert_eq!(v["error"]["code"], -32004, "{v}");
    // Subscribing to a finished task.
    let sub = json!({"jsonrpc": "2.0", "id": 1, "method": "SubscribeToTask", "params": {"id": id}});
    let resp = reqwest::Client::new()
        .post(format!("{url}/"))
        .header("A2A-Version", "1.0")
        .header("X-API-Key", TOKEN)
        .json(&sub)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(resp.contains("-32004"), "{resp}");
    // A webhook on loopback is refused unless allowed (it is, here) and a
    // malformed one always is.
    let bad_hook = json!({"jsonrpc": "2.0", "id": 1, "method": "CreateTaskPushNotificationConfig",
        "params": {"taskId": id, "url": "gopher://x"}});
    let (_, v) = rpc(&url, &bad_hook.to_string(), Some("1.0"), t).await;
    assert_eq!(v["error"]["code"], -32602, "{v}");

    // Without the token: refused on every binding, the card still public.
    let (status, _) = rpc(&url, &v03, None, None).await;
    assert_eq!(status, 401);
    let rest = reqwest::get(format!("{url}/tasks/{id}")).await.unwrap();
    assert_eq!(rest.status().as_u16(), 401);
    let rest = reqwest::Client::new()
        .get(format!("{url}/tasks/no-such-task"))
        .bearer_auth(TOKEN)
        .header("A2A-Version", "1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status().as_u16(), 404);
    let card: Value = reqwest::get(format!("{url}/.well-known/agent-card.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(card["capabilities"]["pushNotifications"], true);
    assert_eq!(
        card["preferredTransport"], "JSONRPC",
        "v0.3 fields beside: {card}"
    );
    assert!(!card.to_string().contains(TOKEN));
    let grpc_addr = mesh.gateway_grpc.unwrap();
    let mut grpc =
        a2a_pb::proto::a2a_service_client::A2aServiceClient::connect(format!("http://{grpc_addr}"))
            .await
            .unwrap();
    let denied = grpc
        .get_task(a2a_pb::proto::GetTaskRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(a2a_pb::proto::GetTaskRequest {
        id: id.clone(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let task = grpc.get_task(req).await.unwrap().into_inner();
    assert_eq!(task.id, id);

    // Oversize bodies are refused before they are read; the server goes on.
    let (status, _) = rpc(&url, &"x".repeat(200 * 1024), Some("1.0"), t).await;
    assert_eq!(status, 413);
    let (_, v) = rpc(&url, &v1, Some("1.0"), t).await;
    assert_eq!(
        v["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED",
        "{v}"
    );
    mesh.shutdown().await;
}

/// A hearth.toml naming the external agents.
fn config_file(dir: &std::path::Path, remote: &str) -> String {
    let path = dir.join("hearth.toml");
    std::fs::write(
        &path,
        format!("[engine]\nbackend = \"scripted\"\n\n[memory]\nagent_memory = false\n\n{remote}"),
    )
    .unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn an_external_a2a_agent_joins_and_the_orchestrator_delegates_to_it() {
    let mut cmd = Command::new(a2a_python());
    cmd.arg(script("echo_agent.py"))
        .args(["--token", "peer-token"]);
    let peer = UrlProcess::start(cmd).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        dir.path(),
        &format!(
            "[[agents.remote]]\nname = \"echo\"\nurl = \"{}\"\ntoken = \"peer-token\"\nfallback = false\n",
            peer.url
        ),
    );
    let data = dir.path().display().to_string();
    let env = [
        ("HEARTH_CONFIG", cfg.as_str()),
        ("HEARTH_DATA_DIR", data.as_str()),
    ];
    let long = Duration::from_secs(120);

    let (code, out, err) = hearth(
        &[
            "ask",
            r#"call remote.echo {"task": "Bonjour from Hearth"}"#,
            "--json",
            "-v",
        ],
        &env,
        long,
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["answer"]
            .as_str()
            .unwrap()
            .contains("echo: Bonjour from Hearth"),
        "{v}\n{err}"
    );
    assert!(err.contains("calling remote.echo"), "{err}");

    let (code, out, err) = hearth(&["agents", "list", "--json"], &env, long)
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let echo = &v["remote"][0];
    assert_eq!(echo["reachable"], true, "{v}");
    assert_eq!(echo["skills"], json!(["echo"]), "{v}");
    assert!(v["local"].as_array().unwrap().len() >= 2, "{v}");

    let (code, out, err) = hearth(&["agents", "card", &peer.url, "--json"], &[], long)
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], true, "{v}");

    // Not a card: a clear failure.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = hearth(&["agents", "card", &closed], &[], long)
        .await
        .unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("agent-card.json"), "{err}");
    peer.kill().await;
}

#[tokio::test]
async fn a_dead_remote_agent_is_a_clear_error_or_falls_back_to_an_operative() {
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let data = dir.path().display().to_string();
    let long = Duration::from_secs(120);
    for fallback in [false, true] {
        let cfg = config_file(
            dir.path(),
            &format!(
                "[[agents.remote]]\nname = \"ghost\"\nurl = \"{dead}\"\ntimeout_ms = 5000\nfallback = {fallback}\n"
            ),
        );
        let env = [
            ("HEARTH_CONFIG", cfg.as_str()),
            ("HEARTH_DATA_DIR", data.as_str()),
        ];
        let (code, out, err) = hearth(
            &[
                "ask",
                r#"call remote.ghost {"task": "What is 2+2?"}"#,
                "--json",
            ],
            &env,
            long,
        )
        .await
        .unwrap();
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let answer = v["answer"].as_str().unwrap();
        assert!(answer.contains("remote agent `ghost` failed"), "{answer}");
        if fallback {
            assert!(answer.contains("a local operative answered"), "{answer}");
            assert!(answer.contains('4'), "{answer}");
        }
    }
}
