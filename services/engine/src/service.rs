//! The `Engine` service: one implementation of the generated tonic trait,
//! served on the bus (and mountable on a tonic server), with metering added
//! around the backend: wall latency and time to first token on every answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use hearth_mesh::clients::methods;
use hearth_mesh::config::EngineConfig;
use hearth_mesh::subjects::Service;
use hearth_mesh::{SharedBus, Subjects, rpc};
use hearth_proto::v1::engine_server::Engine;
use hearth_proto::v1::{EmbedRequest, EmbedResponse, GenerateChunk, GenerateRequest};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use crate::backend::{Backend, EngineError};
use crate::backends::ollama::OllamaBackend;
use crate::backends::openai::OpenAiBackend;
use crate::backends::scripted::ScriptedBackend;

/// Builds the configured backend.
pub fn backend_from_config(cfg: &EngineConfig) -> Result<Arc<dyn Backend>, EngineError> {
    match cfg.backend.as_str() {
        "openai" => {
            let url = cfg.url.as_deref().ok_or_else(|| {
                EngineError::NotConfigured(
                    "the openai backend needs a server: set HEARTH_ENGINE_URL (or engine.url in hearth.toml) \
                     to an OpenAI-compatible base URL ending in /v1"
                        .into(),
                )
            })?;
            let key = (!cfg.api_key.is_empty()).then(|| cfg.api_key.expose().to_string());
            Ok(Arc::new(OpenAiBackend::new(
                url,
                &cfg.model,
                key,
                Duration::from_millis(cfg.timeout_ms),
                cfg.max_tokens,
            )?))
        }
        "ollama" => Ok(Arc::new(OllamaBackend::new(
            cfg.url.as_deref().unwrap_or("http://127.0.0.1:11434"),
            &cfg.model,
            Duration::from_millis(cfg.timeout_ms),
            cfg.max_tokens,
        )?)),
        "scripted" => Ok(Arc::new(ScriptedBackend)),
        #[cfg(feature = "llama")]
        "llama" => Ok(Arc::new(load_llama(cfg)?)),
        #[cfg(not(feature = "llama"))]
        "llama" => Err(EngineError::NotConfigured(
            "this build has no embedded engine (built without the `llama` feature): \
             set HEARTH_ENGINE_BACKEND=openai and HEARTH_ENGINE_URL"
                .into(),
        )),
        other => Err(EngineError::NotConfigured(format!(
            "unknown engine backend `{other}` (known: llama, openai, ollama, scripted)"
        ))),
    }
}

/// Finds the configured model (catalog id or path) and loads it. Blocking.
#[cfg(feature = "llama")]
pub fn load_llama(
    cfg: &EngineConfig,
) -> Result<crate::backends::llama::LlamaCppBackend, EngineError> {
    use crate::backends::llama::{LlamaCppBackend, LlamaOptions};
    use crate::catalog::{Catalog, models_dir};
    let catalog = Catalog::builtin().map_err(|e| EngineError::NotConfigured(e.to_string()))?;
    let resolved = catalog
        .resolve(&cfg.model, &models_dir(cfg.models_dir.as_deref()))
        .map_err(|e| EngineError::NotConfigured(e.to_string()))?;
    let fallback_template = cfg.template.clone().or(resolved.template);
    let family_templates = catalog
        .families
        .iter()
        .map(|f| (f.id.clone(), f.template.clone()))
        .collect();
    LlamaCppBackend::load(LlamaOptions {
        path: resolved.path,
        name: resolved.name,
        fallback_template,
        family_templates,
        slots: cfg.slots,
        context: cfg.context,
        threads: cfg.threads,
        max_tokens: cfg.max_tokens,
        seed: 42,
    })
}

/// The engine service around one backend.
#[derive(Clone)]
pub struct EngineService {
    backend: Arc<dyn Backend>,
}

impl EngineService {
    /// Serves `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }
}

#[tonic::async_trait]
impl Engine for EngineService {
    type GenerateStream = BoxStream<'static, Result<GenerateChunk, Status>>;

    async fn generate(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let req = request.into_inner();
        let started = Instant::now();
        let model = if req.model.is_empty() {
            self.backend.default_model().to_string()
        } else {
            req.model.clone()
        };
        let backend = self.backend.name();
        tracing::debug!(task_id = %req.task_id, %model, backend, "generate");
        let stream = self.backend.generate(req).await?;
        let mut first: Option<Duration> = None;
        let metered = stream.map(move |item| {
            let mut chunk = item?;
            if first.is_none() && (!chunk.delta.is_empty() || !chunk.tool_calls.is_empty()) {
                first = Some(started.elapsed());
            }
            if let Some(u) = chunk.usage.as_mut() {
                u.latency_ms = started.elapsed().as_secs_f64() * 1e3;
                u.ttft_ms = first.unwrap_or_else(|| started.elapsed()).as_secs_f64() * 1e3;
                if u.model.is_empty() {
                    u.model = model.clone();
                }
                if u.backend.is_empty() {
                    u.backend = backend.to_string();
                }
            }
            Ok(chunk)
        });
        Ok(Response::new(metered.boxed()))
    }

    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        Ok(Response::new(
            self.backend.embed(request.into_inner()).await?,
        ))
    }
}

/// Serves the engine on the bus (queue group `engine`) until the bus closes.
pub async fn serve(
    service: EngineService,
    bus: SharedBus,
    subjects: &Subjects,
) -> Result<Vec<JoinHandle<()>>, hearth_mesh::BusError> {
    let queue = Some(Service::Engine.name().to_string());
    let gen_svc = service.clone();
    let generate = rpc::serve_stream(
        bus.clone(),
        subjects.method(Service::Engine, methods::GENERATE),
        queue.clone(),
        move |req: GenerateRequest| {
            let svc = gen_svc.clone();
            async move {
                svc.generate(Request::new(req))
                    .await
                    .map(Response::into_inner)
            }
        },
    )
    .await?;
    let embed = rpc::serve_unary(
        bus,
        subjects.method(Service::Engine, methods::EMBED),
        queue,
        move |req: EmbedRequest| {
            let svc = service.clone();
            async move { svc.embed(Request::new(req)).await.map(Response::into_inner) }
        },
    )
    .await?;
    Ok(vec![generate, embed])
}
