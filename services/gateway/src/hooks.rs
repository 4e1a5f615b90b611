//! Webhooks in: `POST /hooks/<name>` starts a task from a service's event
//! (a push to a repository, a form sent, a monitor's alert).
//!
//! Each `[[hooks]]` entry names its agent, a prompt template rendered over
//! the JSON payload (minijinja: `{{ payload.repository.full_name }}`), a
//! secret (or a file holding it) and, optionally, a `callback_url`. A
//! delivery proves it knows the secret with `Authorization: Bearer
//! <secret>` or GitHub's HMAC signature (`X-Hub-Signature-256:
//! sha256=<hex of HMAC-SHA256(secret, body)>`); a secret in the query
//! string is refused (it ends up in logs). It is answered `202` with
//! `{"task_id", "status_url"}` at once; the task's result can be fetched as
//! an A2A task (`GET /tasks/<id>`, behind the gateway token), and is POSTed
//! to the callback URL when the task ends (the same address rules as push
//! notifications). A delivery id seen again (`X-Hearth-Delivery` or
//! `X-GitHub-Delivery`, within [`REPLAY_WINDOW`]) starts no second task: it
//! is answered with the first delivery's task.
//!
//! Hooks are outside the gateway token: their own secret guards them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use hearth_mesh::Config;
use hearth_mesh::a2a::{answer_of, is_final, state_name, text_message};
use hearth_proto::a2a::Role;
use hearth_proto::a2a::stream_response::Payload;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::A2aHandler;
use crate::push::Push;

/// How long a delivery id is remembered.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Delivery ids remembered at most (the oldest go first).
const MAX_DELIVERIES: usize = 10_000;
/// Longest rendered prompt.
const MAX_PROMPT_BYTES: usize = 32 * 1024;
/// Deadline of one callback call.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the hooks could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// A hook's configuration is wrong.
    #[error("hook `{name}`: {reason}")]
    Config {
        /// The hook.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

struct Hook {
    agent: String,
    secret: Vec<u8>,
    callback_url: Option<String>,
}

/// The configured hooks and what they need to run.
pub struct Hooks {
    hooks: HashMap<String, Hook>,
    templates: minijinja::Environment<'static>,
    handler: Arc<A2aHandler>,
    push: Arc<Push>,
    http: reqwest::Client,
    /// Where a task's status is fetched (the gateway's public base URL).
    base_url: String,
    seen: Mutex<VecDeque<(String, String, Instant)>>,
}

impl Hooks {
    /// The hooks of `config`, for a gateway reached at `base_url`. A hook
    /// with no secret, an unreadable secret file, a bad name or a template
    /// that does not compile is refused here, before the gateway starts.
    pub fn new(
        config: &Config,
        handler: Arc<A2aHandler>,
        base_url: &str,
    ) -> Result<Self, HookError> {
        let mut hooks = HashMap::new();
        let mut templates = minijinja::Environment::new();
        templates.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for h in &config.hooks {
            let bad = |reason: String| HookError::Config {
                name: h.name.clone(),
                reason,
            };
            if h.name.is_empty()
                || !h
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad("the name must be letters, digits, `-` or `_`".into()));
            }
            let secret = match (&h.secret_file, h.secret.is_empty()) {
                (Some(path), true) => std::fs::read_to_string(path)
                    .map_err(|e| bad(format!("secret_file {}: {e}", path.display())))?
                    .trim()
                    .to_string(),
                (None, false) => h.secret.expose().to_string(),
                (Some(_), false) => {
                    return Err(bad("give `secret` or `secret_file`, not both".into()));
                }
                (None, true) => {
                    return Err(bad(
                        "a hook needs a `secret` or `secret_file` (it is outside the gateway token)"
                            .into(),
                    ));
                }
            };
            if secret.len() < 16 {
                return Err(bad("the secret must be at least 16 characters".into()));
            }
            templates
                .add_template_owned(h.name.clone(), h.template.clone())
                .map_err(|e| bad(format!("the template does not compile: {e}")))?;
            if hooks
                .insert(
                    h.name.clone(),
                    Hook {
                        agent: h.agent.clone(),
                        secret: secret.into_bytes(),
                        callback_url: h.callback_url.clone().filter(|u| !u.trim().is_empty()),
                    },
                )
                .is_some()
            {
                return Err(bad("two hooks have this name".into()));
            }
        }
        let push = handler.push().clone();
        Ok(Self {
            hooks,
            templates,
            handler,
            push,
            http: reqwest::Client::builder()
                .timeout(CALLBACK_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            base_url: base_url.trim_end_matches('/').to_string(),
            seen: Mutex::new(VecDeque::new()),
        })
    }

    /// Whether any hook is configured.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// The routes (outside the gateway token).
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/hooks/{name}", post(deliver))
            .with_state(self)
    }

    /// The task a delivery id already started, if it was seen in the window.
    fn replayed(&self, hook: &str, delivery: &str) -> Option<String> {
        let mut seen = hearth_mesh::sync::lock(&self.seen);
        while seen
            .front()
            .is_some_and(|(_, _, at)| at.elapsed() > REPLAY_WINDOW)
        {
            seen.pop_front();
        }
        let key = format!("{hook}/{delivery}");
        seen.iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, task, _)| task.clone())
    }

    fn remember(&self, hook: &str, delivery: &str, task_id: &str) {
        let mut seen = hearth_mesh::sync::lock(&self.seen);
        if seen.len() >= MAX_DELIVERIES {
            seen.pop_front();
        }
        seen.push_back((
            format!("{hook}/{delivery}"),
            task_id.to_string(),
            Instant::now(),
        ));
    }

    fn accepted(&self, task_id: &str, replayed: bool) -> Response {
        (
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "task_id": task_id,
                "status_url": format!("{}/tasks/{task_id}", self.base_url),
                "replayed": replayed,
            })),
        )
            .into_response()
    }
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// Whether the delivery proves it knows `secret`: the bearer token, or the
/// HMAC signature of the body (compared in constant time).
fn authentic(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    if let Some(sig) = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
    {
        let Some(hex_sig) = sig.trim().strip_prefix("sha256=") else {
            return false;
        };
        let Ok(expected) = hex::decode(hex_sig) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return false;
        };
        mac.update(body);
        return mac.verify_slice(&expected).is_ok();
    }
    let Some(given) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Constant time: compare the MACs of both under a fresh key.
    let digest = |s: &[u8]| {
        let mut m = Hmac::<Sha256>::new_from_slice(b"hearth-hook-compare").ok()?;
        m.update(s);
        Some(m.finalize().into_bytes())
    };
    matches!((digest(given.trim().as_bytes()), digest(secret)), (Some(a), Some(b)) if a == b)
}

