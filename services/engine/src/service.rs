//! The `Engine` service: one implementation of the generated tonic trait,
//! served on the bus (and mountable on a tonic server), with metering added
//! around the backend: wall latency, time to first token, FLOPs (2 ×
//! parameters × tokens, when the backend did not count them), energy from a
//! real meter or the reason there is none, and dollar cost (the catalog's
//! price for a cloud model; measured energy × the electricity price for a
//! local one).

use hearth_mesh::telemetry::annotate;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use hearth_mesh::config::{BackendKind, EngineConfig};
use hearth_mesh::rpc::ServeAt;
use hearth_mesh::subjects::Service;
use hearth_mesh::{SharedBus, Subjects};
use hearth_proto::v1::engine_server::Engine;
use hearth_proto::v1::{
    EmbedRequest, EmbedResponse, GenerateChunk, GenerateRequest, RenderResponse,
};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use crate::backend::{Backend, EngineError};
use crate::backends::ollama::OllamaBackend;
use crate::backends::openai::OpenAiBackend;
use crate::backends::scripted::ScriptedBackend;
use crate::catalog::Catalog;
use crate::meter::{Energy, EnergyMeter};
use crate::route::Routing;
use crate::spend::{Reserved, SpendLedger, Stamp, UsageLine, Why};
use std::sync::Mutex;

