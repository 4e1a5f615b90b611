//! The orchestrator: receives a task, answers it or delegates it to an
//! operative over the bus, relays the operative's progress, and returns the
//! final answer.
//!
//! Delegation is a tool, `hearth.delegate`, offered to the orchestrator's
//! model beside any toolhost tools its spec allows: the model decides. A
//! delegated subtask that cannot run (no operative listening, a timeout)
//! fails the task with that reason; one that runs and fails is reported to
//! the model, which may answer or try again.
//!
//! Over NATS the orchestrator takes tasks from its own durable work queue
//! ([`hearth_mesh::work`]) as well as by request, and a subtask goes
//! through the operatives' queue: an instance that dies holding either
//! hands it to another, which replays the recorded steps (a restarted
//! orchestrator finds the subtask it had handed over, by an id made from
//! the step), and a subtask that keeps failing ends the delegation with the
//! reason. `[work] durable = false`, and the in-process mesh, use requests
//! to the queue groups directly.
//!
//! External A2A agents (`[[agents.remote]]`) are tools too, `remote.<name>`
//! (see [`remote`]); their cards are read when the orchestrator starts.

mod delegate;
pub mod remote;

use std::sync::Arc;

use hearth_agents::model::BusModel;
use hearth_agents::service::{self, AgentService, ToolsFor};
use hearth_agents::tools::{BusTools, LocalTool, ToolSet, Tools};
use hearth_agents::{AgentSpec, SpecError, Specs};
use hearth_mesh::clients::{AgentClient, EngineClient, ToolhostClient};
use hearth_mesh::subjects::Service;
use hearth_mesh::{BusError, Config, SharedBus};

pub use delegate::{DELEGATE_TOOL, Delegate};

/// Why the orchestrator could not start.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
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

/// A running orchestrator: its worker name, its intake and its other loops.
pub use hearth_agents::service::Running;

/// Starts the orchestrator on `bus`.
pub async fn start(config: &Config, bus: SharedBus) -> Result<Running, OrchestratorError> {
    let subjects = config.subjects();
    let specs = Specs::load(config.agents.dir.as_deref())?;
    let engine = EngineClient::new(bus.clone(), subjects.clone(), config.engine_timeout());
    let toolhost = ToolhostClient::new(bus.clone(), subjects.clone(), config.request_timeout());
    // A subtask's events may be minutes apart while an operative works.
    let operatives = AgentClient::new(
        bus.clone(),
        subjects.clone(),
        Service::Operative,
        config.task_timeout(),
    );
    let work = hearth_mesh::work::WorkQueue::for_bus(config, &bus).await?;
    let local = Arc::new(Delegate::new(
        operatives,
        config.agents.operative.clone(),
        work.clone(),
        config.task_timeout(),
    ));
    let delegate: Arc<dyn LocalTool> = local.clone();
    let http = reqwest::Client::new();
    let mut own: Vec<Arc<dyn LocalTool>> = vec![delegate];
    for r in &config.agents.remote {
        let tool = Arc::new(remote::RemoteTool::new(
            r.clone(),
            http.clone(),
            r.fallback.then(|| local.clone()),
        ));
        // Read the card now, off the start-up path; a call reads it again
        // if it was not there yet.
        let t = tool.clone();
        let name = r.name.clone();
        tokio::spawn(async move {
            match t.refresh().await {
                Ok(card) => {
                    tracing::info!(agent = %name, card = %card.name, "remote agent card read")
                }
                Err(e) => tracing::warn!(agent = %name, error = %e, "remote agent card not read"),
            }
        });
        own.push(tool);
    }
    let tools_for: ToolsFor = Arc::new(move |spec: Arc<AgentSpec>| -> Arc<dyn Tools> {
        Arc::new(ToolSet::new(
            own.clone(),
            Arc::new(BusTools::new(toolhost.clone(), spec)),
        ))
    });
    let svc = AgentService::new(
        service::worker_name(Service::Orchestrator),
        specs,
        config.agents.orchestrator.clone(),
        Arc::new(BusModel::new(engine)),
        tools_for,
        config.task_timeout(),
    )?;
    let svc = svc.with_bus_traces(config, bus.clone());
    let running = service::serve(svc, Service::Orchestrator, bus, &subjects, work).await?;
    tracing::info!(worker = %running.worker, "orchestrator ready");
    Ok(running)
}
