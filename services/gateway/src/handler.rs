//! A2A over the bus: the SDK's `RequestHandler`, implemented once by sending
//! each task to the orchestrator, and served by every binding (JSON-RPC,
//! HTTP+JSON, gRPC, and the v0.3 JSON-RPC names). Conversions between the
//! SDK's types and the wire's are `a2a_pb::pbconv`'s.
//!
//! Over NATS with the durable mesh on (the default there), a new task goes
//! through the orchestrators' work queue and its events are read back from
//! the events stream: an orchestrator that dies mid-task is replaced by
//! another (or itself, restarted), and the caller still gets its answer.
//! A task the orchestrators no longer hold in memory is read back from the
//! events kept (`GetTask`, `SubscribeToTask`).
//!
//! Tasks sent here are interactive: the orchestrator may answer with a
//! question (`TASK_STATE_INPUT_REQUIRED`), and the next message naming the
//! same task continues it. Push-notification webhooks hear every event of a
//! task whose events pass through this gateway.

use std::sync::Arc;
use std::time::Duration;

use a2a as sdk;
use a2a_pb::pbconv;
use a2a_server::{RequestHandler, ServiceParams};
use futures::StreamExt;
use futures::stream::BoxStream;
use hearth_mesh::a2a::{is_final, is_terminal, state_name, trim_history};
use hearth_mesh::clients::AgentClient;
use hearth_mesh::subjects::Service;
use hearth_mesh::work::{WorkQueue, WorkSettings};
use hearth_mesh::{Config, Headers, SharedBus, Subjects};
use hearth_proto::a2a::stream_response::Payload;
use hearth_proto::v1::{CancelTaskRequest, GetTaskRequest, SendTaskRequest, TaskEvent};
use sdk::A2AError;
use tokio::sync::mpsc;
use tonic::Code;

use crate::push::Push;

/// The gateway's A2A handler.
pub struct A2aHandler {
    orchestrator: AgentClient,
    task_timeout: Duration,
    push: Arc<Push>,
    extended_card: sdk::AgentCard,
    durable: Option<Durable>,
}

/// The orchestrators' work queue, attached on first use (the orchestrator
/// that makes it may start after the gateway).
struct Durable {
    nats: async_nats::Client,
    subjects: Subjects,
    settings: WorkSettings,
    queue: tokio::sync::OnceCell<WorkQueue>,
}

impl Durable {
    /// The queue, when it is there (else new tasks go by request).
    async fn queue(&self) -> Option<&WorkQueue> {
        let attached = self
            .queue
            .get_or_try_init(|| {
                WorkQueue::attach(self.nats.clone(), &self.subjects, self.settings.clone())
            })
            .await;
        match attached {
            Ok(q) => Some(q),
            Err(e) => {
                tracing::info!(error = %e, "no durable work queue on this mesh yet: sending by request");
                None
            }
        }
    }
}

impl A2aHandler {
    /// A handler that sends tasks to the orchestrator on `bus`, and answers
    /// `GetExtendedAgentCard` with `extended_card`.
    pub fn new(config: &Config, bus: SharedBus, extended_card: sdk::AgentCard) -> Self {
        Self {
            orchestrator: AgentClient::new(
                bus.clone(),
                config.subjects(),
                Service::Orchestrator,
                config.task_timeout(),
            ),
            task_timeout: config.task_timeout(),
            push: Arc::new(Push::new(config.gateway.push_allow_private)),
            extended_card,
            durable: match bus.nats() {
                Some(nats) if config.work.durable => Some(Durable {
                    nats: nats.clone(),
                    subjects: config.subjects(),
                    settings: WorkSettings::from_config(config),
                    queue: tokio::sync::OnceCell::new(),
                }),
                _ => None,
            },
        }
    }

    /// The work queue, when tasks go through one.
    async fn queue(&self) -> Option<&WorkQueue> {
        match &self.durable {
            Some(d) => d.queue().await,
            None => None,
        }
    }

