//! Where an agent run's trace goes when it ends: the learning service, over
//! the bus ([`BusTraces`]). Sending never delays or fails the task: a trace
//! that cannot be delivered (no learning service in this mesh) is dropped
//! with a debug log.

use std::sync::Arc;

use hearth_mesh::clients::LearningClient;
use hearth_proto::v1::Trace;

/// Receives each finished run's trace.
pub trait TraceSink: Send + Sync {
    /// Takes one trace (must not block).
    fn record(&self, trace: Trace);
}

/// Sends traces to the learning service.
#[derive(Clone)]
pub struct BusTraces {
    client: LearningClient,
    worker: Arc<str>,
}

impl BusTraces {
    /// Traces from the instance `worker`, sent through `client`.
    pub fn new(client: LearningClient, worker: &str) -> Self {
        Self {
            client,
            worker: worker.into(),
        }
    }
}

impl TraceSink for BusTraces {
    fn record(&self, mut trace: Trace) {
        trace.worker = self.worker.to_string();
        let client = self.client.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = client.record(&trace).await {
                    tracing::debug!(task_id = %trace.task_id, error = %e.message(), "trace not kept");
                }
            });
        }
    }
}
