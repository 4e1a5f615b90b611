//! Learning, the fifth primitive: Hearth keeps a redacted trace of every
//! agent run, scores itself on task suites, turns its own work into training
//! data, and adopts a trained adapter only when it wins on held-out work.
//!
//! - [`store`] and [`convert`]: traces on disk, and their JSON form.
//! - [`redact`]: secrets out of traces before anything is written.
//! - [`eval`]: task suites (JSONL), scoring, reports, the paired bootstrap.
//! - [`synth`]: generators of tasks per capability, and the teacher that
//!   walks the real mesh through them so the trajectories it leaves are real.
//! - [`export`]: traces into datasets (the OpenAI chat format Hugging Face
//!   and TRL read, and rows rendered by the engine for training).
//!
//! The service itself ([`run`]) listens on `hearth.v1.learning.*`: `record`
//! keeps a trace, `traces` returns a task's traces and its subtasks'.
//! Training is a standalone Python trainer under `train/` that `hearth learn
//! finetune` drives; suites live under `suites/` and the shipped adapter
//! under `adapters/`.

pub mod convert;
pub mod eval;
pub mod export;
pub mod redact;
pub mod store;
pub mod synth;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hearth_mesh::subjects::Service;
use hearth_mesh::{BusError, Config, SharedBus};
use hearth_proto::v1::{RecordResponse, Trace, TracesRequest, TracesResponse};
use tokio::task::JoinHandle;
use tonic::Status;

use crate::convert::{Source, TraceDoc};
use crate::redact::Redactor;
use crate::store::TraceStore;

/// Where traces are kept under this configuration.
pub fn traces_dir(config: &Config, data_dir: &Path) -> PathBuf {
    config
        .learning
        .dir
        .clone()
        .unwrap_or_else(|| data_dir.join("traces"))
}

/// The learning service.
#[derive(Clone)]
pub struct LearningService {
    store: Arc<TraceStore>,
    redactor: Arc<Redactor>,
    enabled: bool,
    source: Source,
    keep_days: u32,
    max_traces: usize,
    written: Arc<AtomicUsize>,
}

/// Retention runs after every this many traces.
const PRUNE_EVERY: usize = 200;

impl LearningService {
    /// The service for `config`, keeping traces in `dir`, marked `source`.
    pub fn new(config: &Config, dir: PathBuf, source: Source) -> Self {
        Self {
            store: Arc::new(TraceStore::open(dir)),
            redactor: Arc::new(Redactor::from_config(config)),
            enabled: config.learning.traces,
            source,
            keep_days: config.learning.keep_days,
            max_traces: config.learning.max_traces,
            written: Arc::default(),
        }
    }

    /// Its store.
    pub fn store(&self) -> Arc<TraceStore> {
        self.store.clone()
    }

