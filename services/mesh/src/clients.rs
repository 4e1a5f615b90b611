//! Typed clients for each service's subjects, under their usual names.
//!
//! A service calls another through these (never through its crate), so the
//! services meet only on the bus. They are generated from `proto/` (see
//! [`crate::bindings`]): each RPC of a service is a method of its client,
//! and `<method>_on` calls one instance of the role.

pub use crate::bindings::agent_bus::AgentClient;
pub use crate::bindings::engine_bus::EngineClient;
pub use crate::bindings::learning_bus::LearningClient;
pub use crate::bindings::memory_bus::MemoryClient;
pub use crate::bindings::methods;
pub use crate::bindings::toolhost_bus::ToolhostClient;
