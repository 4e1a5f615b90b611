//! Typed clients for each service's subjects.
//!
//! A service calls another through these (never through its crate), so the
//! services meet only on the bus.

use std::time::Duration;

use hearth_proto::v1::{
    ApproveToolsRequest, ApproveToolsResponse, CallToolRequest, CallToolResponse,
    CancelTaskRequest, EmbedRequest, EmbedResponse, GenerateChunk, GenerateRequest, GetTaskRequest,
    ListToolsRequest, ListToolsResponse, SendTaskRequest, TaskEvent, TaskRecord,
};
use hearth_proto::v1::{
    DeleteRequest, DeleteResponse, InfoRequest, InfoResponse, SearchRequest, SearchResponse,
    SourcesRequest, SourcesResponse, UpsertRequest, UpsertResponse,
};
use hearth_proto::v1::{RecordResponse, RenderResponse, Trace, TracesRequest, TracesResponse};
use tonic::Status;

use crate::bus::SharedBus;
use crate::rpc::{self, ReplyStream};
use crate::subjects::{Service, Subjects};

/// Method names on the bus (the last subject token).
pub mod methods {
    /// Engine: streamed generation.
    pub const GENERATE: &str = "generate";
    /// Engine: embeddings.
    pub const EMBED: &str = "embed";
    /// Toolhost: list tools.
    pub const LIST_TOOLS: &str = "list_tools";
    /// Toolhost: call a tool.
    pub const CALL_TOOL: &str = "call_tool";
    /// Toolhost: approve changed tool definitions.
    pub const APPROVE_TOOLS: &str = "approve_tools";
    /// Agents: start a task (streamed events).
    pub const SEND_TASK: &str = "send_task";
    /// Agents: look a task up.
    pub const GET_TASK: &str = "get_task";
    /// Agents: cancel a task.
    pub const CANCEL_TASK: &str = "cancel_task";
    /// Agents: list tasks.
    pub const LIST_TASKS: &str = "list_tasks";
    /// Agents: a task's events from now on.
    pub const SUBSCRIBE_TASK: &str = "subscribe_task";
    /// Memory: store chunks.
    pub const UPSERT: &str = "upsert";
    /// Memory: search.
    pub const SEARCH: &str = "search";
    /// Memory: delete.
    pub const DELETE: &str = "delete";
    /// Memory: the documents a collection holds.
    pub const SOURCES: &str = "sources";
    /// Memory: collections.
    pub const INFO: &str = "info";
    /// Engine: the prompt (and reply) exactly as the model reads (writes) it.
    pub const RENDER: &str = "render";
    /// Learning: keep a trace.
    pub const RECORD: &str = "record";
    /// Learning: a task's traces.
    pub const TRACES: &str = "traces";
}

/// Calls the engine.
#[derive(Clone)]
pub struct EngineClient {
    bus: SharedBus,
    subjects: Subjects,
    timeout: Duration,
}

impl EngineClient {
    /// A client on `bus`; `timeout` bounds the wait for each streamed chunk.
    pub fn new(bus: SharedBus, subjects: Subjects, timeout: Duration) -> Self {
        Self {
            bus,
            subjects,
            timeout,
        }
    }

    /// The prompt (and, when the last message is the assistant's, its reply)
    /// exactly as the engine's model reads and writes it.
    pub async fn render(&self, req: &GenerateRequest) -> Result<RenderResponse, Status> {
        let subject = self.subjects.method(Service::Engine, methods::RENDER);
        rpc::call(&self.bus, &subject, req, self.timeout).await
    }

    /// Streams a generation.
    pub async fn generate(
        &self,
        req: &GenerateRequest,
    ) -> Result<ReplyStream<GenerateChunk>, Status> {
        let subject = self.subjects.method(Service::Engine, methods::GENERATE);
        rpc::call_stream(&self.bus, &subject, req, self.timeout).await
    }

    /// Embeds texts.
    pub async fn embed(&self, req: &EmbedRequest) -> Result<EmbedResponse, Status> {
        let subject = self.subjects.method(Service::Engine, methods::EMBED);
        rpc::call(&self.bus, &subject, req, self.timeout).await
    }
}

/// Calls the toolhost.
#[derive(Clone)]
pub struct ToolhostClient {
    bus: SharedBus,
    subjects: Subjects,
    timeout: Duration,
}

impl ToolhostClient {
    /// A client on `bus`; `timeout` bounds each call.
    pub fn new(bus: SharedBus, subjects: Subjects, timeout: Duration) -> Self {
        Self {
            bus,
            subjects,
            timeout,
        }
    }

    /// Lists tools (those `agent` may call, when given).
    pub async fn list_tools(&self, req: &ListToolsRequest) -> Result<ListToolsResponse, Status> {
        let subject = self.subjects.method(Service::Toolhost, methods::LIST_TOOLS);
        rpc::call(&self.bus, &subject, req, self.timeout).await
    }

    /// Calls one tool.
    pub async fn call_tool(&self, req: &CallToolRequest) -> Result<CallToolResponse, Status> {
        let subject = self.subjects.method(Service::Toolhost, methods::CALL_TOOL);
        rpc::call(&self.bus, &subject, req, self.timeout).await
    }

    /// Approves the current definitions of a server's tools or of one tool.
    pub async fn approve_tools(
        &self,
        req: &ApproveToolsRequest,
    ) -> Result<ApproveToolsResponse, Status> {
        let subject = self
            .subjects
            .method(Service::Toolhost, methods::APPROVE_TOOLS);
        rpc::call(&self.bus, &subject, req, self.timeout).await
    }
}

