//! A2A v0.3 over JSON-RPC, for the many deployed agents that still speak
//! it: `message/send`, `message/stream`, `tasks/get`, `tasks/cancel`,
//! `tasks/resubscribe`, `tasks/pushNotificationConfig/{set,get,list,delete}`
//! and `agent/getAuthenticatedExtendedCard`.
//!
//! Each request is translated into the v1.0 model, answered by the same
//! handler every other binding uses, and the answer translated back into
//! v0.3 shapes: `kind` discriminators, lower-case roles and task states
//! (`input-required`), `{kind: "text"|"data"|"file"}` parts, and stream
//! events with `final`. Nothing here decides anything.

use std::convert::Infallible;
use std::sync::Arc;

use a2a as sdk;
use a2a_server::{RequestHandler, ServiceParams};
use axum::Json;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use sdk::A2AError;
use serde_json::{Map, Value, json};

use crate::handler::A2aHandler;

/// Whether `method` is a v0.3 method name.
pub fn is_v03(method: &str) -> bool {
    method.contains('/')
}

fn role_to_v03(r: &str) -> &'static str {
    match r {
        "ROLE_AGENT" => "agent",
        _ => "user",
    }
}

fn role_from_v03(r: &str) -> Result<&'static str, A2AError> {
    match r {
        "user" => Ok("ROLE_USER"),
        "agent" => Ok("ROLE_AGENT"),
        other => Err(A2AError::invalid_params(format!(
            "message.role must be \"user\" or \"agent\", not {other:?}"
        ))),
    }
}

fn state_to_v03(s: &str) -> &'static str {
    match s {
        "TASK_STATE_SUBMITTED" => "submitted",
        "TASK_STATE_WORKING" => "working",
        "TASK_STATE_INPUT_REQUIRED" => "input-required",
        "TASK_STATE_COMPLETED" => "completed",
        "TASK_STATE_CANCELED" => "canceled",
        "TASK_STATE_FAILED" => "failed",
        "TASK_STATE_REJECTED" => "rejected",
        "TASK_STATE_AUTH_REQUIRED" => "auth-required",
        _ => "unknown",
    }
}