    /// The task `id` as its last kept event has it (a durable task the
    /// orchestrators no longer hold in memory: one restarted, say).
    async fn kept_task(&self, id: &str) -> Option<hearth_proto::a2a::Task> {
        let queue = self.queue().await?;
        let events = queue.history(id).await.ok()?;
        events
            .into_iter()
            .rev()
            .find_map(|ev| match ev.event.and_then(|e| e.payload) {
                Some(Payload::Task(t)) => Some(t),
                _ => None,
            })
    }
}

/// A bus or service error as an A2A error.
fn a2a_error(status: tonic::Status, task_id: Option<&str>) -> A2AError {
    match (status.code(), task_id) {
        (Code::NotFound, Some(id)) => A2AError::task_not_found(id),
        (Code::InvalidArgument | Code::AlreadyExists, _) => {
            A2AError::invalid_params(status.message())
        }
        (Code::Unimplemented, _) => A2AError::unsupported_operation(status.message()),
        (Code::Unavailable, _) => A2AError::internal(format!(
            "the orchestrator is not reachable: {}",
            status.message()
        )),
        (Code::DeadlineExceeded, _) => A2AError::internal(format!(
            "the orchestrator did not answer in time: {}",
            status.message()
        )),
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

/// A bus stream whose first frame is an error is that error (answered as
/// one, not as the first event of a stream that then ends).
async fn first_or_error(
    mut events: BoxStream<'static, Result<TaskEvent, tonic::Status>>,
) -> Result<BoxStream<'static, Result<TaskEvent, tonic::Status>>, tonic::Status> {
    match events.next().await {
        None => Ok(futures::stream::empty().boxed()),
        Some(Err(s)) => Err(s),
        Some(Ok(first)) => Ok(futures::stream::iter([Ok(first)]).chain(events).boxed()),
    }
}

/// A required field that came empty (or missing) is invalid params.
fn need(field: &str, value: &str) -> Result<(), A2AError> {
    if value.trim().is_empty() {
        return Err(A2AError::invalid_params(format!("`{field}` is required")));
    }
    Ok(())
}

fn task_id_of(ev: &sdk::StreamResponse) -> &str {
    match ev {
        sdk::StreamResponse::Task(t) => &t.id,
        sdk::StreamResponse::Message(m) => m.task_id.as_deref().unwrap_or(""),
        sdk::StreamResponse::StatusUpdate(u) => &u.task_id,
        sdk::StreamResponse::ArtifactUpdate(u) => &u.task_id,
    }
}

/// The events of one task as they pass through the gateway, handed on to
/// its webhooks in order (by a task of their own, so a slow webhook never
/// slows the caller).
struct Relay {
    push: Arc<Push>,
    tx: Option<mpsc::Sender<sdk::StreamResponse>>,
    /// A webhook the send request itself asked for, registered once the
    /// task has an id.
    pending: Option<sdk::TaskPushNotificationConfig>,
}

impl Relay {
    fn new(push: Arc<Push>, pending: Option<sdk::TaskPushNotificationConfig>) -> Self {
        Self {
            push,
            tx: None,
            pending,
        }
    }

    async fn pass(&mut self, ev: &sdk::StreamResponse) -> Result<(), A2AError> {
        let id = task_id_of(ev).to_string();
        if let Some(mut config) = self.pending.take() {
            config.task_id.clone_from(&id);
            self.push.save(config).await?;
        }
        if self.tx.is_none() && self.push.wanted(&id).await {
            let (tx, mut rx) = mpsc::channel::<sdk::StreamResponse>(256);
            let push = self.push.clone();
            tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    push.deliver(task_id_of(&ev), &ev).await;
                }
            });
            self.tx = Some(tx);
        }
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(ev.clone());
        }
        Ok(())
    }
}

