//! A2A over the bus: the SDK's `RequestHandler`, implemented by sending each
//! task to the orchestrator and converting between the SDK's types and the
//! wire's (`a2a_pb::pbconv`).

use std::collections::HashMap;
use std::time::Duration;

use a2a as sdk;
use a2a_pb::pbconv;
use a2a_server::{RequestHandler, ServiceParams};
use futures::StreamExt;
use futures::stream::BoxStream;
use hearth_agents::Specs;
use hearth_agents::convert::is_final;
use hearth_mesh::clients::AgentClient;
use hearth_mesh::subjects::Service;
use hearth_mesh::{Config, SharedBus};
use hearth_proto::a2a::stream_response::Payload;
use hearth_proto::v1::{CancelTaskRequest, GetTaskRequest, SendTaskRequest};
use sdk::A2AError;
use tonic::Code;

/// The gateway's A2A handler.
pub struct A2aHandler {
    orchestrator: AgentClient,
    task_timeout: Duration,
}

impl A2aHandler {
    /// A handler that sends tasks to the orchestrator on `bus`.
    pub fn new(config: &Config, bus: SharedBus) -> Self {
        Self {
            orchestrator: AgentClient::new(
                bus,
                config.subjects(),
                Service::Orchestrator,
                config.task_timeout(),
            ),
            task_timeout: config.task_timeout(),
        }
    }
}

/// A bus or service error as an A2A error.
fn a2a_error(status: tonic::Status, task_id: Option<&str>) -> A2AError {
    match status.code() {
        Code::NotFound if task_id.is_some() => {
            A2AError::task_not_found(task_id.unwrap_or_default())
        }
        Code::FailedPrecondition if task_id.is_some() => {
            A2AError::task_not_cancelable(task_id.unwrap_or_default())
        }
        Code::InvalidArgument => A2AError::invalid_params(status.message()),
        Code::Unimplemented => A2AError::unsupported_operation(status.message()),
        _ => A2AError::internal(format!("{:?}: {}", status.code(), status.message())),
    }
}

fn event_to_sdk(ev: hearth_proto::a2a::StreamResponse) -> Option<sdk::StreamResponse> {
    Some(match ev.payload? {
        Payload::Task(t) => sdk::StreamResponse::Task(pbconv::from_proto_task(&t)),
        Payload::Message(m) => sdk::StreamResponse::Message(pbconv::from_proto_message(&m)),
        Payload::StatusUpdate(u) => sdk::StreamResponse::StatusUpdate(sdk::TaskStatusUpdateEvent {
            task_id: u.task_id,
            context_id: u.context_id,
            status: u.status.as_ref().map(pbconv::from_proto_task_status)?,
            metadata: None,
        }),
        Payload::ArtifactUpdate(u) => {
            sdk::StreamResponse::ArtifactUpdate(sdk::TaskArtifactUpdateEvent {
                task_id: u.task_id,
                context_id: u.context_id,
                artifact: u.artifact.as_ref().map(pbconv::from_proto_artifact)?,
                append: Some(u.append),
                last_chunk: Some(u.last_chunk),
                metadata: None,
            })
        }
    })
}

impl A2aHandler {
    async fn start(
        &self,
        req: sdk::SendMessageRequest,
    ) -> Result<BoxStream<'static, Result<hearth_proto::v1::TaskEvent, tonic::Status>>, A2AError>
    {
        if req.message.parts.is_empty() {
            return Err(A2AError::invalid_params("the message has no parts"));
        }
        let message = pbconv::to_proto_message(&req.message);
        let send = SendTaskRequest {
            task_id: message.task_id.clone(),
            message: Some(message),
            agent: String::new(),
            timeout_ms: u32::try_from(self.task_timeout.as_millis()).unwrap_or(u32::MAX),
        };
        self.orchestrator
            .send_task(&send)
            .await
            .map_err(|s| a2a_error(s, None))
    }
}

#[async_trait::async_trait]
impl RequestHandler for A2aHandler {
    async fn send_message(
        &self,
        _params: &ServiceParams,
        req: sdk::SendMessageRequest,
    ) -> Result<sdk::SendMessageResponse, A2AError> {
        let history_length = req.configuration.as_ref().and_then(|c| c.history_length);
        let mut events = self.start(req).await?;
        let mut last = None;
        while let Some(ev) = events.next().await {
            let ev = ev.map_err(|s| a2a_error(s, None))?;
            if let Some(Payload::Task(t)) = ev.event.and_then(|e| e.payload) {
                let done = t.status.as_ref().is_some_and(|s| is_final(s.state));
                last = Some(t);
                if done {
                    break;
                }
            }
        }
        let mut task = last.ok_or_else(|| {
            A2AError::internal("the orchestrator ended the task without a result")
        })?;
        if let Some(n) = history_length {
            let n = usize::try_from(n.max(0)).unwrap_or(0);
            let len = task.history.len();
            if len > n {
                task.history.drain(..len - n);
            }
        }
        Ok(sdk::SendMessageResponse::Task(pbconv::from_proto_task(
            &task,
        )))
    }

