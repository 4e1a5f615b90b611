//! An agent service: the `Agent` tonic trait (send, get, list, subscribe to
//! and cancel tasks)
//! implemented once over the agent loop and the task host, and served on the
//! bus. The orchestrator and operatives are both this, with different tools.
//!
//! `send_task` is served in the service's queue group, so instances share
//! tasks; `get_task` and `cancel_task` are served on the instance's own
//! subjects (`<prefix>.v1.<service>.<worker>.<method>`) since only the
//! instance running a task knows it, and on the shared subjects too.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use hearth_mesh::a2a::{is_final, text_of};
use hearth_mesh::bindings::agent_bus;
use hearth_mesh::rpc::{ReplyStream, ServeAt};
use hearth_mesh::subjects::Service;
use hearth_mesh::work::{Attempt, Outcome as WorkOutcome, StepLog, WorkQueue};
use hearth_mesh::{BusError, SharedBus, Subjects};
use hearth_proto::a2a::{ListTasksRequest, ListTasksResponse, SubscribeToTaskRequest};
use hearth_proto::a2a::{TaskState, stream_response::Payload};
use hearth_proto::v1::agent_server::Agent;
use hearth_proto::v1::{
    CancelTaskRequest, GetTaskRequest, SendTaskRequest, TaskEvent, TaskRecord, ToolSpec,
};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::replay::{ReplayedModel, ReplayedTools};

use crate::model::Model;
use crate::runtime::{ASK_USER_TOOL, AgentLoop, Progress, ask_user_spec};
use crate::spec::{AgentSpec, Specs};
use crate::tasks::TaskHost;
use crate::tools::{CallContext, LocalTool, ToolOutput, ToolSet, Tools};

/// Gives the tools an agent spec may use.
pub type ToolsFor = Arc<dyn Fn(Arc<AgentSpec>) -> Arc<dyn Tools> + Send + Sync>;

/// An agent service.
#[derive(Clone)]
pub struct AgentService {
    host: TaskHost,
    specs: Arc<Specs>,
    default_spec: String,
    model: Arc<dyn Model>,
    tools_for: ToolsFor,
    task_timeout: Duration,
    memory: Option<(Arc<dyn crate::memory::AgentMemory>, usize)>,
    traces: Option<Arc<dyn crate::trace::TraceSink>>,
}

impl AgentService {
    /// The same service, its agents recalling up to `recall` memories into
    /// each task and remembering each outcome.
    pub fn with_memory(
        mut self,
        memory: Arc<dyn crate::memory::AgentMemory>,
        recall: usize,
    ) -> Self {
        self.memory = Some((memory, recall));
        self
    }

    /// The same service, sending each run's trace to `sink`.
    pub fn with_traces(mut self, sink: Arc<dyn crate::trace::TraceSink>) -> Self {
        self.traces = Some(sink);
        self
    }

    /// Sends each run's trace to the learning service over the bus, when
    /// `[learning] traces` is on (off: no sink at all).
    pub fn with_bus_traces(self, config: &hearth_mesh::Config, bus: SharedBus) -> Self {
        if !config.learning.traces {
            return self;
        }
        let client = hearth_mesh::clients::LearningClient::new(
            bus,
            config.subjects(),
            config.request_timeout(),
        );
        let worker = self.worker().to_string();
        self.with_traces(Arc::new(crate::trace::BusTraces::new(client, &worker)))
    }

    /// A service running `default_spec` (or the spec a task names) with `model`
    /// and the tools `tools_for` gives; `worker` names this instance.
    pub fn new(
        worker: String,
        specs: Specs,
        default_spec: String,
        model: Arc<dyn Model>,
        tools_for: ToolsFor,
        task_timeout: Duration,
    ) -> Result<Self, crate::SpecError> {
        specs.get(&default_spec)?;
        Ok(Self {
            host: TaskHost::new(worker),
            specs: Arc::new(specs),
            default_spec,
            model,
            tools_for,
            task_timeout,
            memory: None,
            traces: None,
        })
    }

