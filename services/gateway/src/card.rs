//! The agent card: who Hearth is to other agents, where each binding
//! listens, what it can do, and how to authenticate.
//!
//! The public card (at `/.well-known/agent-card.json`, no token needed)
//! lists the orchestrator's skills; the extended card (`GetExtendedAgentCard`,
//! token needed when one is configured) adds the operatives' skills and the
//! external agents the orchestrator may delegate to. The served JSON also
//! carries the v0.3 fields (`url`, `preferredTransport`, `protocolVersion`,
//! `additionalInterfaces`) so that clients of that version find the
//! JSON-RPC endpoint too; v1.0 clients ignore them.

use std::collections::HashMap;
use std::sync::Arc;

use a2a as sdk;
use axum::Json;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use hearth_mesh::Config;
use hearth_specs::{Role, Specs};
use serde_json::{Value, json};

/// Where each binding is reached.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `http://host:port` of JSON-RPC (at `/`) and HTTP+JSON.
    pub http: String,
    /// `host:port` of gRPC, when it runs.
    pub grpc: Option<String>,
}

fn skill(name: &str, description: &str, tags: &[&str]) -> sdk::AgentSkill {
    sdk::AgentSkill {
        id: name.to_string(),
        name: name.to_string(),
        description: description.to_string(),
        tags: tags.iter().map(|t| (*t).to_string()).collect(),
        examples: None,
        input_modes: None,
        output_modes: None,
        security_requirements: None,
    }
}

/// The card; `extended` adds the operatives and the external agents.
pub fn agent_card(
    config: &Config,
    specs: &Specs,
    at: &Endpoints,
    extended: bool,
) -> sdk::AgentCard {
    let mut skills: Vec<sdk::AgentSkill> = specs
        .iter()
        .filter(|s| s.role == Role::Orchestrator || (extended && s.role == Role::Operative))
        .map(|s| {
            let kind = if s.role == Role::Orchestrator {
                "orchestrator"
            } else {
                "operative"
            };
            skill(&s.name, &s.description, &["hearth", "local-first", kind])
        })
        .collect();
    if extended {
        for r in &config.agents.remote {
            skills.push(skill(
                &format!("remote.{}", r.name),
                &format!(
                    "An external A2A agent the orchestrator may delegate to ({}).",
                    r.url
                ),
                &["hearth", "remote", "a2a"],
            ));
        }
    }
    let token = !config.gateway.token.is_empty();
    let (schemes, requirements) = if token {
        let bearer = sdk::SecurityScheme::HttpAuth(sdk::HttpAuthSecurityScheme {
            scheme: "Bearer".into(),
            description: Some("The gateway's token (gateway.token, HEARTH_GATEWAY_TOKEN).".into()),
            bearer_format: None,
        });
        let key = sdk::SecurityScheme::ApiKey(sdk::ApiKeySecurityScheme {
            location: "header".into(),
            name: "X-API-Key".into(),
            description: Some("The same token, as an API key header.".into()),
        });
        (
            Some(HashMap::from([
                ("bearer".to_string(), bearer),
                ("apiKey".to_string(), key),
            ])),
            // Either one.
            Some(vec![
                HashMap::from([("bearer".to_string(), Vec::new())]),
                HashMap::from([("apiKey".to_string(), Vec::new())]),
            ]),
        )
    } else {
        (None, None)
    };
    let mut interfaces = vec![
        sdk::AgentInterface::new(format!("{}/", at.http), sdk::TRANSPORT_PROTOCOL_JSONRPC),
        sdk::AgentInterface::new(at.http.clone(), sdk::TRANSPORT_PROTOCOL_HTTP_JSON),
    ];
    if let Some(g) = &at.grpc {
        interfaces.push(sdk::AgentInterface::new(
            format!("http://{g}"),
            sdk::TRANSPORT_PROTOCOL_GRPC,
        ));
    }
    sdk::AgentCard {
        name: "Hearth".into(),
        description: "A local-first agent mesh: an orchestrator that delegates to operatives with tools (calculator, files, web, code, retrieval) and to external A2A agents.".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        supported_interfaces: interfaces,
        capabilities: sdk::AgentCapabilities {
            streaming: Some(true),
            push_notifications: Some(true),
            extensions: None,
            extended_agent_card: Some(true),
        },
        default_input_modes: vec!["text/plain".into(), "application/json".into()],
        default_output_modes: vec!["text/plain".into()],
        skills,
        provider: Some(sdk::AgentProvider {
            organization: "Hearth".into(),
            url: at.http.clone(),
        }),
        documentation_url: None,
        icon_url: None,
        security_schemes: schemes,
        security_requirements: requirements,
        signatures: None,
    }
}

/// The card as served: v1.0, with the v0.3 fields beside.
pub fn card_json(card: &sdk::AgentCard, at: &Endpoints) -> Value {
    let mut v = serde_json::to_value(card).unwrap_or_else(|_| json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert("protocolVersion".into(), json!("0.3.0"));
        o.insert("url".into(), json!(format!("{}/", at.http)));
        o.insert("preferredTransport".into(), json!("JSONRPC"));
        let mut more = vec![json!({"url": at.http, "transport": "HTTP+JSON"})];
        if let Some(g) = &at.grpc {
            more.push(json!({"url": g, "transport": "GRPC"}));
        }
        o.insert("additionalInterfaces".into(), Value::Array(more));
    }
    v
}

/// `GET /.well-known/agent-card.json` (and the v0.2 name `agent.json`),
/// public, cacheable, readable from browsers.
pub fn router(json: Arc<Value>) -> Router {
    let serve = move || {
        let json = json.clone();
        async move {
            (
                [
                    (header::CACHE_CONTROL, "public, max-age=300"),
                    (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                ],
                Json((*json).clone()),
            )
                .into_response()
        }
    };
    Router::new()
        .route("/.well-known/agent-card.json", get(serve.clone()))
        .route("/.well-known/agent.json", get(serve))
}