/// `POST /hooks/<name>`.
async fn deliver(
    State(hooks): State<Arc<Hooks>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(hook) = hooks.hooks.get(&name) else {
        return refuse(StatusCode::NOT_FOUND, format!("there is no hook `{name}`"));
    };
    if query.as_deref().is_some_and(|q| {
        q.split('&').any(|kv| {
            let k = kv
                .split('=')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            ["secret", "token", "key", "signature", "sig"].contains(&k.as_str())
        })
    }) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a secret in the query string is refused (it ends up in logs): send it as `Authorization: Bearer …` or sign the body (X-Hub-Signature-256)",
        );
    }
    if !authentic(&hook.secret, &headers, &body) {
        tracing::info!(hook = %name, "a delivery without a valid secret or signature");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "this hook needs its secret: `Authorization: Bearer <secret>` or `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>`",
        );
    }
    let delivery = ["x-hearth-delivery", "x-github-delivery"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(|d| d.trim().chars().take(200).collect::<String>())
        .filter(|d| !d.is_empty());
    if let Some(d) = &delivery
        && let Some(task_id) = hooks.replayed(&name, d)
    {
        return hooks.accepted(&task_id, true);
    }
    let payload: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not valid JSON: {e}"),
                );
            }
        }
    };
    let prompt = match hooks
        .templates
        .get_template(&name)
        .and_then(|t| t.render(minijinja::context! { payload => payload, hook => name }))
    {
        Ok(p) if !p.trim().is_empty() && p.len() <= MAX_PROMPT_BYTES => p,
        Ok(p) if p.trim().is_empty() => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the hook's template rendered an empty prompt for this payload",
            );
        }
        Ok(_) => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the rendered prompt is longer than {MAX_PROMPT_BYTES} bytes"),
            );
        }
        Err(e) => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the hook's template failed on this payload: {e}"),
            );
        }
    };
    let message = text_message(Role::User, prompt, "", "");
    let mut events = match hooks
        .handler
        .start_message(message, &hook.agent, false)
        .await
    {
        Ok(e) => e,
        Err(e) => {
            return refuse(
                StatusCode::BAD_GATEWAY,
                format!("the mesh did not take the task: {e}"),
            );
        }
    };
    // The first event names the task.
    let mut task_id = String::new();
    let mut ended = None;
    while let Some(ev) = events.next().await {
        let Ok(ev) = ev else { break };
        let Some(p) = ev.event.and_then(|e| e.payload) else {
            continue;
        };
        task_id = match &p {
            Payload::Task(t) => t.id.clone(),
            Payload::Message(m) => m.task_id.clone(),
            Payload::StatusUpdate(u) => u.task_id.clone(),
            Payload::ArtifactUpdate(u) => u.task_id.clone(),
        };
        if let Payload::Task(t) = p
            && t.status.as_ref().is_some_and(|s| is_final(s.state))
        {
            ended = Some(t);
        }
        if !task_id.is_empty() {
            break;
        }
    }
    if task_id.is_empty() {
        return refuse(
            StatusCode::BAD_GATEWAY,
            "the mesh took the task but named none",
        );
    }
    if let Some(d) = &delivery {
        hooks.remember(&name, d, &task_id);
    }
    tracing::info!(hook = %name, task_id = %task_id, "a hook started a task");
    let callback = hook.callback_url.clone();
    let runner = hooks.clone();
    let id = task_id.clone();
    let hook_name = name.clone();
    tokio::spawn(async move {
        let mut last = ended;
        while last.is_none() {
            let Some(ev) = events.next().await else { break };
            let Ok(ev) = ev else { break };
            if let Some(Payload::Task(t)) = ev.event.and_then(|e| e.payload)
                && t.status.as_ref().is_some_and(|s| is_final(s.state))
            {
                last = Some(t);
            }
        }
        let Some(url) = callback else { return };
        let body = match &last {
            Some(t) => json!({
                "hook": hook_name,
                "task_id": id,
                "state": state_name(t.status.as_ref().map_or(0, |s| s.state)),
                "answer": answer_of(t),
            }),
            None => json!({
                "hook": hook_name,
                "task_id": id,
                "state": "TASK_STATE_UNKNOWN",
                "answer": "",
                "error": "the task's events ended before it did",
            }),
        };
        if let Err(e) = runner.push.check_url(&url).await {
            tracing::warn!(hook = %hook_name, error = %e, "the callback URL is refused");
            return;
        }
        match runner.http.post(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::warn!(hook = %hook_name, status = %r.status(), "the callback answered an error")
            }
            Err(e) => {
                tracing::warn!(hook = %hook_name, error = %e, "the callback could not be reached")
            }
        }
    });
    hooks.accepted(&task_id, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_or_the_bearer_secret_proves_a_delivery() {
        let secret = b"0123456789abcdef-secret";
        let body = br#"{"a": 1}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let mut h = HeaderMap::new();
        h.insert("x-hub-signature-256", sig.parse().unwrap());
        assert!(authentic(secret, &h, body));
        assert!(!authentic(secret, &h, br#"{"a": 2}"#), "another body");
        assert!(!authentic(b"another-secret-0123", &h, body));
        let mut h = HeaderMap::new();
        h.insert("x-hub-signature-256", "sha256=zz".parse().unwrap());
        assert!(!authentic(secret, &h, body));
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            "Bearer 0123456789abcdef-secret".parse().unwrap(),
        );
        assert!(authentic(secret, &h, body));
        h.insert("authorization", "Bearer wrong".parse().unwrap());
        assert!(!authentic(secret, &h, body));
        assert!(!authentic(secret, &HeaderMap::new(), body));
    }
}