    /// This instance's name.
    pub fn worker(&self) -> &str {
        self.host.worker()
    }
}

fn progress_text(p: &Progress) -> String {
    match p {
        Progress::ToolCall { name, arguments } => {
            format!("calling {name} {}", clip(arguments))
        }
        Progress::ToolResult {
            name,
            is_error: false,
            result,
        } => format!("{name} answered: {}", clip(result)),
        Progress::ToolResult {
            name,
            is_error: true,
            result,
        } => format!("{name} reported an error: {}", clip(result)),
    }
}

/// Most bytes of a tool's arguments or result shown in a progress update.
const PROGRESS_CLIP_BYTES: usize = 300;

/// `text` on one line, cut to [`PROGRESS_CLIP_BYTES`].
fn clip(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.len() <= PROGRESS_CLIP_BYTES {
        return one_line;
    }
    let cut = one_line.floor_char_boundary(PROGRESS_CLIP_BYTES);
    format!("{}…", &one_line[..cut])
}

/// `hearth.ask_user`, offered on interactive tasks. The agent loop ends the
/// turn when it is called, so it never runs.
struct AskUser;

#[async_trait::async_trait]
impl LocalTool for AskUser {
    fn spec(&self) -> ToolSpec {
        ask_user_spec()
    }

    async fn call(&self, _ctx: &CallContext, _arguments_json: &str) -> Result<ToolOutput, Status> {
        Ok(ToolOutput {
            content: format!("{ASK_USER_TOOL} ends the turn; it cannot be called with other tools"),
            is_error: true,
            usage: None,
        })
    }
}

impl AgentService {
    /// Starts a task and returns its events; with a step log, the agent's
    /// model turns and tool results are recorded there, and those an
    /// earlier attempt recorded are replayed instead of run again.
    fn start_task(
        &self,
        req: SendTaskRequest,
        steps: Option<Arc<StepLog>>,
        deadline: Option<SystemTime>,
    ) -> Result<ReplyStream<TaskEvent>, Status> {
        let name = if req.agent.is_empty() {
            self.default_spec.clone()
        } else {
            req.agent.clone()
        };
        let spec = Arc::new(
            self.specs
                .get(&name)
                .map_err(|e| Status::not_found(e.to_string()))?
                .clone(),
        );
        let timeout = match req.timeout_ms {
            0 => self.task_timeout,
            ms => Duration::from_millis(u64::from(ms)).min(self.task_timeout),
        };
        // A deadline from whoever queued it bounds it too; either way the
        // task's deadline is the sooner, and its tool calls and the work
        // it hands on inherit it.
        let timeout = match deadline {
            Some(d) => timeout.min(d.duration_since(SystemTime::now()).unwrap_or_default()),
            None => timeout,
        };
        let deadline = Some(SystemTime::now() + timeout);
        let mut tools = (self.tools_for)(spec.clone());
        if req.interactive {
            tools = Arc::new(ToolSet::new(vec![Arc::new(AskUser)], tools));
        }
        let mut model = self.model.clone();
        if let Some(log) = steps {
            model = Arc::new(ReplayedModel::new(model, log.clone()));
            tools = Arc::new(ReplayedTools::new(tools, log));
        }
        let mut agent = AgentLoop::new(spec.clone(), model, tools);
        if let Some((memory, recall)) = &self.memory {
            agent = agent.with_memory(memory.clone(), *recall);
        }
        if let Some(sink) = &self.traces {
            agent = agent.with_traces(sink.clone());
        }
        self.host.start(req, timeout, move |h| {
            Box::pin(async move {
                let relay = h.clone();
                let ctx = CallContext {
                    agent: spec.name.clone(),
                    task_id: h.task_id.clone(),
                    context_id: h.context_id.clone(),
                    parent_task_id: h.parent_task_id.clone(),
                    progress: Some(Arc::new(move |text| relay.progress(text))),
                    step: None,
                    deadline,
                    root_task_id: if h.root_task_id.is_empty() {
                        h.task_id.clone()
                    } else {
                        h.root_task_id.clone()
                    },
                    sensitive: Arc::new(std::sync::atomic::AtomicBool::new(h.sensitive)),
                    temperature: h.temperature,
                };
                let span = tracing::info_span!("task", task_id = %h.task_id, agent = %spec.name);
                agent
                    .run_turn(&ctx, &h.prior, &h.text, &|p| h.progress(progress_text(&p)))
                    .instrument(span)
                    .await
            })
        })
    }