fn final_v03(state: &str) -> bool {
    matches!(
        state,
        "input-required" | "completed" | "canceled" | "failed" | "rejected" | "auth-required"
    )
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn part_to_v03(p: Value) -> Value {
    let mut p = obj(p);
    let metadata = p.remove("metadata");
    let mut out = Map::new();
    if let Some(t) = p.remove("text") {
        out.insert("kind".into(), json!("text"));
        out.insert("text".into(), t);
    } else if let Some(d) = p.remove("data") {
        out.insert("kind".into(), json!("data"));
        out.insert("data".into(), d);
    } else {
        let mut file = Map::new();
        if let Some(b) = p.remove("raw") {
            file.insert("bytes".into(), b);
        }
        if let Some(u) = p.remove("url") {
            file.insert("uri".into(), u);
        }
        if let Some(m) = p.remove("mediaType") {
            file.insert("mimeType".into(), m);
        }
        if let Some(n) = p.remove("filename") {
            file.insert("name".into(), n);
        }
        out.insert("kind".into(), json!("file"));
        out.insert("file".into(), Value::Object(file));
    }
    if let Some(m) = metadata {
        out.insert("metadata".into(), m);
    }
    Value::Object(out)
}

fn part_from_v03(p: &Value) -> Result<Value, A2AError> {
    let kind = p.get("kind").and_then(Value::as_str).unwrap_or_else(|| {
        // Some senders leave `kind` out of text parts.
        if p.get("text").is_some() { "text" } else { "" }
    });
    let mut out = Map::new();
    match kind {
        "text" => {
            let t = p
                .get("text")
                .filter(|t| t.is_string())
                .ok_or_else(|| A2AError::invalid_params("a text part needs `text`"))?;
            out.insert("text".into(), t.clone());
        }
        "data" => {
            let d = p
                .get("data")
                .ok_or_else(|| A2AError::invalid_params("a data part needs `data`"))?;
            out.insert("data".into(), d.clone());
        }
        "file" => {
            let f = p
                .get("file")
                .ok_or_else(|| A2AError::invalid_params("a file part needs `file`"))?;
            if let Some(b) = f.get("bytes") {
                out.insert("raw".into(), b.clone());
            } else if let Some(u) = f.get("uri") {
                out.insert("url".into(), u.clone());
            } else {
                return Err(A2AError::invalid_params("a file needs `bytes` or `uri`"));
            }
            if let Some(m) = f.get("mimeType") {
                out.insert("mediaType".into(), m.clone());
            }
            if let Some(n) = f.get("name") {
                out.insert("filename".into(), n.clone());
            }
        }
        other => {
            return Err(A2AError::invalid_params(format!(
                "unknown part kind {other:?} (text, data or file)"
            )));
        }
    }
    if let Some(m) = p.get("metadata") {
        out.insert("metadata".into(), m.clone());
    }
    Ok(Value::Object(out))
}

fn parts_to_v03(parts: Option<Value>) -> Value {
    match parts {
        Some(Value::Array(ps)) => Value::Array(ps.into_iter().map(part_to_v03).collect()),
        _ => json!([]),
    }
}

fn message_to_v03(m: Value) -> Value {
    let mut m = obj(m);
    let role = m
        .get("role")
        .and_then(Value::as_str)
        .map(role_to_v03)
        .unwrap_or("agent");
    m.insert("role".into(), json!(role));
    let parts = parts_to_v03(m.remove("parts"));
    m.insert("parts".into(), parts);
    m.insert("kind".into(), json!("message"));
    Value::Object(m)
}

fn message_from_v03(v: &Value) -> Result<sdk::Message, A2AError> {
    let m = v
        .as_object()
        .ok_or_else(|| A2AError::invalid_params("`message` must be an object"))?;
    let mut out = m.clone();
    out.remove("kind");
    let role = m
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| A2AError::invalid_params("message.role is missing"))?;
    out.insert("role".into(), json!(role_from_v03(role)?));
    let parts = m
        .get("parts")
        .and_then(Value::as_array)
        .ok_or_else(|| A2AError::invalid_params("message.parts must be an array"))?
        .iter()
        .map(part_from_v03)
        .collect::<Result<Vec<_>, _>>()?;
    out.insert("parts".into(), Value::Array(parts));
    if !out.contains_key("messageId") {
        out.insert("messageId".into(), json!(uuid::Uuid::now_v7().to_string()));
    }
    serde_json::from_value(Value::Object(out))
        .map_err(|e| A2AError::invalid_params(format!("message: {e}")))
}

fn status_to_v03(s: Value) -> Value {
    let mut s = obj(s);
    let state = s
        .get("state")
        .and_then(Value::as_str)
        .map(state_to_v03)
        .unwrap_or("unknown");
    s.insert("state".into(), json!(state));
    if let Some(m) = s.remove("message") {
        s.insert("message".into(), message_to_v03(m));
    }
    Value::Object(s)
}

fn artifact_to_v03(a: Value) -> Value {
    let mut a = obj(a);
    let parts = parts_to_v03(a.remove("parts"));
    a.insert("parts".into(), parts);
    Value::Object(a)
}

fn task_to_v03(t: Value) -> Value {
    let mut t = obj(t);
    if let Some(s) = t.remove("status") {
        t.insert("status".into(), status_to_v03(s));
    }
    if let Some(Value::Array(h)) = t.remove("history") {
        t.insert(
            "history".into(),
            Value::Array(h.into_iter().map(message_to_v03).collect()),
        );
    }
    if let Some(Value::Array(a)) = t.remove("artifacts") {
        t.insert(
            "artifacts".into(),
            Value::Array(a.into_iter().map(artifact_to_v03).collect()),
        );
    }
    t.insert("kind".into(), json!("task"));
    Value::Object(t)
}

