//! External A2A agents as tools of the orchestrator: each agent listed in
//! `[[agents.remote]]` is offered as `remote.<name>`, described by its agent
//! card's skills. A call sends the subtask over A2A (the official Rust SDK's
//! client: JSON-RPC, HTTP+JSON or gRPC, whichever the card offers, streaming
//! when it streams), relays its status updates as progress, and returns its
//! answer (artifacts, else its last message). An agent that cannot be
//! reached, fails or times out is a clear tool error — or, with `fallback`,
//! the subtask goes to a local operative and the answer says so.
//!
//! Cards are parsed leniently (ProtoJSON, so a card that omits empty lists
//! still reads) and checked by [`check_card`], which `hearth agents card`
//! also uses.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use a2a as sdk;
use a2a_client::middleware::CallInterceptor;
use a2a_client::transport::ServiceParams;
use futures::StreamExt;
use hearth_agents::tools::{CallContext, LocalTool, ToolOutput};
use hearth_mesh::config::RemoteAgent;
use hearth_proto::v1::ToolSpec;
use serde_json::{Value, json};
use tonic::Status;

use crate::delegate::Delegate;

/// Largest agent card read, in bytes.
const MAX_CARD_BYTES: usize = 1024 * 1024;

/// Why a card could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// It could not be fetched.
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// The card's URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// It is not an agent card.
    #[error("{url} is not an A2A agent card: {reason}")]
    Invalid {
        /// The card's URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// Where the card of the agent at `url` is: `url` itself if it names a
/// `.json` file, else its well-known path.
pub fn card_url(url: &str) -> String {
    let u = url.trim();
    if u.ends_with(".json") {
        u.to_string()
    } else {
        format!("{}/.well-known/agent-card.json", u.trim_end_matches('/'))
    }
}

/// What is wrong with a card (empty: nothing), judged against A2A v1.0.
pub fn check_card(v: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    if !v.is_object() {
        return vec!["the card is not a JSON object".into()];
    }
    for k in ["name", "description", "version"] {
        if s(k).trim().is_empty() {
            problems.push(format!("`{k}` is missing or empty"));
        }
    }
    match v.get("supportedInterfaces").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            for (i, it) in list.iter().enumerate() {
                let f = |k: &str| it.get(k).and_then(Value::as_str).unwrap_or("");
                if f("url").is_empty() {
                    problems.push(format!("supportedInterfaces[{i}] has no url"));
                }
                if !["JSONRPC", "GRPC", "HTTP+JSON"].contains(&f("protocolBinding")) {
                    problems.push(format!(
                        "supportedInterfaces[{i}] has protocolBinding {:?} (JSONRPC, GRPC or HTTP+JSON)",
                        f("protocolBinding")
                    ));
                }
                if f("protocolVersion").is_empty() {
                    problems.push(format!("supportedInterfaces[{i}] has no protocolVersion"));
                }
            }
        }
        _ if !s("url").is_empty() => problems.push(
            "no supportedInterfaces: a v0.3 card (only `url`); v1.0 clients cannot pick a binding"
                .into(),
        ),
        _ => problems.push("no supportedInterfaces and no url: nowhere to send a task".into()),
    }
    if v.get("capabilities").is_none_or(|c| !c.is_object()) {
        problems.push("`capabilities` is missing".into());
    }
    if v.get("skills")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        problems.push("no skills listed".into());
    }
    problems
}

/// Fetches and parses the card of the agent at `url`, sending the
/// credentials given (the card is usually public; some are not).
pub async fn fetch_card(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    api_key: &str,
) -> Result<(sdk::AgentCard, Value), CardError> {
    let card_url = card_url(url);
    let fail = |reason: String| CardError::Fetch {
        url: card_url.clone(),
        reason,
    };
    let mut req = http.get(&card_url).timeout(Duration::from_secs(10));
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    if !api_key.is_empty() {
        req = req.header("X-API-Key", api_key);
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_CARD_BYTES {
            return Err(fail(format!(
                "the card is larger than {MAX_CARD_BYTES} bytes"
            )));
        }
    }
    let invalid = |reason: String| CardError::Invalid {
        url: card_url.clone(),
        reason,
    };
    let v: Value = serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
    let card: sdk::AgentCard =
        a2a_pb::protojson_conv::from_value(v.clone()).map_err(|e| invalid(e.to_string()))?;
    if card.supported_interfaces.is_empty() {
        return Err(invalid(
            "it lists no interfaces (supportedInterfaces)".into(),
        ));
    }
    Ok((card, v))
}

