//! `hearth.delegate`: hands a subtask to an operative and waits for its answer.

use hearth_agents::tools::{CallContext, LocalTool, ToolOutput};
use hearth_mesh::a2a::{Event, Finished, RunError, follow_to_end, text_message};
use hearth_mesh::clients::AgentClient;
use hearth_mesh::subjects::Service;
use hearth_mesh::work::WorkQueue;
use hearth_proto::a2a::Role;
use hearth_proto::v1::{CancelTaskRequest, SendTaskRequest, ToolSpec};
use serde_json::{Value, json};
use tonic::Status;

/// The argument schema of every tool that hands a task to another agent
/// (`hearth.delegate`, the remote A2A agents): one string, `task`.
pub(crate) fn task_schema() -> String {
    json!({
        "type": "object",
        "properties": { "task": { "type": "string", "description": "The task, stated completely." } },
        "required": ["task"],
    })
    .to_string()
}

/// The `task` of a hand-over call, or the tool error that answers a call
/// without one.
pub(crate) fn task_argument(arguments_json: &str) -> Result<String, Box<ToolOutput>> {
    let args: Value = serde_json::from_str(arguments_json).unwrap_or(Value::Null);
    args.get("task")
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            Box::new(ToolOutput {
                content: "`task` must be a non-empty string".into(),
                is_error: true,
                usage: None,
            })
        })
}

/// The tool's bus name.
pub const DELEGATE_TOOL: &str = "hearth.delegate";

/// The delegate tool.
pub struct Delegate {
    operatives: AgentClient,
    agent: String,
    work: Option<WorkQueue>,
    between: std::time::Duration,
}

impl Delegate {
    /// Delegates to `operatives`, running the spec `agent`: through the
    /// durable work queue `work` when there is one (over NATS), else by a
    /// direct request to the operatives' queue group. `between` is how long
    /// a subtask's events may be apart.
    pub fn new(
        operatives: AgentClient,
        agent: String,
        work: Option<WorkQueue>,
        between: std::time::Duration,
    ) -> Self {
        Self {
            operatives,
            agent,
            work,
            between,
        }
    }

    /// Runs `req` to its end: through the work queue, or directly.
    async fn run(
        &self,
        req: &SendTaskRequest,
        deadline: Option<std::time::SystemTime>,
        guard: &mut CancelOnDrop,
        on_event: impl FnMut(Event<'_>),
    ) -> Result<Finished, RunError> {
        let Some(queue) = &self.work else {
            return self.operatives.run_to_end(req, on_event).await;
        };
        let mut headers = hearth_mesh::Headers::new();
        hearth_mesh::telemetry::inject(&tracing::Span::current(), &mut headers);
        let submitted = queue
            .submit_until(Service::Operative, req.clone(), &headers, deadline)
            .await
            .map_err(|e| RunError::NotTaken(Status::unavailable(e.to_string())))?;
        guard.queued = Some(queue.clone());
        follow_to_end(submitted.events(self.between), on_event).await
    }
}

/// Cancels the subtask if the delegation is dropped early (the parent task
/// was canceled or timed out): through the work queue (whoever holds it,
/// or whoever picks it up next), or on the operative running it.
struct CancelOnDrop {
    client: AgentClient,
    /// The operative running it, once its first event said so.
    worker: std::sync::Arc<std::sync::Mutex<String>>,
    task_id: String,
    armed: bool,
    /// The work queue it went through, on the durable path.
    queued: Option<WorkQueue>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let (Some(queue), Ok(rt)) = (self.queued.take(), tokio::runtime::Handle::try_current()) {
            let id = std::mem::take(&mut self.task_id);
            rt.spawn(async move {
                if let Err(e) = queue.cancel(&id, "its delegating task ended first").await {
                    tracing::warn!(task_id = %id, error = %e, "the subtask could not be canceled");
                }
            });
            return;
        }
        let worker = hearth_mesh::sync::lock(&self.worker).clone();
        if worker.is_empty() {
            return;
        }
        let client = self.client.clone();
        let id = std::mem::take(&mut self.task_id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client
                    .cancel_task_on(&worker, &CancelTaskRequest { id })
                    .await;
            });
        }
    }
}