    /// Runs one attempt at a task from the work queue: its events go to
    /// its followers as they come, the final one confirmed before the
    /// attempt ends, except a failure's, which are held back (the queue
    /// retries the task, or gives it up with the reason). A cancel request
    /// cancels the task here.
    pub async fn run_attempt(&self, attempt: Attempt) -> WorkOutcome {
        let Attempt {
            item,
            steps,
            events: sink,
            mut cancel,
            number,
            of,
        } = attempt;
        let deadline = hearth_mesh::work::deadline_of(&item);
        let Some(req) = item.task else {
            return WorkOutcome::Failed("the work item has no task".into());
        };
        let task_id = req.task_id.clone();
        // One line per task taken: which instance ran what reads off its log.
        tracing::info!(task_id = %task_id, attempt = number, of, "took a task from the queue");
        // A failed earlier attempt on this instance is tried afresh.
        self.host.forget_failed(&task_id);
        let mut events = match self.start_task(req.clone(), Some(steps.clone()), deadline) {
            Ok(events) => events,
            // The earlier attempt still runs here: the queue handed the
            // task out again because its progress acks were lost (NATS
            // restarted, say). Follow that attempt instead of failing this
            // one; its final event is kept once, whichever sends it.
            Err(status) if status.code() == tonic::Code::AlreadyExists => {
                match self.host.subscribe(&task_id) {
                    Ok(events) => {
                        tracing::info!(task_id = %task_id, attempt = number, "the earlier attempt still runs here: following it");
                        events
                    }
                    // It ended in between: its final event comes back.
                    Err(_) => match self.start_task(req, Some(steps), deadline) {
                        Ok(events) => events,
                        Err(status) => return WorkOutcome::Failed(status.message().to_string()),
                    },
                }
            }
            Err(status) => return WorkOutcome::Failed(status.message().to_string()),
        };
        let mut canceled = false;
        loop {
            let ev = tokio::select! {
                ev = events.next() => ev,
                why = cancel.requested(), if !canceled => {
                    canceled = true;
                    tracing::info!(task_id = %task_id, why = %why, "canceled by request");
                    if let Err(status) = self.host.cancel(&task_id).await {
                        tracing::debug!(task_id = %task_id, error = %status.message(), "not canceled");
                    }
                    continue;
                }
            };
            let Some(ev) = ev else { break };
            let ev = match ev {
                Ok(ev) => ev,
                Err(status) => return WorkOutcome::Failed(status.message().to_string()),
            };
            let (state, text) = match ev.event.as_ref().and_then(|e| e.payload.as_ref()) {
                Some(Payload::StatusUpdate(u)) => u
                    .status
                    .as_ref()
                    .map(|s| (s.state, s.message.as_ref().map(text_of).unwrap_or_default()))
                    .unwrap_or_default(),
                Some(Payload::Task(t)) => (
                    t.status.as_ref().map_or(0, |s| s.state),
                    hearth_mesh::a2a::answer_of(t),
                ),
                _ => (0, String::new()),
            };
            if state == TaskState::Failed as i32 {
                return WorkOutcome::Failed(text);
            }
            let last = matches!(
                ev.event.as_ref().and_then(|e| e.payload.as_ref()),
                Some(Payload::Task(_))
            ) && is_final(state);
            if last {
                tracing::info!(task_id = %task_id, state = %hearth_mesh::a2a::state_name(state), "the task ended");
                return match sink.send_final(&ev).await {
                    Ok(()) => WorkOutcome::Done,
                    Err(e) => WorkOutcome::Failed(e.to_string()),
                };
            }
            sink.send(&ev).await;
        }
        WorkOutcome::Failed("the task's events ended before it did".into())
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    type SendTaskStream = ReplyStream<TaskEvent>;
    type SubscribeTaskStream = ReplyStream<TaskEvent>;

    async fn send_task(
        &self,
        request: Request<SendTaskRequest>,
    ) -> Result<Response<Self::SendTaskStream>, Status> {
        self.start_task(request.into_inner(), None, None)
            .map(Response::new)
    }

    async fn get_task(
        &self,
        request: Request<GetTaskRequest>,
    ) -> Result<Response<TaskRecord>, Status> {
        self.host.get(request.get_ref()).map(Response::new)
    }

    async fn cancel_task(
        &self,
        request: Request<CancelTaskRequest>,
    ) -> Result<Response<TaskRecord>, Status> {
        self.host
            .cancel(&request.get_ref().id)
            .await
            .map(Response::new)
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        self.host.list(request.get_ref()).map(Response::new)
    }

    async fn subscribe_task(
        &self,
        request: Request<SubscribeToTaskRequest>,
    ) -> Result<Response<Self::SubscribeTaskStream>, Status> {
        self.host
            .subscribe(&request.get_ref().id)
            .map(Response::new)
    }
}

/// An agent service on the bus: its worker name, its intake (the loops
/// on the role's subjects, in its queue group, where new tasks come in:
/// the first to stop on a drain) and its own subjects (its tasks' lookups,
/// cancels and follow-ups, which keep serving while it drains).
pub use hearth_mesh::running::Running;

/// What a running agent service says of itself: the agent it runs by
/// default, and that its specs loaded.
struct AgentChecks {
    agent: String,
    agents: usize,
}

#[async_trait::async_trait]
impl hearth_mesh::running::Checks for AgentChecks {
    async fn checks(&self) -> Vec<hearth_proto::v1::HealthCheck> {
        vec![hearth_mesh::running::check(
            "agent",
            hearth_proto::v1::CheckOutcome::Ok,
            format!(
                "runs `{}` ({} agent spec(s) loaded)",
                self.agent, self.agents
            ),
            None,
        )]
    }
}

/// Serves `service` on the bus as `kind` (orchestrator or operative): on
/// the role's subjects in its queue group, and on this instance's own
/// subjects (a task's lookups and cancels go to the instance that runs it),
/// with its health; an operative with a work queue also takes subtasks
/// from it (the durable path).
pub async fn serve(
    service: AgentService,
    kind: Service,
    bus: SharedBus,
    subjects: &Subjects,
    work: Option<WorkQueue>,
) -> Result<Running, ServeError> {
    let at = ServeAt::role(bus.clone(), subjects.clone(), kind);
    let worker = service.worker().to_string();
    let mine = at.clone().instance(&worker);
    let checks = Arc::new(AgentChecks {
        agent: service.default_spec.clone(),
        agents: service.specs.iter().count(),
    });
    let service = Arc::new(service);
    let mut intake = agent_bus::serve(service.clone(), &at).await?;
    if let Some(queue) = work {
        let svc = service.clone();
        intake.push(
            queue
                .serve(kind, worker.clone(), move |attempt| {
                    let svc = svc.clone();
                    async move { svc.run_attempt(attempt).await }
                })
                .await?,
        );
    }
    let handles = agent_bus::serve(service, &mine).await?;
    Ok(Running::new(kind)
        .worker(worker)
        .intake(intake)
        .handles(handles)
        .with_health(bus, subjects, checks)
        .await?)
}

/// Why an agent service could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// It could not subscribe on the bus.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The durable work queue could not be opened or consumed.
    #[error(transparent)]
    Work(#[from] hearth_mesh::work::WorkError),
}

/// A worker name for a new instance of `kind`: unique, and a valid subject token.
pub fn worker_name(kind: Service) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}-{}", kind.name(), std::process::id(), &id[..8])
}
