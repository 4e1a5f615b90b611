//! The agent runtime: what an agent is (a spec) and how it runs (the loop),
//! and the A2A task lifecycle shared by the orchestrator and operatives.
//!
//! - [`spec`]: agent specs as TOML files (name, role, model, system prompt,
//!   allowed tools, limits) — the `hearth-specs` crate, re-exported; the
//!   built-in specs live in `agents/specs/`.
//! - [`runtime`]: the agent loop: tool schemas offered to the model, tool
//!   calls checked and executed, results fed back, malformed calls retried,
//!   a step limit and a context budget.
//! - [`model`] and [`tools`]: the loop's two dependencies as traits, with
//!   implementations that call the engine and the toolhost over the bus.
//! - [`tasks`]: A2A tasks: ids, status events, artifacts, cancel, lookup.
//! - [`convert`]: building and reading A2A messages — `hearth_mesh::a2a`,
//!   re-exported.
//! - [`memory`]: what an agent remembers between tasks, and recalls.
//! - [`replay`]: a redelivered subtask's model turns and tool results
//!   replayed from its step log instead of run again.
//! - [`trace`]: each run's whole trajectory, sent to the learning service.
//!
//! Not for transport: the services that host agents serve these on the bus.

pub use hearth_mesh::a2a as convert;
pub mod grounding;
pub mod memory;
pub mod model;
pub mod replay;
pub mod runtime;
pub mod service;
pub use hearth_specs as spec;
pub mod tasks;
pub mod tools;
pub mod trace;
pub mod usage;

pub use runtime::{AgentError, AgentLoop, Outcome};
pub use spec::{AgentSpec, Role, SpecError, Specs};
