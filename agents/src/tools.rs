//! The tools an agent can call, as a trait; [`BusTools`] reaches the toolhost
//! over the bus, and [`ToolSet`] adds tools an agent service provides itself
//! (the orchestrator's `hearth.delegate`).

use std::collections::HashMap;
use std::sync::Arc;

use hearth_mesh::clients::ToolhostClient;
use hearth_proto::v1::{CallToolRequest, ListToolsRequest, ToolSpec, Usage};

/// What a tool call returned.
#[derive(Debug, Clone, Default)]
pub struct ToolOutput {
    /// The text the tool produced (or its error message).
    pub content: String,
    /// The tool reported an error.
    pub is_error: bool,
    /// What the call cost in model usage (a delegated subtask), if anything.
    pub usage: Option<Usage>,
}

/// Reports progress of a long tool call (a delegated subtask) to the task.
pub type ProgressFn = Arc<dyn Fn(String) + Send + Sync>;

/// Who is calling, for permissions and the audit log.
#[derive(Clone, Default)]
pub struct CallContext {
    /// The agent spec's name.
    pub agent: String,
    /// The task being worked on.
    pub task_id: String,
    /// The task's A2A context.
    pub context_id: String,
    /// The task that delegated this one, if any.
    pub parent_task_id: String,
    /// Where a tool may report progress.
    pub progress: Option<ProgressFn>,
    /// The call's idempotency key: the task step it is, the same on every
    /// attempt at the task (set on the durable path; a tool that hands work
    /// on derives that work's id from it, so a replay finds it again).
    pub step: Option<String>,
    /// When the task must have ended (from whoever queued it): tool calls
    /// get at most the time left, and work it hands on inherits it.
    pub deadline: Option<std::time::SystemTime>,
    /// The task at the root of this one's delegation chain (its own id for
    /// a task from outside): budgets per task are kept by it.
    pub root_task_id: String,
    /// The task is sensitive: asked for, or found so by the engine (set
    /// from then on). Its model calls stay local, its subtasks inherit it,
    /// and it may not hand work to agents off the machine.
    pub sensitive: Arc<std::sync::atomic::AtomicBool>,
    /// Sampling temperature for the task's model calls (None: the
    /// engine's default, greedy for the embedded model).
    pub temperature: Option<f32>,
}

impl CallContext {
    /// Whether the task is sensitive now.
    pub fn is_sensitive(&self) -> bool {
        self.sensitive.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("agent", &self.agent)
            .field("task_id", &self.task_id)
            .field("context_id", &self.context_id)
            .finish()
    }
}

/// A provider of tools.
#[async_trait::async_trait]
pub trait Tools: Send + Sync {
    /// The tools offered, with their schemas.
    async fn list(&self, ctx: &CallContext) -> Result<Vec<ToolSpec>, tonic::Status>;
    /// Calls one; an `Err` means the tool could not be reached at all.
    async fn call(
        &self,
        ctx: &CallContext,
        name: &str,
        arguments_json: &str,
    ) -> Result<ToolOutput, tonic::Status>;
}

/// The toolhost's tools over the bus. The toolhost is where an agent's
/// allow-list is enforced, once: it offers an agent only the tools its spec
/// lists and refuses a call to any other.
#[derive(Clone)]
pub struct BusTools {
    toolhost: ToolhostClient,
    /// The spec lists no tools at all, so there is nothing to ask for.
    none: bool,
}

impl BusTools {
    /// The toolhost's tools, as offered to the agent of `spec`.
    pub fn new(toolhost: ToolhostClient, spec: Arc<crate::AgentSpec>) -> Self {
        Self {
            toolhost,
            none: spec.tools.is_empty(),
        }
    }
}

#[async_trait::async_trait]
impl Tools for BusTools {
    async fn list(&self, ctx: &CallContext) -> Result<Vec<ToolSpec>, tonic::Status> {
        if self.none {
            return Ok(Vec::new());
        }
        let resp = self
            .toolhost
            .list_tools(&ListToolsRequest {
                agent: ctx.agent.clone(),
            })
            .await?;
        Ok(resp
            .tools
            .into_iter()
            .map(|t| ToolSpec {
                name: t.name,
                description: t.description,
                input_schema_json: t.input_schema_json,
            })
            .collect())
    }

    async fn call(
        &self,
        ctx: &CallContext,
        name: &str,
        arguments_json: &str,
    ) -> Result<ToolOutput, tonic::Status> {
        let resp = self
            .toolhost
            .call_tool(&CallToolRequest {
                name: name.to_string(),
                arguments_json: arguments_json.to_string(),
                agent: ctx.agent.clone(),
                task_id: ctx.task_id.clone(),
                deadline_unix_ms: ctx.deadline.map_or(0, hearth_mesh::work::unix_ms),
                idempotency_key: ctx.step.clone().unwrap_or_default(),
            })
            .await?;
        Ok(ToolOutput {
            content: resp.content,
            is_error: resp.is_error,
            usage: None,
        })
    }
}

/// A tool implemented by the agent service itself.
#[async_trait::async_trait]
pub trait LocalTool: Send + Sync {
    /// Its name and schema.
    fn spec(&self) -> ToolSpec;
    /// Runs it.
    async fn call(
        &self,
        ctx: &CallContext,
        arguments_json: &str,
    ) -> Result<ToolOutput, tonic::Status>;
}

/// Local tools in front of another provider.
pub struct ToolSet {
    local: HashMap<String, Arc<dyn LocalTool>>,
    rest: Arc<dyn Tools>,
}

impl ToolSet {
    /// `local` tools, then everything `rest` offers.
    pub fn new(local: Vec<Arc<dyn LocalTool>>, rest: Arc<dyn Tools>) -> Self {
        Self {
            local: local.into_iter().map(|t| (t.spec().name, t)).collect(),
            rest,
        }
    }
}

#[async_trait::async_trait]
impl Tools for ToolSet {
    async fn list(&self, ctx: &CallContext) -> Result<Vec<ToolSpec>, tonic::Status> {
        let mut all: Vec<ToolSpec> = self.local.values().map(|t| t.spec()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all.extend(self.rest.list(ctx).await?);
        Ok(all)
    }

    async fn call(
        &self,
        ctx: &CallContext,
        name: &str,
        arguments_json: &str,
    ) -> Result<ToolOutput, tonic::Status> {
        match self.local.get(name) {
            Some(t) => t.call(ctx, arguments_json).await,
            None => self.rest.call(ctx, name, arguments_json).await,
        }
    }
}
