//! The operative: runs subtasks with the agent loop, asking the engine and
//! calling tools over the bus. Stateless between tasks; start as many as you
//! like on any machine pointed at the same NATS, and they share the work:
//! over NATS as one durable consumer of the work queue (a subtask whose
//! operative dies goes to another, and replays the steps already recorded),
//! and as one queue group for direct requests.

use std::sync::Arc;

use hearth_agents::memory::{AgentMemory, BusMemory, Remember};
use hearth_agents::model::BusModel;
use hearth_agents::service::{self, AgentService, ToolsFor};
use hearth_agents::tools::{BusTools, LocalTool, ToolSet, Tools};
use hearth_agents::{AgentSpec, SpecError, Specs};
use hearth_mesh::clients::{EngineClient, MemoryClient, ToolhostClient};
use hearth_mesh::subjects::Service;
use hearth_mesh::{BusError, Config, SharedBus};

/// Why the operative could not start.
#[derive(Debug, thiserror::Error)]
pub enum OperativeError {
    /// Its agent specs are missing or invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// It could not subscribe on the bus.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// It could not be served.
    #[error(transparent)]
    Serve(#[from] hearth_agents::service::ServeError),
    /// The durable work queue could not be opened.
    #[error(transparent)]
    Work(#[from] hearth_mesh::work::WorkError),
}

/// A running operative: its worker name, its intake and its other loops.
pub use hearth_agents::service::Running;

/// Starts an operative on `bus`.
pub async fn start(config: &Config, bus: SharedBus) -> Result<Running, OperativeError> {
    let subjects = config.subjects();
    let specs = Specs::load(config.agents.dir.as_deref())?;
    let engine = EngineClient::new(bus.clone(), subjects.clone(), config.engine_timeout());
    let toolhost = ToolhostClient::new(bus.clone(), subjects.clone(), config.request_timeout());
    let memory: Option<Arc<dyn AgentMemory>> = config.memory.agent_memory.then(|| {
        Arc::new(BusMemory::new(MemoryClient::new(
            bus.clone(),
            subjects.clone(),
            config.engine_timeout(),
        ))) as Arc<dyn AgentMemory>
    });
    let remember: Option<Arc<dyn LocalTool>> = memory
        .clone()
        .map(|m| Arc::new(Remember::new(m)) as Arc<dyn LocalTool>);
    let tools_for: ToolsFor = Arc::new(move |spec: Arc<AgentSpec>| -> Arc<dyn Tools> {
        let bus_tools: Arc<dyn Tools> = Arc::new(BusTools::new(toolhost.clone(), spec.clone()));
        match &remember {
            Some(r) if spec.allows_tool(hearth_agents::memory::REMEMBER_TOOL) => {
                Arc::new(ToolSet::new(vec![r.clone()], bus_tools))
            }
            _ => bus_tools,
        }
    });
    let mut svc = AgentService::new(
        service::worker_name(Service::Operative),
        specs,
        config.agents.operative.clone(),
        Arc::new(BusModel::new(engine)),
        tools_for,
        config.task_timeout(),
    )?;
    if let Some(m) = memory {
        svc = svc.with_memory(m, config.memory.recall as usize);
    }
    let svc = svc.with_bus_traces(config, bus.clone());
    let work = hearth_mesh::work::WorkQueue::for_bus(config, &bus).await?;
    let running = service::serve(svc, Service::Operative, bus, &subjects, work).await?;
    tracing::info!(worker = %running.worker, "operative ready");
    Ok(running)
}