impl A2aHandler {
    /// Starts (or continues) a task at the orchestrator.
    async fn start(
        &self,
        req: &sdk::SendMessageRequest,
    ) -> Result<BoxStream<'static, Result<TaskEvent, tonic::Status>>, A2AError> {
        if req.message.parts.is_empty() {
            return Err(A2AError::invalid_params("the message has no parts"));
        }
        if let Some(cfg) = req
            .configuration
            .as_ref()
            .and_then(|c| c.task_push_notification_config.as_ref())
        {
            self.push.check_url(&cfg.url).await?;
        }
        self.start_message(pbconv::to_proto_message(&req.message), "", true)
            .await
    }

    /// The push-notification webhooks' store and address rules (webhook
    /// callbacks follow the same rules).
    pub(crate) fn push(&self) -> &Arc<Push> {
        &self.push
    }

    /// Starts (or continues) a task at the orchestrator with a wire message
    /// (the OpenAI face builds its own).
    pub(crate) async fn start_message(
        &self,
        mut message: hearth_proto::a2a::Message,
        agent: &str,
        interactive: bool,
    ) -> Result<BoxStream<'static, Result<TaskEvent, tonic::Status>>, A2AError> {
        // Only the mesh itself says which task's budget a task draws on.
        if let Some(m) = message.metadata.as_mut() {
            m.fields.remove(hearth_mesh::a2a::META_ROOT_TASK);
        }
        // A message naming a task continues it: the task must exist and be
        // waiting for input.
        if !message.task_id.is_empty() {
            let rec = self
                .orchestrator
                .get_task(&GetTaskRequest {
                    id: message.task_id.clone(),
                    history_length: Some(0),
                })
                .await
                .map_err(|s| a2a_error(s, Some(&message.task_id)))?;
            let state = rec
                .task
                .as_ref()
                .and_then(|t| t.status.as_ref())
                .map_or(0, |s| s.state);
            if is_terminal(state) {
                return Err(A2AError::unsupported_operation(format!(
                    "task {} is {} and cannot take more messages; send a new message (with the same contextId to keep the conversation)",
                    message.task_id,
                    state_name(state)
                )));
            }
        }
        let mut send = SendTaskRequest {
            task_id: message.task_id.clone(),
            message: Some(message),
            agent: agent.to_string(),
            timeout_ms: u32::try_from(self.task_timeout.as_millis()).unwrap_or(u32::MAX),
            interactive,
        };
        // A new task goes through the work queue when there is one; an
        // answer to a question goes to the orchestrator holding the task.
        if send.task_id.is_empty()
            && let Some(queue) = self.queue().await
        {
            send.task_id = uuid::Uuid::now_v7().to_string();
            let mut headers = Headers::new();
            hearth_mesh::telemetry::inject(&tracing::Span::current(), &mut headers);
            let deadline = std::time::SystemTime::now() + self.task_timeout;
            let submitted = queue
                .submit_until(Service::Orchestrator, send, &headers, Some(deadline))
                .await
                .map_err(|e| {
                    A2AError::internal(format!("the work queue did not take the task: {e}"))
                })?;
            return first_or_error(submitted.events(self.task_timeout))
                .await
                .map_err(|s| a2a_error(s, None));
        }
        let events = self
            .orchestrator
            .send_task(&send)
            .await
            .map_err(|s| a2a_error(s, None))?;
        first_or_error(events).await.map_err(|s| a2a_error(s, None))
    }

    /// The configured webhook of a send request, if any.
    fn push_of(req: &sdk::SendMessageRequest) -> Option<sdk::TaskPushNotificationConfig> {
        req.configuration
            .as_ref()
            .and_then(|c| c.task_push_notification_config.clone())
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
        let immediately = req
            .configuration
            .as_ref()
            .and_then(|c| c.return_immediately)
            .unwrap_or(false);
        let mut relay = Relay::new(self.push.clone(), Self::push_of(&req));
        let mut events = self.start(&req).await?;
        let mut last = None;
        while let Some(ev) = events.next().await {
            let ev = ev.map_err(|s| a2a_error(s, None))?;
            let Some(sdk_ev) = ev.event.clone().and_then(event_to_sdk) else {
                continue;
            };
            relay.pass(&sdk_ev).await?;
            if let Some(Payload::Task(t)) = ev.event.and_then(|e| e.payload) {
                let done = t.status.as_ref().is_some_and(|s| is_final(s.state));
                last = Some(t);
                if done {
                    break;
                }
                if immediately {
                    // The rest of the task goes on without the caller
                    // (its webhooks still hear it).
                    tokio::spawn(async move {
                        while let Some(Ok(ev)) = events.next().await {
                            if let Some(e) = ev.event.and_then(event_to_sdk) {
                                let _ = relay.pass(&e).await;
                            }
                        }
                    });
                    break;
                }
            }
        }
        let task = last.ok_or_else(|| {
            A2AError::internal("the orchestrator ended the task without a result")
        })?;
        Ok(sdk::SendMessageResponse::Task(pbconv::from_proto_task(
            &trim_history(task, history_length),
        )))
    }

    async fn send_streaming_message(
        &self,
        _params: &ServiceParams,
        req: sdk::SendMessageRequest,
    ) -> Result<BoxStream<'static, Result<sdk::StreamResponse, A2AError>>, A2AError> {
        let relay = Relay::new(self.push.clone(), Self::push_of(&req));
        let events = self.start(&req).await?;
        let relay = Arc::new(tokio::sync::Mutex::new(relay));
        Ok(events
            .filter_map(move |ev| {
                let relay = relay.clone();
                async move {
                    match ev {
                        Ok(ev) => {
                            let e = ev.event.and_then(event_to_sdk)?;
                            if let Err(err) = relay.lock().await.pass(&e).await {
                                return Some(Err(err));
                            }
                            Some(Ok(e))
                        }
                        Err(s) => Some(Err(a2a_error(s, None))),
                    }
                }
            })
            .boxed())
    }

    async fn get_task(
        &self,
        _params: &ServiceParams,
        req: sdk::GetTaskRequest,
    ) -> Result<sdk::Task, A2AError> {
        need("id", &req.id)?;
        if req.history_length.is_some_and(|n| n < 0) {
            return Err(A2AError::invalid_params(
                "historyLength must not be negative",
            ));
        }
        let asked = self
            .orchestrator
            .get_task(&GetTaskRequest {
                id: req.id.clone(),
                history_length: req.history_length,
            })
            .await;
        let task = match asked {
            Ok(rec) => rec.task,
            Err(s) if s.code() == Code::NotFound => self
                .kept_task(&req.id)
                .await
                .map(|t| trim_history(t, req.history_length)),
            Err(s) => return Err(a2a_error(s, Some(&req.id))),
        };
        let task = task.ok_or_else(|| A2AError::task_not_found(&req.id))?;
        Ok(pbconv::from_proto_task(&task))
    }

    async fn list_tasks(
        &self,
        _params: &ServiceParams,
        req: sdk::ListTasksRequest,
    ) -> Result<sdk::ListTasksResponse, A2AError> {
        let resp = self
            .orchestrator
            .list_tasks(&pbconv::to_proto_list_tasks_request(&req))
            .await
            .map_err(|s| a2a_error(s, None))?;
        Ok(pbconv::from_proto_list_tasks_response(&resp))
    }

    async fn cancel_task(
        &self,
        _params: &ServiceParams,
        req: sdk::CancelTaskRequest,
    ) -> Result<sdk::Task, A2AError> {
        need("id", &req.id)?;
        let rec = self
            .orchestrator
            .cancel_task(&CancelTaskRequest { id: req.id.clone() })
            .await
            .map_err(|s| match s.code() {
                Code::FailedPrecondition => A2AError::task_not_cancelable(&req.id),
                _ => a2a_error(s, Some(&req.id)),
            })?;
        let task = rec.task.ok_or_else(|| A2AError::task_not_found(&req.id))?;
        let sdk_task = pbconv::from_proto_task(&task);
        if self.push.wanted(&req.id).await {
            let push = self.push.clone();
            let ev = sdk::StreamResponse::Task(sdk_task.clone());
            tokio::spawn(async move { push.deliver(task_id_of(&ev), &ev).await });
        }
        Ok(sdk_task)
    }

    async fn subscribe_to_task(
        &self,
        _params: &ServiceParams,
        req: sdk::SubscribeToTaskRequest,
    ) -> Result<BoxStream<'static, Result<sdk::StreamResponse, A2AError>>, A2AError> {
        need("id", &req.id)?;
        let id = req.id.clone();
        let refused = |s: tonic::Status| match s.code() {
            Code::FailedPrecondition => A2AError::unsupported_operation(format!(
                "task {id} has ended; there is nothing to subscribe to ({})",
                s.message()
            )),
            _ => a2a_error(s, Some(&id)),
        };
        let asked = self
            .orchestrator
            .subscribe_task(&pbconv::to_proto_subscribe_to_task_request(&req))
            .await;
        let asked = match asked {
            Ok(events) => first_or_error(events).await,
            Err(s) => Err(s),
        };
        let events = match asked {
            Ok(events) => events,
            // Not held in memory: a durable task is followed from its
            // kept events.
            Err(s) if s.code() == Code::NotFound => {
                let Some(task) = self.kept_task(&req.id).await else {
                    return Err(refused(s));
                };
                if task.status.as_ref().is_some_and(|st| is_terminal(st.state)) {
                    return Err(refused(tonic::Status::failed_precondition(format!(
                        "it is {}",
                        state_name(task.status.as_ref().map_or(0, |st| st.state))
                    ))));
                }
                let Some(queue) = self.queue().await else {
                    return Err(refused(s));
                };
                queue
                    .reattach(Service::Orchestrator, &req.id)
                    .await
                    .map_err(|e| A2AError::internal(e.to_string()))?
                    .events(self.task_timeout)
            }
            Err(s) => return Err(refused(s)),
        };
        Ok(events
            .filter_map(|ev| async move {
                match ev {
                    Ok(ev) => ev.event.and_then(event_to_sdk).map(Ok),
                    Err(s) => Some(Err(a2a_error(s, None))),
                }
            })
            .boxed())
    }

    async fn create_push_config(
        &self,
        _params: &ServiceParams,
        req: sdk::TaskPushNotificationConfig,
    ) -> Result<sdk::TaskPushNotificationConfig, A2AError> {
        need("taskId", &req.task_id)?;
        need("url", &req.url)?;
        // The task must exist.
        self.orchestrator
            .get_task(&GetTaskRequest {
                id: req.task_id.clone(),
                history_length: Some(0),
            })
            .await
            .map_err(|s| a2a_error(s, Some(&req.task_id)))?;
        self.push.save(req).await
    }

    async fn get_push_config(
        &self,
        _params: &ServiceParams,
        req: sdk::GetTaskPushNotificationConfigRequest,
    ) -> Result<sdk::TaskPushNotificationConfig, A2AError> {
        need("taskId", &req.task_id)?;
        need("id", &req.id)?;
        self.push.get(&req.task_id, &req.id).await
    }

    async fn list_push_configs(
        &self,
        _params: &ServiceParams,
        req: sdk::ListTaskPushNotificationConfigsRequest,
    ) -> Result<sdk::ListTaskPushNotificationConfigsResponse, A2AError> {
        need("taskId", &req.task_id)?;
        Ok(sdk::ListTaskPushNotificationConfigsResponse {
            configs: self.push.list(&req.task_id).await?,
            next_page_token: None,
        })
    }

    async fn delete_push_config(
        &self,
        _params: &ServiceParams,
        req: sdk::DeleteTaskPushNotificationConfigRequest,
    ) -> Result<(), A2AError> {
        need("taskId", &req.task_id)?;
        need("id", &req.id)?;
        self.push.delete(&req.task_id, &req.id).await
    }

    async fn get_extended_agent_card(
        &self,
        _params: &ServiceParams,
        _req: sdk::GetExtendedAgentCardRequest,
    ) -> Result<sdk::AgentCard, A2AError> {
        // The token (when one is configured) was checked before any handler.
        Ok(self.extended_card.clone())
    }
}
