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
use tokio::task::JoinHandle;

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

/// Starts the memory service on `bus`.
pub async fn run(
    config: &Config,
    bus: SharedBus,
    default_dir: &std::path::Path,
) -> Result<Vec<JoinHandle<()>>, MemoryError> {
    let store = open_store(config, default_dir).await?;
    tracing::info!(backend = %store.describe(), "memory ready");
    let engine = EngineClient::new(bus.clone(), config.subjects(), config.engine_timeout());
    let svc = MemoryService::new(store, engine).map_err(MemoryError::Bm25)?;
    Ok(service::serve(svc, bus, &config.subjects()).await?)
}