fn event_to_v03(ev: &sdk::StreamResponse) -> Value {
    match ev {
        sdk::StreamResponse::Task(t) => task_to_v03(t.to_json()),
        sdk::StreamResponse::Message(m) => message_to_v03(m.to_json()),
        sdk::StreamResponse::StatusUpdate(u) => {
            let mut o = obj(u.to_json());
            let status = status_to_v03(o.remove("status").unwrap_or(Value::Null));
            let fin = status
                .get("state")
                .and_then(Value::as_str)
                .is_some_and(final_v03);
            o.insert("status".into(), status);
            o.insert("final".into(), json!(fin));
            o.insert("kind".into(), json!("status-update"));
            Value::Object(o)
        }
        sdk::StreamResponse::ArtifactUpdate(u) => {
            let mut o = obj(u.to_json());
            if let Some(a) = o.remove("artifact") {
                o.insert("artifact".into(), artifact_to_v03(a));
            }
            o.insert("kind".into(), json!("artifact-update"));
            Value::Object(o)
        }
    }
}

/// Serialising the SDK's types without naming each.
mod erased {
    /// Anything serialisable, as JSON.
    pub trait Ser {
        fn to_json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}

use erased::Ser;

fn push_to_v03(c: &sdk::TaskPushNotificationConfig) -> Value {
    let mut inner = Map::new();
    inner.insert("url".into(), json!(c.url));
    if let Some(id) = &c.id {
        inner.insert("id".into(), json!(id));
    }
    if let Some(t) = &c.token {
        inner.insert("token".into(), json!(t));
    }
    if let Some(a) = &c.authentication {
        let mut auth = Map::new();
        auth.insert("schemes".into(), json!([a.scheme]));
        if let Some(cred) = &a.credentials {
            auth.insert("credentials".into(), json!(cred));
        }
        inner.insert("authentication".into(), Value::Object(auth));
    }
    json!({ "taskId": c.task_id, "pushNotificationConfig": Value::Object(inner) })
}

fn push_from_v03(task_id: &str, v: &Value) -> Result<sdk::TaskPushNotificationConfig, A2AError> {
    let url = v
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| A2AError::invalid_params("pushNotificationConfig.url is missing"))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let authentication = v.get("authentication").map(|a| sdk::AuthenticationInfo {
        scheme: a
            .get("schemes")
            .and_then(Value::as_array)
            .and_then(|x| x.first())
            .and_then(Value::as_str)
            .unwrap_or("Bearer")
            .to_string(),
        credentials: a
            .get("credentials")
            .and_then(Value::as_str)
            .map(str::to_string),
    });
    Ok(sdk::TaskPushNotificationConfig {
        url: url.to_string(),
        id: s("id"),
        task_id: task_id.to_string(),
        token: s("token"),
        authentication,
        tenant: None,
    })
}

fn str_param<'a>(params: &'a Value, key: &str) -> Result<&'a str, A2AError> {
    params
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| A2AError::invalid_params(format!("`{key}` is missing")))
}

fn history_length(params: &Value) -> Result<Option<i32>, A2AError> {
    match params.get("historyLength") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| {
                A2AError::invalid_params("historyLength must be a non-negative integer")
            }),
    }
}

fn send_request(params: &Value) -> Result<sdk::SendMessageRequest, A2AError> {
    let message = message_from_v03(
        params
            .get("message")
            .ok_or_else(|| A2AError::invalid_params("`message` is missing"))?,
    )?;
    let cfg = params.get("configuration");
    let configuration = match cfg {
        None | Some(Value::Null) => None,
        Some(c) => Some(sdk::SendMessageConfiguration {
            accepted_output_modes: c
                .get("acceptedOutputModes")
                .and_then(|v| serde_json::from_value(v.clone()).ok()),
            task_push_notification_config: match c.get("pushNotificationConfig") {
                Some(p) => Some(push_from_v03("", p)?),
                None => None,
            },
            history_length: history_length(c)?,
            // v0.3's `blocking: false` is v1.0's `returnImmediately`.
            return_immediately: c.get("blocking").and_then(Value::as_bool).map(|b| !b),
        }),
    };
    Ok(sdk::SendMessageRequest {
        message,
        configuration,
        metadata: params
            .get("metadata")
            .and_then(|v| serde_json::from_value(v.clone()).ok()),
        tenant: None,
    })
}