/// Calls an agent service: the orchestrator or the operatives.
#[derive(Clone)]
pub struct AgentClient {
    bus: SharedBus,
    subjects: Subjects,
    service: Service,
    timeout: Duration,
}

impl AgentClient {
    /// A client for `service` (orchestrator or operative); `timeout` bounds
    /// the wait for each event of a task and each lookup.
    pub fn new(bus: SharedBus, subjects: Subjects, service: Service, timeout: Duration) -> Self {
        Self {
            bus,
            subjects,
            service,
            timeout,
        }
    }

    /// Starts a task and streams its events.
    pub async fn send_task(&self, req: &SendTaskRequest) -> Result<ReplyStream<TaskEvent>, Status> {
        let subject = self.subjects.method(self.service, methods::SEND_TASK);
        rpc::call_stream(&self.bus, &subject, req, self.timeout).await
    }

    /// Looks a task up on the one instance (`worker`) that ran it.
    pub async fn get_task_on(
        &self,
        worker: &str,
        req: &GetTaskRequest,
    ) -> Result<TaskRecord, Status> {
        let subject = self
            .subjects
            .instance_method(self.service, worker, methods::GET_TASK);
        rpc::call(&self.bus, &subject, req, self.timeout).await
    }

    /// Cancels a task on the one instance (`worker`) that runs it.
    pub async fn cancel_task_on(
        &self,
        worker: &str,
        req: &CancelTaskRequest,
    ) -> Result<TaskRecord, Status> {
        let subject = self
            .subjects
            .instance_method(self.service, worker, methods::CANCEL_TASK);
        rpc::call(&self.bus, &subject, req, self.timeout).await
    }

    /// Looks a task up.
    pub async fn get_task(&self, req: &GetTaskRequest) -> Result<TaskRecord, Status> {
        let subject = self.subjects.method(self.service, methods::GET_TASK);
        rpc::call(&self.bus, &subject, req, self.timeout).await
    }

    /// Cancels a task.
    pub async fn cancel_task(&self, req: &CancelTaskRequest) -> Result<TaskRecord, Status> {
        let subject = self.subjects.method(self.service, methods::CANCEL_TASK);
        rpc::call(&self.bus, &subject, req, self.timeout).await
    }

    /// Lists tasks.
    pub async fn list_tasks(
        &self,
        req: &hearth_proto::a2a::ListTasksRequest,
    ) -> Result<hearth_proto::a2a::ListTasksResponse, Status> {
        let subject = self.subjects.method(self.service, methods::LIST_TASKS);
        rpc::call(&self.bus, &subject, req, self.timeout).await
    }

    /// A task's events from now on.
    pub async fn subscribe_task(
        &self,
        req: &hearth_proto::a2a::SubscribeToTaskRequest,
    ) -> Result<ReplyStream<TaskEvent>, Status> {
        let subject = self.subjects.method(self.service, methods::SUBSCRIBE_TASK);
        rpc::call_stream(&self.bus, &subject, req, self.timeout).await
    }
}

/// Calls the memory service.
#[derive(Clone)]
pub struct MemoryClient {
    bus: SharedBus,
    subjects: Subjects,
    timeout: Duration,
}

impl MemoryClient {
    /// A client on `bus`; `timeout` bounds each call (an upsert embeds its
    /// chunks first, so give it room).
    pub fn new(bus: SharedBus, subjects: Subjects, timeout: Duration) -> Self {
        Self {
            bus,
            subjects,
            timeout,
        }
    }

    fn subject(&self, method: &str) -> String {
        self.subjects.method(Service::Memory, method)
    }

    /// Stores chunks.
    pub async fn upsert(&self, req: &UpsertRequest) -> Result<UpsertResponse, Status> {
        rpc::call(&self.bus, &self.subject(methods::UPSERT), req, self.timeout).await
    }

    /// Searches.
    pub async fn search(&self, req: &SearchRequest) -> Result<SearchResponse, Status> {
        rpc::call(&self.bus, &self.subject(methods::SEARCH), req, self.timeout).await
    }

    /// Deletes.
    pub async fn delete(&self, req: &DeleteRequest) -> Result<DeleteResponse, Status> {
        rpc::call(&self.bus, &self.subject(methods::DELETE), req, self.timeout).await
    }

    /// The documents a collection holds.
    pub async fn sources(&self, req: &SourcesRequest) -> Result<SourcesResponse, Status> {
        rpc::call(
            &self.bus,
            &self.subject(methods::SOURCES),
            req,
            self.timeout,
        )
        .await
    }

    /// Collections.
    pub async fn info(&self, req: &InfoRequest) -> Result<InfoResponse, Status> {
        rpc::call(&self.bus, &self.subject(methods::INFO), req, self.timeout).await
    }
}

/// Calls the learning service.
#[derive(Clone)]
pub struct LearningClient {
    bus: SharedBus,
    subjects: Subjects,
    timeout: Duration,
}

impl LearningClient {
    /// A client on `bus`; `timeout` bounds each call.
    pub fn new(bus: SharedBus, subjects: Subjects, timeout: Duration) -> Self {
        Self {
            bus,
            subjects,
            timeout,
        }
    }

    /// Keeps a trace.
    pub async fn record(&self, trace: &Trace) -> Result<RecordResponse, Status> {
        let subject = self.subjects.method(Service::Learning, methods::RECORD);
        rpc::call(&self.bus, &subject, trace, self.timeout).await
    }

    /// The traces of a task and its subtasks.
    pub async fn traces(&self, req: &TracesRequest) -> Result<TracesResponse, Status> {
        let subject = self.subjects.method(Service::Learning, methods::TRACES);
        rpc::call(&self.bus, &subject, req, self.timeout).await
    }
}