#[async_trait::async_trait]
impl LocalTool for Delegate {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: DELEGATE_TOOL.into(),
            description: "Hand a task to an operative agent, which does the work with tools (calculator and others), and get its answer back.".into(),
            input_schema_json: task_schema(),
        }
    }

    async fn call(&self, ctx: &CallContext, arguments_json: &str) -> Result<ToolOutput, Status> {
        let task = match task_argument(arguments_json) {
            Ok(task) => task,
            Err(refused) => return Ok(*refused),
        };
        let task = task.as_str();
        // On the durable path the id comes from the step: a restarted
        // orchestrator replaying this task asks for the same subtask, and
        // finds it under way (or done) instead of handing it over again.
        let sub_id = match &ctx.step {
            Some(step) if self.work.is_some() => {
                format!("{}-{}", ctx.task_id, step.rsplit('.').next().unwrap_or("0"))
            }
            _ => uuid::Uuid::now_v7().to_string(),
        };
        let mut message = text_message(Role::User, task, "", &ctx.context_id);
        message.reference_task_ids.push(ctx.task_id.clone());
        // The subtask draws on its root task's budget, and stays local if
        // the task is sensitive.
        hearth_mesh::a2a::set_meta(
            &mut message,
            hearth_mesh::a2a::META_ROOT_TASK,
            hearth_proto::prost_types::value::Kind::StringValue(ctx.root_task_id.clone()),
        );
        if let Some(t) = ctx.temperature {
            hearth_mesh::a2a::set_meta(
                &mut message,
                hearth_mesh::a2a::META_TEMPERATURE,
                hearth_proto::prost_types::value::Kind::NumberValue(f64::from(t)),
            );
        }
        if ctx.is_sensitive() {
            hearth_mesh::a2a::set_meta(
                &mut message,
                hearth_mesh::a2a::META_SENSITIVE,
                hearth_proto::prost_types::value::Kind::BoolValue(true),
            );
        }
        let req = SendTaskRequest {
            message: Some(message),
            agent: self.agent.clone(),
            task_id: sub_id.clone(),
            // The parent's deadline is the subtask's too.
            timeout_ms: ctx.deadline.map_or(0, |d| {
                let left = d
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1)
            }),
            // Nobody is there to answer an operative's question.
            interactive: false,
        };
        let mut guard = CancelOnDrop {
            client: self.operatives.clone(),
            worker: Default::default(),
            task_id: sub_id,
            armed: true,
            queued: None,
        };
        let seen = guard.worker.clone();
        let done = self
            .run(&req, ctx.deadline, &mut guard, |ev| {
                // The latest: a redelivered subtask moves to another operative.
                let mut worker = hearth_mesh::sync::lock(&seen);
                if !ev.worker.is_empty() && *worker != ev.worker {
                    *worker = ev.worker.to_string();
                }
                drop(worker);
                if let (Some(text), Some(p)) = (ev.working, ctx.progress.as_ref()) {
                    p(format!("operative {}: {text}", ev.worker));
                }
            })
            .await;
        let done = match done {
            Ok(done) => done,
            Err(RunError::Ended) => {
                return Err(Status::unavailable(
                    "the operative's event stream ended before its task did",
                ));
            }
            Err(e) => return Err(e.into_status()),
        };
        guard.armed = false;
        let answer = done.answer();
        Ok(if done.completed() {
            ToolOutput {
                content: answer,
                is_error: false,
                usage: done.usage,
            }
        } else {
            ToolOutput {
                content: format!(
                    "the operative's task ended {}: {answer}",
                    done.state.as_str_name()
                ),
                is_error: true,
                usage: done.usage,
            }
        })
    }
}