fn reply(id: &Value, result: Result<Value, A2AError>) -> Value {
    match result {
        Ok(r) => json!({ "jsonrpc": "2.0", "id": id, "result": r }),
        Err(e) => {
            json!({ "jsonrpc": "2.0", "id": id, "error": { "code": e.code, "message": e.message } })
        }
    }
}

type Events = futures::stream::BoxStream<'static, Result<sdk::StreamResponse, A2AError>>;

fn sse(id: Value, events: Result<Events, A2AError>) -> Response {
    let stream = match events {
        Ok(s) => s
            .map(move |ev| reply(&id, ev.map(|e| event_to_v03(&e))))
            .boxed(),
        Err(e) => futures::stream::iter([reply(&id, Err(e))]).boxed(),
    };
    Sse::new(stream.map(|v| Ok::<_, Infallible>(Event::default().data(v.to_string()))))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Answers one v0.3 JSON-RPC request (already parsed, `jsonrpc` checked).
pub async fn handle(
    handler: Arc<A2aHandler>,
    params_h: ServiceParams,
    id: Value,
    method: &str,
    params: Value,
    extended_card: Arc<Value>,
) -> Response {
    let h = handler.as_ref();
    let p = &params_h;
    let result: Result<Value, A2AError> = match method {
        "message/send" => match send_request(&params) {
            Ok(req) => h.send_message(p, req).await.map(|r| match r {
                sdk::SendMessageResponse::Task(t) => task_to_v03(t.to_json()),
                sdk::SendMessageResponse::Message(m) => message_to_v03(m.to_json()),
            }),
            Err(e) => Err(e),
        },
        "message/stream" => {
            let events = match send_request(&params) {
                Ok(req) => h.send_streaming_message(p, req).await,
                Err(e) => Err(e),
            };
            return sse(id, events);
        }
        "tasks/resubscribe" => {
            let events = match str_param(&params, "id") {
                Ok(tid) => {
                    h.subscribe_to_task(
                        p,
                        sdk::SubscribeToTaskRequest {
                            id: tid.to_string(),
                            tenant: None,
                        },
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            return sse(id, events);
        }
        "tasks/get" => match (str_param(&params, "id"), history_length(&params)) {
            (Ok(tid), Ok(n)) => h
                .get_task(
                    p,
                    sdk::GetTaskRequest {
                        id: tid.to_string(),
                        history_length: n,
                        tenant: None,
                    },
                )
                .await
                .map(|t| task_to_v03(t.to_json())),
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        "tasks/cancel" => match str_param(&params, "id") {
            Ok(tid) => h
                .cancel_task(
                    p,
                    sdk::CancelTaskRequest {
                        id: tid.to_string(),
                        metadata: None,
                        tenant: None,
                    },
                )
                .await
                .map(|t| task_to_v03(t.to_json())),
            Err(e) => Err(e),
        },
        "tasks/pushNotificationConfig/set" => {
            match (
                str_param(&params, "taskId"),
                params.get("pushNotificationConfig"),
            ) {
                (Ok(tid), Some(c)) => match push_from_v03(tid, c) {
                    Ok(cfg) => h.create_push_config(p, cfg).await.map(|c| push_to_v03(&c)),
                    Err(e) => Err(e),
                },
                (Err(e), _) => Err(e),
                (_, None) => Err(A2AError::invalid_params(
                    "`pushNotificationConfig` is missing",
                )),
            }
        }
        "tasks/pushNotificationConfig/get" => match str_param(&params, "id") {
            Ok(tid) => {
                let wanted = params
                    .get("pushNotificationConfigId")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let listed = h
                    .list_push_configs(
                        p,
                        sdk::ListTaskPushNotificationConfigsRequest {
                            task_id: tid.to_string(),
                            page_size: None,
                            page_token: None,
                            tenant: None,
                        },
                    )
                    .await;
                listed.and_then(|l| {
                    l.configs
                        .iter()
                        .find(|c| wanted.is_none() || c.id == wanted)
                        .map(push_to_v03)
                        .ok_or_else(|| {
                            A2AError::invalid_params("no such push notification configuration")
                        })
                })
            }
            Err(e) => Err(e),
        },
        "tasks/pushNotificationConfig/list" => match str_param(&params, "id") {
            Ok(tid) => h
                .list_push_configs(
                    p,
                    sdk::ListTaskPushNotificationConfigsRequest {
                        task_id: tid.to_string(),
                        page_size: None,
                        page_token: None,
                        tenant: None,
                    },
                )
                .await
                .map(|l| Value::Array(l.configs.iter().map(push_to_v03).collect())),
            Err(e) => Err(e),
        },
        "tasks/pushNotificationConfig/delete" => {
            match (
                str_param(&params, "id"),
                str_param(&params, "pushNotificationConfigId"),
            ) {
                (Ok(tid), Ok(cid)) => h
                    .delete_push_config(
                        p,
                        sdk::DeleteTaskPushNotificationConfigRequest {
                            task_id: tid.to_string(),
                            id: cid.to_string(),
                            tenant: None,
                        },
                    )
                    .await
                    .map(|()| Value::Null),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        "agent/getAuthenticatedExtendedCard" => Ok((*extended_card).clone()),
        other => Err(A2AError::method_not_found(other)),
    };
    Json(reply(&id, result)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_between_versions() {
        let v03 = json!({
            "kind": "message", "messageId": "m1", "role": "user", "contextId": "c1",
            "parts": [
                {"kind": "text", "text": "hi"},
                {"kind": "data", "data": {"n": 1}},
                {"kind": "file", "file": {"uri": "https://x/y.pdf", "mimeType": "application/pdf", "name": "y.pdf"}}
            ]
        });
        let m = message_from_v03(&v03).unwrap();
        assert_eq!(m.role, sdk::Role::User);
        assert_eq!(m.parts.len(), 3);
        let back = message_to_v03(m.to_json());
        assert_eq!(back["kind"], "message");
        assert_eq!(back["role"], "user");
        assert_eq!(back["parts"][0], json!({"kind": "text", "text": "hi"}));
        assert_eq!(back["parts"][1]["data"], json!({"n": 1}));
        assert_eq!(back["parts"][2]["file"]["uri"], "https://x/y.pdf");
        assert_eq!(back["parts"][2]["file"]["name"], "y.pdf");
        for bad in [
            json!({"role": "robot", "parts": []}),
            json!({"role": "user"}),
            json!({"role": "user", "parts": [{"kind": "video"}]}),
            json!("text"),
        ] {
            assert!(message_from_v03(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tasks_and_events_take_v03_shapes() {
        let t = json!({
            "id": "t", "contextId": "c",
            "status": {"state": "TASK_STATE_INPUT_REQUIRED", "message": {"messageId": "q", "role": "ROLE_AGENT", "parts": [{"text": "Which city?"}]}},
            "artifacts": [{"artifactId": "a", "parts": [{"text": "x"}]}],
            "history": [{"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "book"}]}]
        });
        let v = task_to_v03(t);
        assert_eq!(v["kind"], "task");
        assert_eq!(v["status"]["state"], "input-required");
        assert_eq!(v["status"]["message"]["role"], "agent");
        assert_eq!(v["artifacts"][0]["parts"][0]["kind"], "text");
        assert_eq!(v["history"][0]["role"], "user");
        assert!(final_v03("input-required") && !final_v03("working"));
    }
}
