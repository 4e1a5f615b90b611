//! Where an agent run's trace goes when it ends: the learning service, over
//! the bus ([`BusTraces`]). The run waits for the trace to be kept (so a
//! process that exits right after the answer loses no trace) but never
//! fails for it: a trace that cannot be delivered within a short deadline
//! (no learning service in this mesh) is dropped with a debug log.

use std::sync::Arc;

use hearth_mesh::clients::LearningClient;
use hearth_proto::v1::Trace;

/// Receives each finished run's trace.
#[async_trait::async_trait]
pub trait TraceSink: Send + Sync {
    /// Takes one trace; returns once it is kept or given up on.
    async fn record(&self, trace: Trace);
}

/// How long a run waits for its trace to be kept.
pub const RECORD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

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

#[async_trait::async_trait]
impl TraceSink for BusTraces {
    async fn record(&self, mut trace: Trace) {
        trace.worker = self.worker.to_string();
        match tokio::time::timeout(RECORD_DEADLINE, self.client.record(&trace)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(task_id = %trace.task_id, error = %e.message(), "trace not kept")
            }
            Err(_) => tracing::debug!(task_id = %trace.task_id, "trace not kept in time"),
        }
    }
}