/// Adds the configured credentials to every call.
struct Credentials {
    token: String,
    api_key: String,
}

#[async_trait::async_trait]
impl CallInterceptor for Credentials {
    async fn before(&self, _method: &str, params: &mut ServiceParams) -> Result<(), sdk::A2AError> {
        if !self.token.is_empty() {
            params.insert(
                "authorization".into(),
                vec![format!("Bearer {}", self.token)],
            );
        }
        if !self.api_key.is_empty() {
            params.insert("x-api-key".into(), vec![self.api_key.clone()]);
        }
        Ok(())
    }
}

/// One external agent, as the tool `remote.<name>`.
pub struct RemoteTool {
    cfg: RemoteAgent,
    http: reqwest::Client,
    card: RwLock<Option<sdk::AgentCard>>,
    fallback: Option<Arc<Delegate>>,
}

/// The tool name of the remote agent `name`.
pub fn tool_name(name: &str) -> String {
    format!("remote.{name}")
}

fn text_of_parts(parts: &[sdk::Part]) -> String {
    parts
        .iter()
        .filter_map(|p| match &p.content {
            sdk::PartContent::Text(t) => Some(t.clone()),
            sdk::PartContent::Data(d) => Some(d.to_string()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How the remote task ended: its answer, or why it failed.
enum Ending {
    Answer(String),
    Question(String),
    Failed(String),
}

fn ending_of(task: &sdk::Task) -> Option<Ending> {
    let text = || {
        let from_artifacts: Vec<String> = task
            .artifacts
            .iter()
            .flatten()
            .map(|a| text_of_parts(&a.parts))
            .filter(|t| !t.is_empty())
            .collect();
        if from_artifacts.is_empty() {
            task.status
                .message
                .as_ref()
                .map(|m| text_of_parts(&m.parts))
                .unwrap_or_default()
        } else {
            from_artifacts.join("\n")
        }
    };
    Some(match task.status.state {
        sdk::TaskState::Completed => Ending::Answer(text()),
        sdk::TaskState::InputRequired | sdk::TaskState::AuthRequired => Ending::Question(text()),
        sdk::TaskState::Failed | sdk::TaskState::Canceled | sdk::TaskState::Rejected => {
            Ending::Failed(format!(
                "its task ended {:?}: {}",
                task.status.state,
                text()
            ))
        }
        _ => return None,
    })
}

impl RemoteTool {
    /// The agent `cfg`; `fallback` runs a subtask locally when it fails.
    pub fn new(cfg: RemoteAgent, http: reqwest::Client, fallback: Option<Arc<Delegate>>) -> Self {
        Self {
            cfg,
            http,
            card: RwLock::new(None),
            fallback,
        }
    }

    fn cached(&self) -> Option<sdk::AgentCard> {
        self.card.read().ok().and_then(|c| c.clone())
    }

    /// Fetches the card now (and keeps it).
    pub async fn refresh(&self) -> Result<sdk::AgentCard, CardError> {
        let (card, _) = fetch_card(
            &self.http,
            &self.cfg.url,
            self.cfg.token.expose(),
            self.cfg.api_key.expose(),
        )
        .await?;
        if let Ok(mut slot) = self.card.write() {
            *slot = Some(card.clone());
        }
        Ok(card)
    }

    /// Runs `task` at the remote agent.
    async fn ask(&self, ctx: &CallContext, task: &str) -> Result<String, String> {
        let card = match self.cached() {
            Some(c) => c,
            None => self.refresh().await.map_err(|e| e.to_string())?,
        };
        let factory = a2a_client::A2AClientFactory::builder()
            .register(Arc::new(a2a_grpc::GrpcTransportFactory::new()))
            .preferred_bindings(vec![
                sdk::TRANSPORT_PROTOCOL_JSONRPC.into(),
                sdk::TRANSPORT_PROTOCOL_HTTP_JSON.into(),
                sdk::TRANSPORT_PROTOCOL_GRPC.into(),
            ])
            .with_interceptor(Arc::new(Credentials {
                token: self.cfg.token.expose().to_string(),
                api_key: self.cfg.api_key.expose().to_string(),
            }))
            .build();
        let client = factory
            .create_from_card(&card)
            .await
            .map_err(|e| format!("no usable interface in its card: {}", e.message))?;
        let mut message = sdk::Message::new(sdk::Role::User, vec![sdk::Part::text(task)]);
        message.context_id = Some(ctx.context_id.clone()).filter(|c| !c.is_empty());
        let req = sdk::SendMessageRequest {
            message,
            configuration: None,
            metadata: None,
            tenant: None,
        };
        let name = &self.cfg.name;
        let streaming = card.capabilities.streaming == Some(true);
        let ending = if streaming {
            let mut events = client
                .send_streaming_message(&req)
                .await
                .map_err(|e| e.message)?;
            let mut artifacts: Vec<String> = Vec::new();
            let mut ending = None;
            while let Some(ev) = events.next().await {
                match ev.map_err(|e| e.message)? {
                    sdk::StreamResponse::Task(t) => {
                        if let Some(e) = ending_of(&t) {
                            ending = Some(e);
                            break;
                        }
                    }
                    sdk::StreamResponse::Message(m) => {
                        ending = Some(Ending::Answer(text_of_parts(&m.parts)));
                        break;
                    }
                    sdk::StreamResponse::StatusUpdate(u) => {
                        let text = u
                            .status
                            .message
                            .as_ref()
                            .map(|m| text_of_parts(&m.parts))
                            .unwrap_or_default();
                        let t = sdk::Task {
                            id: u.task_id.clone(),
                            context_id: u.context_id.clone(),
                            status: u.status.clone(),
                            artifacts: None,
                            history: None,
                            metadata: None,
                        };
                        match ending_of(&t) {
                            Some(Ending::Answer(a)) if !artifacts.is_empty() || !a.is_empty() => {
                                let joined = if artifacts.is_empty() {
                                    a
                                } else {
                                    artifacts.join("\n")
                                };
                                ending = Some(Ending::Answer(joined));
                                break;
                            }
                            Some(e @ (Ending::Failed(_) | Ending::Question(_))) => {
                                ending = Some(e);
                                break;
                            }
                            _ => {
                                if !text.is_empty()
                                    && let Some(p) = ctx.progress.as_ref()
                                {
                                    p(format!("remote {name}: {text}"));
                                }
                            }
                        }
                    }
                    sdk::StreamResponse::ArtifactUpdate(u) => {
                        let t = text_of_parts(&u.artifact.parts);
                        if !t.is_empty() {
                            artifacts.push(t);
                        }
                    }
                }
            }
            match ending {
                Some(e) => e,
                None if !artifacts.is_empty() => Ending::Answer(artifacts.join("\n")),
                None => return Err("its event stream ended before its task did".into()),
            }
        } else {
            match client.send_message(&req).await.map_err(|e| e.message)? {
                sdk::SendMessageResponse::Message(m) => Ending::Answer(text_of_parts(&m.parts)),
                sdk::SendMessageResponse::Task(t) => ending_of(&t)
                    .ok_or_else(|| format!("it returned its task still {:?}", t.status.state))?,
            }
        };
        match ending {
            Ending::Answer(a) if a.trim().is_empty() => Err("it answered with no text".into()),
            Ending::Answer(a) => Ok(a),
            Ending::Question(q) => Ok(format!("(the remote agent needs more input) {q}")),
            Ending::Failed(why) => Err(why),
        }
    }
}

#[async_trait::async_trait]
impl LocalTool for RemoteTool {
    fn spec(&self) -> ToolSpec {
        let about = match self.cached() {
            Some(card) => {
                let skills: Vec<String> = card
                    .skills
                    .iter()
                    .map(|s| {
                        if s.description.is_empty() {
                            s.name.clone()
                        } else {
                            format!("{}: {}", s.name, s.description)
                        }
                    })
                    .collect();
                format!(
                    "{} — {}{}",
                    card.name,
                    card.description,
                    if skills.is_empty() {
                        String::new()
                    } else {
                        format!(" Skills: {}.", skills.join("; "))
                    }
                )
            }
            None => format!(
                "(its card at {} has not been read yet)",
                card_url(&self.cfg.url)
            ),
        };
        // Card text is the remote's: keep it from crowding the context.
        let about: String = about.chars().take(600).collect();
        ToolSpec {
            name: tool_name(&self.cfg.name),
            description: format!(
                "Hand a task to the external A2A agent `{}` and get its answer. {about}",
                self.cfg.name
            ),
            input_schema_json: crate::delegate::task_schema(),
        }
    }

    async fn call(&self, ctx: &CallContext, arguments_json: &str) -> Result<ToolOutput, Status> {
        let task = match crate::delegate::task_argument(arguments_json) {
            Ok(task) => task,
            Err(refused) => return Ok(*refused),
        };
        let task = task.as_str();
        let name = &self.cfg.name;
        if ctx.is_sensitive() && !self.cfg.local {
            // A sensitive task's work stays on this machine: a local
            // operative takes it when one may, else the call is refused.
            if let Some(local) = &self.fallback {
                let mut out = local
                    .call(ctx, &json!({ "task": task }).to_string())
                    .await?;
                out.content = format!(
                    "(the task is sensitive, so it was not sent to the remote agent `{name}`: a local operative answered) {}",
                    out.content
                );
                return Ok(out);
            }
            return Ok(ToolOutput {
                content: format!(
                    "the task is sensitive: it may not be sent to the remote agent `{name}`, which is not marked local"
                ),
                is_error: true,
                usage: None,
            });
        }
        let deadline = Duration::from_millis(self.cfg.timeout_ms.max(1));
        let outcome = match tokio::time::timeout(deadline, self.ask(ctx, task)).await {
            Ok(r) => r,
            Err(_) => Err(format!("it did not answer within {deadline:?}")),
        };
        match outcome {
            Ok(answer) => Ok(ToolOutput {
                content: answer,
                is_error: false,
                usage: None,
            }),
            Err(why) => {
                tracing::warn!(agent = %name, reason = %why, "remote agent failed");
                if let Some(p) = ctx.progress.as_ref() {
                    p(format!("remote {name} failed: {why}"));
                }
                match &self.fallback {
                    Some(local) => {
                        let mut out = local
                            .call(ctx, &json!({ "task": task }).to_string())
                            .await?;
                        out.content = format!(
                            "(the remote agent `{name}` failed — {why} — so a local operative answered) {}",
                            out.content
                        );
                        Ok(out)
                    }
                    None => Ok(ToolOutput {
                        content: format!("the remote agent `{name}` failed: {why}"),
                        is_error: true,
                        usage: None,
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_urls_and_checks() {
        assert_eq!(
            card_url("http://h:1/"),
            "http://h:1/.well-known/agent-card.json"
        );
        assert_eq!(card_url("http://h/x/card.json"), "http://h/x/card.json");
        let good = json!({
            "name": "n", "description": "d", "version": "1",
            "supportedInterfaces": [{"url": "http://h/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
            "capabilities": {}, "skills": [{"id": "s", "name": "s", "description": "d"}]
        });
        assert!(check_card(&good).is_empty(), "{:?}", check_card(&good));
        let bad =
            json!({"name": "", "supportedInterfaces": [{"url": "", "protocolBinding": "SOAP"}]});
        let p = check_card(&bad);
        assert!(p.iter().any(|x| x.contains("`name`")), "{p:?}");
        assert!(p.iter().any(|x| x.contains("SOAP")), "{p:?}");
        assert!(p.iter().any(|x| x.contains("no url")), "{p:?}");
        assert!(p.iter().any(|x| x.contains("skills")), "{p:?}");
        assert_eq!(check_card(&json!([1])).len(), 1);
    }
}