    /// Keeps one trace (redacted first); `None` when recording is off.
    pub async fn record(&self, trace: Trace) -> Result<Option<String>, Status> {
        if !self.enabled {
            return Ok(None);
        }
        let doc = self
            .redactor
            .trace(&TraceDoc::from_wire(trace, self.source));
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let id = me
                .store
                .put(doc)
                .map_err(|e| Status::internal(e.to_string()))?;
            if me
                .written
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(PRUNE_EVERY)
                && let Err(e) = me.store.prune(me.keep_days, me.max_traces)
            {
                tracing::warn!(error = %e, "trace retention failed");
            }
            Ok(Some(id))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    /// A task's traces and its subtasks'.
    pub async fn traces(&self, req: TracesRequest) -> Result<TracesResponse, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let docs = store
                .tree(&req.task_id)
                .map_err(|e| Status::internal(e.to_string()))?;
            Ok(TracesResponse {
                traces: docs.iter().map(TraceDoc::to_wire).collect(),
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }
}

#[tonic::async_trait]
impl hearth_proto::v1::learning_server::Learning for LearningService {
    async fn record(
        &self,
        request: tonic::Request<Trace>,
    ) -> Result<tonic::Response<RecordResponse>, Status> {
        LearningService::record(self, request.into_inner())
            .await
            .map(|_| tonic::Response::new(RecordResponse {}))
    }

    async fn traces(
        &self,
        request: tonic::Request<TracesRequest>,
    ) -> Result<tonic::Response<TracesResponse>, Status> {
        LearningService::traces(self, request.into_inner())
            .await
            .map(tonic::Response::new)
    }
}

/// Serves `svc` on the bus (queue group `learning`).
pub async fn serve(
    svc: LearningService,
    bus: SharedBus,
    config: &Config,
) -> Result<Vec<JoinHandle<()>>, BusError> {
    let at = hearth_mesh::rpc::ServeAt::role(bus, config.subjects(), Service::Learning);
    hearth_mesh::bindings::learning_bus::serve(std::sync::Arc::new(svc), &at).await
}

/// What the running learning service says of itself: where traces go,
/// and whether recording is on.
struct LearningChecks {
    dir: PathBuf,
    enabled: bool,
}

#[async_trait::async_trait]
impl hearth_mesh::running::Checks for LearningChecks {
    async fn checks(&self) -> Vec<hearth_proto::v1::HealthCheck> {
        use hearth_mesh::running::check;
        use hearth_proto::v1::CheckOutcome;
        if !self.enabled {
            return vec![check(
                "traces",
                CheckOutcome::Ok,
                "recording is off ([learning] traces = false)",
                None,
            )];
        }
        // The store makes its directory on the first write; one that
        // cannot be made is a failure to say now, not at the first task.
        match std::fs::create_dir_all(&self.dir) {
            Ok(()) => vec![check(
                "traces",
                CheckOutcome::Ok,
                format!("recorded (redacted) in {}", self.dir.display()),
                None,
            )],
            Err(e) => vec![check(
                "traces",
                CheckOutcome::Fail,
                format!("{}: {e}", self.dir.display()),
                Some("set [learning] dir to a writable directory".into()),
            )],
        }
    }
}

/// Starts the learning service for `config`, as every service starts:
/// traces of live work in the configured directory (the data dir's
/// `traces/` by default), served on `bus` with its health.
pub async fn start(
    config: &Config,
    bus: SharedBus,
) -> Result<hearth_mesh::running::Running, BusError> {
    let dir = traces_dir(config, &config.data_dir());
    let checks = LearningChecks {
        dir: dir.clone(),
        enabled: config.learning.traces,
    };
    let svc = LearningService::new(config, dir, convert::Source::Live);
    let handles = serve(svc, bus.clone(), config).await?;
    hearth_mesh::running::Running::new(Service::Learning)
        .handles(handles)
        .with_health(bus, &config.subjects(), Arc::new(checks))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::v1::ChatMessage;

    #[tokio::test]
    async fn a_recorded_trace_is_redacted_and_found_by_its_task_tree() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.engine.api_key = hearth_mesh::Secret::new("sk-test-0123456789abcdefXYZ");
        let svc = LearningService::new(&config, dir.path().to_path_buf(), Source::Live);
        let trace = |id: &str, parent: &str| Trace {
            task_id: id.into(),
            parent_task_id: parent.into(),
            agent: "operative".into(),
            // Retention runs on the first write: a trace from 1970 would go.
            started_unix_ms: store::now_ms(),
            messages: vec![ChatMessage {
                role: hearth_proto::v1::ChatRole::User.into(),
                content: "my key is sk-test-0123456789abcdefXYZ, use it".into(),
                ..Default::default()
            }],
            answer: "done".into(),
            ..Default::default()
        };
        svc.record(trace("t1", "")).await.unwrap();
        svc.record(trace("t2", "t1")).await.unwrap();
        let got = svc
            .traces(TracesRequest {
                task_id: "t1".into(),
            })
            .await
            .unwrap();
        assert_eq!(got.traces.len(), 2);
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
            assert!(!text.contains("sk-test-0123456789"), "{text}");
            assert!(text.contains(redact::REDACTED));
        }
        // Recording off: nothing is written.
        config.learning.traces = false;
        let off = LearningService::new(&config, dir.path().join("off"), Source::Live);
        assert_eq!(off.record(trace("t3", "")).await.unwrap(), None);
        assert!(!dir.path().join("off").exists());
    }
}