/// Builds the configured backend.
///
/// `data_dir` is the configuration's data directory (`Config::data_dir`):
/// models and learned adapters are found there.
pub fn backend_from_config(
    cfg: &EngineConfig,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn Backend>, EngineError> {
    #[cfg(not(feature = "llama"))]
    let _ = data_dir;
    match cfg.backend {
        BackendKind::Openai => {
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
        BackendKind::Ollama => Ok(Arc::new(OllamaBackend::new(
            cfg.url.as_deref().unwrap_or("http://127.0.0.1:11434"),
            &cfg.model,
            Duration::from_millis(cfg.timeout_ms),
            cfg.max_tokens,
        )?)),
        BackendKind::Scripted => Ok(Arc::new(ScriptedBackend::with_delay(
            Duration::from_millis(cfg.scripted_delay_ms),
        ))),
        #[cfg(feature = "llama")]
        BackendKind::Llama => Ok(Arc::new(load_llama(cfg, data_dir)?)),
        #[cfg(not(feature = "llama"))]
        BackendKind::Llama => Err(EngineError::NotConfigured(
            "this build has no embedded engine (built without the `llama` feature): \
             set HEARTH_ENGINE_BACKEND=openai and HEARTH_ENGINE_URL"
                .into(),
        )),
    }
}

/// Finds the configured model (catalog id or path) and loads it. Blocking.
#[cfg(feature = "llama")]
pub fn load_llama(
    cfg: &EngineConfig,
    data_dir: &std::path::Path,
) -> Result<crate::backends::llama::LlamaCppBackend, EngineError> {
    use crate::backends::llama::{LlamaCppBackend, LlamaOptions};
    use crate::catalog::{Catalog, models_dir};
    let catalog = Catalog::builtin().map_err(|e| EngineError::NotConfigured(e.to_string()))?;
    let resolved = catalog
        .resolve(&cfg.model, &models_dir(cfg.models_dir.as_deref(), data_dir))
        .map_err(|e| EngineError::NotConfigured(e.to_string()))?;
    let fallback_template = cfg.template.clone().or(resolved.template);
    let family_templates = catalog
        .families
        .iter()
        .map(|f| (f.id.clone(), f.template.clone()))
        .collect();
    let chosen = match crate::adapters::choose(cfg, &resolved.path, data_dir) {
        Ok(c) => c,
        // The user's own choice failing is an error; a learned adapter
        // failing leaves the base model running, loudly.
        Err(e) if !cfg.lora.is_empty() => return Err(EngineError::NotConfigured(e.to_string())),
        Err(e) => {
            tracing::warn!(error = %e, "the learned adapter is not applied");
            None
        }
    };
    // The adapter folded into the weights once (no cost per token); if
    // that fails, it is applied at run time.
    let base = resolved.path;
    let mut path = base.clone();
    let mut lora = chosen.as_ref().map(|c| (c.path.clone(), c.scale));
    if cfg.merge_adapter
        && let Some((adapter, scale)) = &lora
    {
        let dir = models_dir(cfg.models_dir.as_deref(), data_dir).join("merged");
        match crate::backends::llama::merge::merged(&base, adapter, *scale, &dir) {
            Ok(m) => {
                path = m;
                lora = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the adapter is applied at run time: merging it failed")
            }
        }
    }
    let opts = LlamaOptions {
        path,
        name: resolved.name,
        fallback_template,
        family_templates,
        slots: cfg.slots,
        context: cfg.context,
        threads: cfg.threads,
        max_tokens: cfg.max_tokens,
        seed: 42,
        lora,
        temperature: cfg.temperature,
        draft_tokens: cfg.draft_tokens,
    };
    match LlamaCppBackend::load(opts.clone()) {
        Ok(b) => {
            if let Some(c) = &chosen {
                tracing::debug!(adapter = %c.name, source = ?c.source, "LoRA adapter applied");
            }
            Ok(b.with_adapter(chosen))
        }
        Err(e) if opts.path != base => {
            // A merged file llama.cpp refuses: made again on the next start;
            // this one applies the adapter at run time.
            tracing::warn!(model = %opts.path.display(), error = %e, "the merged model was refused; removed, applying the adapter at run time");
            let _ = std::fs::remove_file(&opts.path);
            let lora = chosen.as_ref().map(|c| (c.path.clone(), c.scale));
            LlamaCppBackend::load(LlamaOptions {
                path: base,
                lora,
                ..opts
            })
            .map(|b| b.with_adapter(chosen))
        }
        Err(e) => match &chosen {
            Some(c) if c.source != crate::adapters::Source::Config => {
                tracing::warn!(adapter = %c.name, error = %e, "the learned adapter was refused; running the base model");
                LlamaCppBackend::load(LlamaOptions { lora: None, ..opts })
            }
            _ => Err(e),
        },
    }
}

/// How an answer's dollar cost is found.
#[derive(Debug, Clone, PartialEq)]
pub enum Price {
    /// A cloud model: USD per million input and output tokens.
    Cloud {
        /// Per million prompt tokens.
        input_per_mtok: f64,
        /// Per million completion tokens.
        output_per_mtok: f64,
    },
    /// A model on this machine: measured energy × USD per kWh.
    Local {
        /// Electricity price.
        usd_per_kwh: f64,
    },
    /// Neither (a self-hosted server elsewhere, the scripted double).
    Unknown(String),
}

/// What the service measures around a backend.
pub struct Metering {
    /// The energy meter (possibly none, with its reason).
    pub meter: Arc<EnergyMeter>,
    /// How cost is found.
    pub price: Price,
    /// Parameters of the served model, for FLOPs when the backend does not
    /// count them.
    pub params: Option<f64>,
}

impl Metering {
    /// No meter, no price (test doubles).
    pub fn none(why: &str) -> Self {
        Self {
            meter: Arc::new(EnergyMeter::none(why)),
            price: Price::Unknown(why.to_string()),
            params: None,
        }
    }
}

fn is_loopback_url(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split(']')
            .next()
            .unwrap_or_default()
            .trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or_default()
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The metering that fits a configuration: which meter sees the model's
/// hardware, and how its answers are priced.
pub fn metering_for(cfg: &EngineConfig, model: &str) -> Metering {
    let catalog = Catalog::builtin().ok();
    let params = catalog
        .as_ref()
        .and_then(|c| c.params_for(model))
        .map(|b| b * 1e9);
    let local = Price::Local {
        usd_per_kwh: cfg.electricity_usd_per_kwh,
    };
    match cfg.backend {
        BackendKind::Llama => Metering {
            meter: Arc::new(EnergyMeter::for_cpu()),
            price: local,
            params,
        },
        BackendKind::Openai | BackendKind::Ollama => {
            let url = cfg.url.as_deref().unwrap_or("http://127.0.0.1:11434");
            let cloud = catalog.as_ref().and_then(|c| c.cloud_model(model));
            if let Some(c) = cloud {
                return Metering {
                    meter: Arc::new(EnergyMeter::none(
                        "a cloud model: its energy is not visible from here",
                    )),
                    price: Price::Cloud {
                        input_per_mtok: c.input_usd_per_mtok,
                        output_per_mtok: c.output_usd_per_mtok,
                    },
                    params,
                };
            }
            if is_loopback_url(url) {
                Metering {
                    meter: Arc::new(EnergyMeter::for_local_gpu()),
                    price: local,
                    params,
                }
            } else {
                let why =
                    "the model runs on a server elsewhere: its energy is not visible from here";
                Metering {
                    meter: Arc::new(EnergyMeter::none(why)),
                    price: Price::Unknown(why.into()),
                    params,
                }
            }
        }
        BackendKind::Scripted => Metering::none("the scripted test engine runs no model"),
    }
}

/// Where embeddings come from.
#[derive(Clone, Default)]
pub enum Embeddings {
    /// The backend's own (a server's embeddings endpoint).
    #[default]
    Backend,
    /// A local GGUF embedding model in llama.cpp, loaded on first use.
    #[cfg(feature = "llama")]
    Local(Arc<LocalEmbeddings>),
}

/// A local embedding model, loaded on first use.
#[cfg(feature = "llama")]
pub struct LocalEmbeddings {
    path: std::path::PathBuf,
    threads: u32,
    cell: tokio::sync::OnceCell<Arc<crate::backends::llama::embed::LlamaEmbedder>>,
}

#[cfg(feature = "llama")]
impl LocalEmbeddings {
    /// The model at `path`.
    pub fn new(path: std::path::PathBuf, threads: u32) -> Self {
        Self {
            path,
            threads,
            cell: tokio::sync::OnceCell::new(),
        }
    }

    /// The model file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The loaded model (loading it now if needed).
    pub async fn model(
        &self,
    ) -> Result<Arc<crate::backends::llama::embed::LlamaEmbedder>, EngineError> {
        self.cell
            .get_or_try_init(|| async {
                let (path, threads) = (self.path.clone(), self.threads);
                let name = path
                    .file_stem()
                    .map_or_else(|| "embeddings".into(), |s| s.to_string_lossy().into_owned());
                tokio::task::spawn_blocking(move || {
                    crate::backends::llama::embed::LlamaEmbedder::load(&path, &name, threads)
                })
                .await
                .map_err(|e| EngineError::NotConfigured(e.to_string()))?
                .map(Arc::new)
            })
            .await
            .cloned()
    }
}

/// Where embeddings come from for a configuration: the local model for the
/// `llama` backend or when `embed_model` names a `.gguf` file, the server's
/// endpoint otherwise.
pub fn embeddings_for(cfg: &EngineConfig, data_dir: &std::path::Path) -> Embeddings {
    // A GGUF file named as the embedding model runs here whatever the
    // chat backend is (a server without an embeddings endpoint, say).
    #[cfg(feature = "llama")]
    let local_file = cfg
        .embed_model
        .as_deref()
        .is_some_and(|m| m.to_ascii_lowercase().ends_with(".gguf"));
    #[cfg(feature = "llama")]
    if cfg.backend == BackendKind::Llama || local_file {
        let path = cfg.embed_model.clone().map_or_else(
            || {
                crate::backends::llama::embed::default_embed_model(&crate::catalog::models_dir(
                    cfg.models_dir.as_deref(),
                    data_dir,
                ))
            },
            std::path::PathBuf::from,
        );
        return Embeddings::Local(Arc::new(LocalEmbeddings::new(path, cfg.threads)));
    }
    let _ = (cfg, data_dir);
    Embeddings::Backend
}

/// The engine service around its routing: `[engine]`'s backend and any
/// remote ones, each generation sent where the routing says.
#[derive(Clone)]
pub struct EngineService {
    routing: Arc<Routing>,
    embeddings: Embeddings,
}

impl EngineService {
    /// Serves `backend` alone, measuring what `metering` says; embeddings
    /// come from the backend.
    pub fn new(backend: Arc<dyn Backend>, metering: Metering) -> Self {
        Self::routed(Routing::single(backend, metering, 512))
    }

    /// Serves through `routing`.
    pub fn routed(routing: Routing) -> Self {
        Self {
            routing: Arc::new(routing),
            embeddings: Embeddings::Backend,
        }
    }

    /// The same, with embeddings from `embeddings`.
    pub fn with_embeddings(mut self, embeddings: Embeddings) -> Self {
        self.embeddings = embeddings;
        self
    }

    /// `[engine]`'s backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.routing.primary().backend
    }

    /// The routing it serves through.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }
}

/// Whether a failed call may go to the next lane: the backend is down,
/// unreachable, too slow or broken — not a request that is itself wrong.
fn falls_back(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Unreachable { .. }
            | EngineError::Timeout(_)
            | EngineError::Backend { .. }
            | EngineError::Malformed(_)
            | EngineError::NotConfigured(_)
    )
}

/// A reservation waiting for its call's real cost, and the call's line in
/// the usage log. Dropped unsettled (the stream ended early, the caller
/// went away), the reservation is kept whole: the call may have been
/// billed.
struct Settlement {
    ledger: Option<Arc<SpendLedger>>,
    reserved: Mutex<Option<Reserved>>,
    line: Mutex<Option<UsageLine>>,
}

impl Settlement {
    /// Settles at the usage's cost and logs the call.
    async fn settle(&self, u: &hearth_proto::v1::Usage) {
        let Some(ledger) = self.ledger.clone() else {
            return;
        };
        let reserved = hearth_mesh::sync::lock(&self.reserved).take();
        let line = hearth_mesh::sync::lock(&self.line).take().map(|mut l| {
            l.model.clone_from(&u.model);
            l.tokens_in = u.tokens_in;
            l.tokens_out = u.tokens_out;
            l.usd = u.cost_usd;
            l
        });
        let cost = u.cost_usd;
        let done = tokio::task::spawn_blocking(move || {
            if let Some(r) = reserved {
                ledger.settle(&r, cost.unwrap_or(r.usd))?;
            }
            if let Some(l) = line {
                ledger.log(&l)?;
            }
            Ok::<_, crate::spend::LedgerError>(())
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the spend ledger was not updated"),
            Err(e) => tracing::warn!(error = %e, "the spend ledger was not updated"),
        }
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        let (Some(ledger), Some(r)) = (
            self.ledger.clone(),
            hearth_mesh::sync::lock(&self.reserved).take(),
        ) else {
            return;
        };
        let mut line = hearth_mesh::sync::lock(&self.line).take();
        if let Some(l) = line.as_mut() {
            l.failed = true;
            l.usd = Some(r.usd);
        }
        let work = move || {
            if let Err(e) = ledger.settle(&r, r.usd) {
                tracing::warn!(error = %e, "an unsettled reservation could not be kept");
            }
            if let Some(l) = line {
                let _ = ledger.log(&l);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(work);
            }
            Err(_) => work(),
        }
    }
}

/// Fills in FLOPs, energy and cost on a finished generation's usage.
fn complete_usage(u: &mut hearth_proto::v1::Usage, metering: &Metering, energy: Energy) {
    if u.flops.is_none()
        && let Some(p) = metering.params
    {
        u.flops = Some(2.0 * p * (u.tokens_in + u.tokens_out) as f64);
    }
    match energy {
        Energy::Measured(j, meter) => {
            u.energy_joules = Some(j);
            u.energy_meter = meter.into();
        }
        Energy::Unmeasured(why) => u.unmeasured = why,
    }
    u.cost_usd = match &metering.price {
        Price::Cloud {
            input_per_mtok,
            output_per_mtok,
        } => Some(
            (u.tokens_in as f64 * input_per_mtok + u.tokens_out as f64 * output_per_mtok) / 1e6,
        ),
        Price::Local { usd_per_kwh } => u.energy_joules.map(|j| j / 3.6e6 * usd_per_kwh),
        Price::Unknown(_) => None,
    };
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A backend's stream with what the service measures added: latency,
/// time to first token, model and backend, FLOPs, energy, cost and the
/// route; the reservation settled at the real cost when the usage arrives.
#[allow(clippy::too_many_arguments)]
fn metered(
    stream: crate::backend::ChunkStream,
    metering: Arc<Metering>,
    energy: crate::meter::Metering,
    started: Instant,
    model: String,
    backend: hearth_proto::v1::EngineBackend,
    route: String,
    sensitive: bool,
    settlement: Arc<Settlement>,
) -> BoxStream<'static, Result<GenerateChunk, Status>> {
    let mut energy = Some(energy);
    let mut first: Option<Duration> = None;
    // The hop's span (the bus server's), told what the call cost.
    let span = tracing::Span::current();
    stream
        .map(move |item| {
            let mut chunk = item?;
            if first.is_none() && (!chunk.delta.is_empty() || !chunk.tool_calls.is_empty()) {
                first = Some(started.elapsed());
            }
            if let Some(u) = chunk.usage.as_mut() {
                u.latency_ms = started.elapsed().as_secs_f64() * 1e3;
                // A backend that saw its first token itself knows better
                // (a constrained reply streams nothing until it parses).
                if u.ttft_ms <= 0.0 {
                    u.ttft_ms = first.unwrap_or_else(|| started.elapsed()).as_secs_f64() * 1e3;
                }
                if u.model.is_empty() {
                    u.model = model.clone();
                }
                if u.backend() == hearth_proto::v1::EngineBackend::Unspecified {
                    u.backend = backend.into();
                }
                u.route.clone_from(&route);
                u.sensitive = sensitive;
                let e = energy.take().map_or_else(
                    || Energy::Unmeasured("usage was reported twice".into()),
                    |m| m.finish(),
                );
                complete_usage(u, &metering, e);
                annotate(&span, "gen_ai.system", u.backend().name());
                annotate(&span, "gen_ai.request.model", u.model.clone());
                annotate(&span, "gen_ai.usage.input_tokens", to_i64(u.tokens_in));
                annotate(&span, "gen_ai.usage.output_tokens", to_i64(u.tokens_out));
                hearth_mesh::metrics::model_call(
                    u.backend().name(),
                    u.tokens_in,
                    u.tokens_out,
                    u.cost_usd,
                );
            }
            Ok::<_, Status>(chunk)
        })
        .then(move |item| {
            let settlement = settlement.clone();
            async move {
                if let Ok(chunk) = &item
                    && let Some(u) = &chunk.usage
                {
                    settlement.settle(u).await;
                }
                item
            }
        })
        .boxed()
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
        let (plan, sensitive) = self.routing.plan(&req)?;
        let ledger = self.routing.ledger().cloned();
        let root = crate::route::root_of(&req).to_string();
        let mut why_next: Option<Why> = None;
        let mut last_err: Option<EngineError> = None;
        for step in plan {
            let lane = &self.routing.lanes()[step.lane];
            let why = why_next.take().unwrap_or(step.why);
            // A priced lane is tried only with its worst case reserved.
            let remote = step.lane != 0;
            let reserved = match (lane.worst_case_usd(&req, remote), &ledger) {
                (Some(usd), Some(ledger)) => {
                    let (l, task) = (ledger.clone(), root.clone());
                    let at = Stamp::now();
                    let got = tokio::task::spawn_blocking(move || l.reserve(&task, usd, &at))
                        .await
                        .map_err(|e| Status::internal(format!("the spend ledger: {e}")))?
                        .map_err(|e| Status::internal(e.to_string()))?;
                    match got {
                        Ok(r) => Some(r),
                        Err(over) => {
                            tracing::info!(task_id = %req.task_id, backend = %lane.name, reason = %over, "not sent: over budget");
                            last_err = Some(EngineError::OverBudget(over));
                            why_next = Some(Why::Budget);
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let mut sent = req.clone();
            if remote {
                // The agent's model name is [engine]'s; a remote serves its
                // own, with its own cap on the reply.
                sent.model.clear();
                sent.max_tokens = lane.reply_limit(&req, true);
            }
            let model = if sent.model.is_empty() {
                lane.backend.default_model().to_string()
            } else {
                sent.model.clone()
            };
            let backend = lane.backend.kind();
            tracing::debug!(task_id = %req.task_id, %model, backend = backend.name(), route = %lane.name, why = why.as_str(), "generate");
            hearth_mesh::metrics::routed(&lane.name, lane.local, why.as_str());
            let energy = lane.metering.meter.begin();
            let now = Stamp::now();
            let settlement = Arc::new(Settlement {
                ledger: ledger.clone(),
                reserved: Mutex::new(reserved),
                line: Mutex::new(Some(UsageLine {
                    at_unix: now.unix,
                    day: now.day,
                    backend: lane.name.clone(),
                    local: lane.local,
                    model: model.clone(),
                    agent: req.agent.clone(),
                    why,
                    tokens_in: 0,
                    tokens_out: 0,
                    usd: None,
                    failed: false,
                })),
            });
            match lane.backend.generate(sent).await {
                Ok(stream) => {
                    let route = format!("{}: {}", lane.name, why.as_str());
                    return Ok(Response::new(metered(
                        stream,
                        lane.metering.clone(),
                        energy,
                        started,
                        model,
                        backend,
                        route,
                        sensitive,
                        settlement,
                    )));
                }
                Err(e) => {
                    // Never sent (or refused at once): nothing to keep.
                    let open = hearth_mesh::sync::lock(&settlement.reserved).take();
                    if let Some(r) = open
                        && let Some(l) = &ledger
                    {
                        let l = l.clone();
                        let _ = tokio::task::spawn_blocking(move || l.release(&r)).await;
                    }
                    if !falls_back(&e) {
                        return Err(e.into());
                    }
                    tracing::warn!(task_id = %req.task_id, backend = %lane.name, error = %e, "the backend failed; trying the next one");
                    last_err = Some(e);
                    why_next = Some(Why::Fallback);
                }
            }
        }
        Err(last_err
            .unwrap_or_else(|| EngineError::Refused("no backend could serve the request".into()))
            .into())
    }

    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        let req = request.into_inner();
        if req.inputs.len() > MAX_EMBED_INPUTS {
            return Err(Status::invalid_argument(format!(
                "{} texts in one request; the limit is {MAX_EMBED_INPUTS}",
                req.inputs.len()
            )));
        }
        match &self.embeddings {
            Embeddings::Backend => Ok(Response::new(self.backend().embed(req).await?)),
            #[cfg(feature = "llama")]
            Embeddings::Local(local) => {
                let model = local.model().await?;
                let vectors = model.embed(req.inputs).await?;
                Ok(Response::new(EmbedResponse {
                    embeddings: vectors
                        .into_iter()
                        .map(|values| hearth_proto::v1::Embedding { values })
                        .collect(),
                    model: model.name().to_string(),
                }))
            }
        }
    }

    async fn render(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<RenderResponse>, Status> {
        Ok(Response::new(self.backend().render(request.into_inner())?))
    }
}

/// Most texts in one embedding request.
pub const MAX_EMBED_INPUTS: usize = 256;

/// Serves the engine on the bus (queue group `engine`) until the bus closes.
pub async fn serve(
    service: EngineService,
    bus: SharedBus,
    subjects: &Subjects,
) -> Result<Vec<JoinHandle<()>>, hearth_mesh::BusError> {
    let at = ServeAt::role(bus, subjects.clone(), Service::Engine);
    hearth_mesh::bindings::engine_bus::serve(Arc::new(service), &at).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_recognised() {
        for u in [
            "http://127.0.0.1:8000/v1",
            "http://localhost:11434",
            "http://[::1]:8000/v1",
            "http://user:pw@127.0.0.1/v1",
        ] {
            assert!(is_loopback_url(u), "{u}");
        }
        for u in ["https://api.openai.com/v1", "http://10.0.0.5:8000/v1"] {
            assert!(!is_loopback_url(u), "{u}");
        }
    }

    #[test]
    fn cloud_models_are_priced_from_the_catalog_and_remote_servers_are_not_metered() {
        let cfg = EngineConfig {
            backend: BackendKind::Openai,
            url: Some("https://api.openai.com/v1".into()),
            ..Default::default()
        };
        let m = metering_for(&cfg, "gpt-5.4");
        let mut u = hearth_proto::v1::Usage {
            tokens_in: 1_000_000,
            tokens_out: 100_000,
            ..Default::default()
        };
        complete_usage(&mut u, &m, m.meter.begin().finish());
        // 2.50 per million in, 15.00 per million out.
        assert!((u.cost_usd.unwrap() - 4.0).abs() < 1e-9, "{u:?}");
        assert_eq!(u.energy_joules, None);
        assert!(u.unmeasured.contains("cloud"), "{}", u.unmeasured);

        let m = metering_for(
            &EngineConfig {
                url: Some("http://10.1.2.3:8000/v1".into()),
                ..cfg
            },
            "qwen2.5-7b-instruct",
        );
        let mut u = hearth_proto::v1::Usage {
            tokens_in: 100,
            tokens_out: 10,
            ..Default::default()
        };
        complete_usage(&mut u, &m, m.meter.begin().finish());
        assert_eq!(u.cost_usd, None);
        assert!(u.unmeasured.contains("elsewhere"));
        // FLOPs from the catalog's parameter count: 2 × 7.62e9 × 110.
        assert!((u.flops.unwrap() - 2.0 * 7.62e9 * 110.0).abs() < 1.0);
    }

    #[test]
    fn a_local_models_cost_is_measured_energy_times_the_price() {
        let m = Metering {
            meter: Arc::new(EnergyMeter::none("unused")),
            price: Price::Local { usd_per_kwh: 0.36 },
            params: None,
        };
        let mut u = hearth_proto::v1::Usage::default();
        complete_usage(
            &mut u,
            &m,
            Energy::Measured(10_000.0, hearth_proto::v1::EnergyMeter::Rapl),
        );
        // 10 kJ = 1/360 kWh; × 0.36 = 0.001.
        assert!((u.cost_usd.unwrap() - 0.001).abs() < 1e-12);
        assert_eq!(u.energy_meter(), hearth_proto::v1::EnergyMeter::Rapl);
        let mut u = hearth_proto::v1::Usage::default();
        complete_usage(&mut u, &m, Energy::Unmeasured("no meter".into()));
        assert_eq!((u.energy_joules, u.cost_usd), (None, None));
        assert_eq!(u.unmeasured, "no meter");
    }
}