    async fn send_streaming_message(
        &self,
        _params: &ServiceParams,
        req: sdk::SendMessageRequest,
    ) -> Result<BoxStream<'static, Result<sdk::StreamResponse, A2AError>>, A2AError> {
        let events = self.start(req).await?;
        Ok(events
            .filter_map(|ev| async move {
                match ev {
                    Ok(ev) => ev.event.and_then(event_to_sdk).map(Ok),
                    Err(s) => Some(Err(a2a_error(s, None))),
                }
            })
            .boxed())
    }

    async fn get_task(
        &self,
        _params: &ServiceParams,
        req: sdk::GetTaskRequest,
    ) -> Result<sdk::Task, A2AError> {
        let rec = self
            .orchestrator
            .get_task(&GetTaskRequest {
                id: req.id.clone(),
                history_length: req.history_length,
            })
            .await
            .map_err(|s| a2a_error(s, Some(&req.id)))?;
        let task = rec.task.ok_or_else(|| A2AError::task_not_found(&req.id))?;
        Ok(pbconv::from_proto_task(&task))
    }

    async fn list_tasks(
        &self,
        _params: &ServiceParams,
        _req: sdk::ListTasksRequest,
    ) -> Result<sdk::ListTasksResponse, A2AError> {
        Err(A2AError::unsupported_operation(
            "ListTasks is not supported yet",
        ))
    }

    async fn cancel_task(
        &self,
        _params: &ServiceParams,
        req: sdk::CancelTaskRequest,
    ) -> Result<sdk::Task, A2AError> {
        let rec = self
            .orchestrator
            .cancel_task(&CancelTaskRequest { id: req.id.clone() })
            .await
            .map_err(|s| a2a_error(s, Some(&req.id)))?;
        let task = rec.task.ok_or_else(|| A2AError::task_not_found(&req.id))?;
        Ok(pbconv::from_proto_task(&task))
    }

    async fn subscribe_to_task(
        &self,
        _params: &ServiceParams,
        _req: sdk::SubscribeToTaskRequest,
    ) -> Result<BoxStream<'static, Result<sdk::StreamResponse, A2AError>>, A2AError> {
        Err(A2AError::unsupported_operation(
            "SubscribeToTask is not supported yet",
        ))
    }

    async fn create_push_config(
        &self,
        _params: &ServiceParams,
        _req: sdk::TaskPushNotificationConfig,
    ) -> Result<sdk::TaskPushNotificationConfig, A2AError> {
        Err(A2AError::push_notification_not_supported())
    }

    async fn get_push_config(
        &self,
        _params: &ServiceParams,
        _req: sdk::GetTaskPushNotificationConfigRequest,
    ) -> Result<sdk::TaskPushNotificationConfig, A2AError> {
        Err(A2AError::push_notification_not_supported())
    }

    async fn list_push_configs(
        &self,
        _params: &ServiceParams,
        _req: sdk::ListTaskPushNotificationConfigsRequest,
    ) -> Result<sdk::ListTaskPushNotificationConfigsResponse, A2AError> {
        Err(A2AError::push_notification_not_supported())
    }

    async fn delete_push_config(
        &self,
        _params: &ServiceParams,
        _req: sdk::DeleteTaskPushNotificationConfigRequest,
    ) -> Result<(), A2AError> {
        Err(A2AError::push_notification_not_supported())
    }

    async fn get_extended_agent_card(
        &self,
        _params: &ServiceParams,
        _req: sdk::GetExtendedAgentCardRequest,
    ) -> Result<sdk::AgentCard, A2AError> {
        Err(A2AError::extended_card_not_configured())
    }
}

/// The public agent card: the orchestrator's skills, the JSON-RPC interface,
/// and the bearer scheme when a token is required.
pub fn agent_card(config: &Config, specs: &Specs, public_url: &str) -> sdk::AgentCard {
    let skills = specs
        .iter()
        .filter(|s| s.role == hearth_agents::Role::Orchestrator)
        .map(|s| sdk::AgentSkill {
            id: s.name.clone(),
            name: s.name.clone(),
            description: s.description.clone(),
            tags: vec!["hearth".into(), "local-first".into()],
            examples: None,
            input_modes: None,
            output_modes: None,
            security_requirements: None,
        })
        .collect();
    let token = !config.gateway.token.is_empty();
    let (schemes, requirements) = if token {
        let scheme = sdk::SecurityScheme::HttpAuth(sdk::HttpAuthSecurityScheme {
            scheme: "Bearer".into(),
            description: Some(
                "The token configured as gateway.token (HEARTH_GATEWAY_TOKEN).".into(),
            ),
            bearer_format: None,
        });
        (
            Some(HashMap::from([("bearer".to_string(), scheme)])),
            Some(vec![HashMap::from([("bearer".to_string(), Vec::new())])]),
        )
    } else {
        (None, None)
    };
    sdk::AgentCard {
        name: "Hearth".into(),
        description:
            "A local-first agent mesh: an orchestrator that delegates to operatives with tools."
                .into(),
        version: env!("CARGO_PKG_VERSION").into(),
        supported_interfaces: vec![sdk::AgentInterface::new(
            format!("{public_url}/"),
            sdk::TRANSPORT_PROTOCOL_JSONRPC,
        )],
        capabilities: sdk::AgentCapabilities {
            streaming: Some(true),
            push_notifications: Some(false),
            extensions: None,
            extended_agent_card: Some(false),
        },
        default_input_modes: vec!["text/plain".into()],
        default_output_modes: vec!["text/plain".into()],
        skills,
        provider: None,
        documentation_url: None,
        icon_url: None,
        security_schemes: schemes,
        security_requirements: requirements,
        signatures: None,
    }
}
