//! Memory: a Qdrant vector store shared by the mesh — collections of text
//! chunks with real embeddings (from the engine, over the bus), searched by
//! meaning and by keywords, fused.
//!
//! - [`store`]: the `VectorStore` trait and what crosses it;
//! - [`edge`]: qdrant-edge in this process (the default; persisted under the
//!   data dir);
//! - [`server`]: a Qdrant server over gRPC (`HEARTH_QDRANT_URL`), for a mesh
//!   that spans machines;
//! - [`service`]: the `Memory` service on the bus;
//! - [`ingest`]: files to chunks, incrementally.
//!
//! In a mesh only the memory service opens the store; everyone else calls it.

pub mod edge;
pub mod ingest;
pub mod server;
pub mod service;
pub mod store;

use std::sync::Arc;

use hearth_mesh::clients::EngineClient;
use hearth_mesh::{BusError, Config, SharedBus};

pub use service::MemoryService;
pub use store::{StoreError, VectorStore};

/// Why the memory service could not start.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The store could not be opened or reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// It could not subscribe on the bus.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The keyword embedder could not start.
    #[error("the BM25 embedder: {0}")]
    Bm25(String),
}

/// The configured store: the Qdrant server if one is configured, else
/// qdrant-edge under `default_dir` (or `memory.dir`).
pub async fn open_store(
    config: &Config,
    default_dir: &std::path::Path,
) -> Result<Arc<dyn VectorStore>, StoreError> {
    match &config.memory.qdrant_url {
        Some(url) => {
            let key = (!config.memory.qdrant_api_key.is_empty())
                .then(|| config.memory.qdrant_api_key.expose());
            Ok(Arc::new(server::ServerStore::connect(url, key).await?))
        }
        None => {
            let dir = config
                .memory
                .dir
                .clone()
                .unwrap_or_else(|| default_dir.to_path_buf());
            Ok(Arc::new(Arc::new(edge::EdgeStore::open(&dir)?)))
        }
    }
}

/// What the running memory service says of itself: which store, and
/// whether it answers (its collections are listed).
struct MemoryChecks {
    store: Arc<dyn VectorStore>,
}

#[async_trait::async_trait]
impl hearth_mesh::running::Checks for MemoryChecks {
    async fn checks(&self) -> Vec<hearth_proto::v1::HealthCheck> {
        use hearth_mesh::running::check;
        use hearth_proto::v1::CheckOutcome;
        let store = self.store.describe();
        vec![match self.store.collections().await {
            Ok(c) => check(
                "memory",
                CheckOutcome::Ok,
                format!("{store}: {} collection(s)", c.len()),
                None,
            ),
            Err(e) => check(
                "memory",
                CheckOutcome::Fail,
                format!("{store}: {e}"),
                Some(
                    "start the Qdrant server (or fix HEARTH_QDRANT_URL / HEARTH_QDRANT_API_KEY), or unset HEARTH_QDRANT_URL to use qdrant-edge in process"
                        .into(),
                ),
            ),
        }]
    }
}

/// Starts the memory service on `bus`, as every service starts: the
/// configured store (qdrant-edge under `default_dir` unless configured
/// otherwise), served with its health.
pub async fn start(
    config: &Config,
    bus: SharedBus,
    default_dir: &std::path::Path,
) -> Result<hearth_mesh::running::Running, MemoryError> {
    let store = open_store(config, default_dir).await?;
    tracing::info!(backend = %store.describe(), "memory ready");
    let engine = EngineClient::new(bus.clone(), config.subjects(), config.engine_timeout());
    let svc = MemoryService::new(store.clone(), engine).map_err(MemoryError::Bm25)?;
    let handles = service::serve(svc, bus.clone(), &config.subjects()).await?;
    Ok(
        hearth_mesh::running::Running::new(hearth_mesh::subjects::Service::Memory)
            .handles(handles)
            .with_health(bus, &config.subjects(), Arc::new(MemoryChecks { store }))
            .await?,
    )
}
