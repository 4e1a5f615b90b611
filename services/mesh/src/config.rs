//! The one configuration struct, loaded from `hearth.toml` and `HEARTH_*`
//! environment variables (which win).
//!
//! The file is `$HEARTH_CONFIG` if set, else `./hearth.toml`, else
//! `$XDG_CONFIG_HOME/hearth/hearth.toml`. No key is needed for the embedded
//! default. Environment names are a contract: `HEARTH_NATS_URL`,
//! `HEARTH_ENGINE_BACKEND`, `HEARTH_ENGINE_URL`, `HEARTH_ENGINE_MODEL`,
//! `HEARTH_ENGINE_API_KEY`, `HEARTH_GATEWAY_ADDR`, `HEARTH_CONFIG`; any other
//! key is reachable as `HEARTH_<SECTION>_<KEY>` (e.g. `HEARTH_GATEWAY_TOKEN`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// A configuration error: a malformed file or a value of the wrong type.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named config file does not exist.
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    /// The file or the environment held something invalid.
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
}

/// A secret (token, API key): never printed, never logged.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

thread_local! {
    /// Set while [`masked`] serializes: every set secret becomes `MASK`.
    static MASKING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What a set secret shows as in [`Config::explain`].
pub const MASK: &str = "********";

/// Runs `f` with every [`Secret`] it serializes masked (on this thread).
fn masked<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            MASKING.with(|m| m.set(self.0));
        }
    }
    let _reset = Reset(MASKING.with(|m| m.replace(true)));
    f()
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !self.0.is_empty() && MASKING.with(std::cell::Cell::get) {
            s.serialize_str(MASK)
        } else {
            s.serialize_str(&self.0)
        }
    }
}

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether it is empty (the same as not configured).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        })
    }
}

/// Everything Hearth can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// NATS server URL, or several separated by commas (the servers of a
    /// cluster); unset runs the whole mesh in one process on the
    /// in-process bus. (`nats` in the file; `HEARTH_NATS_URL`.)
    #[serde(rename = "nats")]
    pub nats_url: Option<String>,
    /// Subject prefix: `<prefix>.v1.<service>.<method>`. A different prefix is
    /// a separate mesh on the same NATS server.
    pub subject_prefix: String,
    /// Deadline for one bus request (one reply frame), in milliseconds.
    pub request_timeout_ms: u64,
    /// Deadline for a whole task, in milliseconds.
    pub task_timeout_ms: u64,
    /// How long a service stopping (SIGTERM, Ctrl-C) lets the work it has
    /// already taken finish, in milliseconds, before it exits anyway.
    pub drain_timeout_ms: u64,
    /// Where Hearth keeps what it makes: models, traces, eval runs, learned
    /// adapters, memory, the sandbox's compiled interpreter, the files
    /// tool's workspace (`HEARTH_DATA_DIR`). Unset: `$XDG_DATA_HOME/hearth`,
    /// else `~/.local/share/hearth`. Read it through [`Config::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// Threads of the async runtime (`HEARTH_WORKER_THREADS`). Unset: half
    /// the cores, at least one. Inference, the sandbox, the vector store
    /// and long calculations run on threads of their own; the async
    /// workers only move messages, and a sequential chain of hops on more
    /// workers than it needs pays for wake-ups between them.
    pub worker_threads: Option<usize>,
    /// Inference.
    pub engine: EngineConfig,
    /// Which backend serves each request: local first, the cloud when
    /// allowed.
    pub routing: RoutingConfig,
    /// Spend limits enforced before a priced request is sent.
    pub budget: BudgetConfig,
    /// The HTTP front door.
    pub gateway: GatewayConfig,
    /// Webhooks in (`[[hooks]]`): `POST /hooks/<name>` on the gateway.
    pub hooks: Vec<HookConfig>,
    /// The toolhost.
    pub toolhost: ToolhostConfig,
    /// Built-in tools.
    pub tools: ToolsConfig,
    /// Third-party MCP servers, and the mesh as an MCP server.
    pub mcp: McpConfig,
    /// The vector store.
    pub memory: MemoryConfig,
    /// Agent specs and loop limits.
    pub agents: AgentsConfig,
    /// Traces, evaluation and learned adapters.
    pub learning: LearningConfig,
    /// How subtasks reach operatives over NATS: the durable work queue.
    pub work: WorkConfig,
    /// Hearth's streams and buckets on NATS.
    pub bus: BusConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: None,
            subject_prefix: "hearth".into(),
            request_timeout_ms: 30_000,
            task_timeout_ms: 300_000,
            drain_timeout_ms: 30_000,
            data_dir: None,
            worker_threads: None,
            engine: EngineConfig::default(),
            routing: RoutingConfig::default(),
            budget: BudgetConfig::default(),
            gateway: GatewayConfig::default(),
            hooks: Vec::new(),
            toolhost: ToolhostConfig::default(),
            tools: ToolsConfig::default(),
            mcp: McpConfig::default(),
            memory: MemoryConfig::default(),
            agents: AgentsConfig::default(),
            learning: LearningConfig::default(),
            work: WorkConfig::default(),
            bus: BusConfig::default(),
        }
    }
}

/// The work section: subtasks through a JetStream work queue over NATS
/// (the in-process mesh hands them over directly and needs none of it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkConfig {
    /// Over NATS, subtasks go through the durable work queue: explicitly
    /// acknowledged, redelivered to another operative when one dies,
    /// retried a bounded number of times, then dead-lettered. `false`
    /// keeps the plain request path (lower latency; a subtask in flight
    /// dies with its operative).
    pub durable: bool,
    /// How long an operative may go without reporting progress on a
    /// subtask before JetStream hands it to another (milliseconds). An
    /// operative reports progress every third of this while it works, so
    /// this is about how long a dead operative's work waits.
    pub ack_wait_ms: u64,
    /// Attempts charged to a subtask (a failed run, or an operative that
    /// died holding it) before it is dead-lettered and its task fails.
    pub max_attempts: u32,
    /// Wait before retrying a failed attempt (milliseconds), doubling each time.
    pub retry_backoff_ms: u64,
    /// How long a delegation waits for any operative to take its subtask
    /// before it withdraws it and fails (milliseconds).
    pub pickup_timeout_ms: u64,
    /// Subtasks one operative process works on at once.
    pub slots: u32,
    /// Tasks one orchestrator process works on at once (each mostly waits
    /// on its subtasks, so many more than an operative's).
    pub orchestrator_slots: u32,
    /// How long a subtask's step log is kept (hours).
    pub step_log_hours: u64,
}

impl Default for WorkConfig {
    fn default() -> Self {
        Self {
            durable: true,
            ack_wait_ms: 1_500,
            max_attempts: 3,
            retry_backoff_ms: 1_000,
            pickup_timeout_ms: 300_000,
            slots: 4,
            orchestrator_slots: 64,
            step_log_hours: 24,
        }
    }
}

/// The bus section: how every service signs in to NATS, and how Hearth's
/// JetStream streams and buckets are kept. Secrets come from here, the
/// environment (`HEARTH_BUS_*`) or files; they are never logged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Replicas of each stream and bucket (1 on a single server; 3 on a
    /// three-node cluster). 0 means 1.
    pub replicas: usize,
    /// NATS user (with `password`).
    pub user: Option<String>,
    /// NATS password.
    pub password: Secret,
    /// NATS token.
    pub token: Secret,
    /// A file holding an NKey seed (`SU…`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (a user JWT and its NKey seed).
    pub creds_file: Option<PathBuf>,
    /// CA certificate (PEM) the server's certificate must chain to.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for servers that verify clients.
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Refuse to talk to the server without TLS.
    pub tls_required: bool,
    /// The subject prefix of this process's reply inboxes. Unset: `_INBOX.<user>`
    /// when `user` is set (and is one subject token), else `_INBOX` — so under
    /// `deploy/nats/least-privilege.conf` each user reads only its own
    /// replies (`_INBOX.<user>.>`). Set it with an NKey or `.creds` sign-in.
    pub inbox_prefix: Option<String>,
    /// The JetStream domain of the server that keeps Hearth's streams, for
    /// a service connected through a leaf node (the compose stack's NATS
    /// edge says `hearth`). Unset: the connected server's own JetStream.
    pub jetstream_domain: Option<String>,
}

/// One NATS subject token of plain characters.
fn token_safe(t: &str) -> bool {
    !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl BusConfig {
    /// Checks the subject names this section sets: `inbox_prefix` (see
    /// [`BusConfig::inbox`]) and `jetstream_domain` (one token).
    pub fn check(&self) -> Result<(), String> {
        if let Some(d) = &self.jetstream_domain
            && !d.is_empty()
            && !token_safe(d)
        {
            return Err(format!(
                "[bus] jetstream_domain `{d}` is not one NATS subject token \
                 (letters, digits, `_`, `-`)"
            ));
        }
        self.inbox().map(drop)
    }

    /// The inbox prefix this process uses (see `inbox_prefix`), checked:
    /// one or more subject tokens, no wildcards.
    pub fn inbox(&self) -> Result<String, String> {
        match self.inbox_prefix.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => {
                if p.split('.').all(token_safe) {
                    Ok(p.to_string())
                } else {
                    Err(format!(
                        "[bus] inbox_prefix `{p}` is not a NATS subject of plain tokens \
                         (letters, digits, `_`, `-`, separated by dots; no wildcards)"
                    ))
                }
            }
            None => Ok(match &self.user {
                Some(u) if token_safe(u) => format!("_INBOX.{u}"),
                _ => "_INBOX".to_string(),
            }),
        }
    }
}

/// The engine section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// `llama` (embedded llama.cpp, the default: a GGUF model in this
    /// process), `openai` (any OpenAI-compatible server: vLLM, SGLang,
    /// llama-server, LM Studio, Ollama's /v1, cloud APIs) or `ollama`
    /// (Ollama's native /api/chat). `scripted` is a test double for mesh
    /// tests and is never chosen by default.
    pub backend: BackendKind,
    /// Base URL of the server: an OpenAI-compatible one ends in `/v1`;
    /// Ollama's is its root (`http://127.0.0.1:11434`).
    pub url: Option<String>,
    /// The model: for `llama`, a catalog id (`gemma-3-270m`) or a path to a
    /// GGUF file (empty: the catalog's default); for servers, the name sent.
    pub model: String,
    /// API key for the backend (sent as a bearer token).
    pub api_key: Secret,
    /// Deadline for one model call, in milliseconds.
    pub timeout_ms: u64,
    /// Most tokens one model call may produce.
    pub max_tokens: u32,
    /// `llama`: generations decoded together in one batch.
    pub slots: u32,
    /// `llama`: tokens of context per generation (prompt and reply).
    pub context: u32,
    /// `llama`: CPU threads (0: every core).
    pub threads: u32,
    /// `llama`: a llama.cpp chat template name (`chatml`, `gemma`,
    /// `llama3`, …) for a GGUF file that carries none and that the catalog
    /// does not know.
    pub template: Option<String>,
    /// `llama`: where pulled models are kept (default: the data dir's
    /// `models/`).
    pub models_dir: Option<std::path::PathBuf>,
    /// Electricity price in USD per kWh: a local model's dollar cost is its
    /// measured energy times this.
    pub electricity_usd_per_kwh: f64,
    /// The embedding model. For `llama`: a GGUF path (default: the data
    /// dir's `models/all-MiniLM-L6-v2-f16.gguf`, which scripts/setup makes);
    /// for a server: the model name its embeddings endpoint is asked for —
    /// or a `.gguf` path, run here in llama.cpp whatever the backend.
    pub embed_model: Option<String>,
    /// `llama`: LoRA adapters (GGUF) applied over the model, highest
    /// precedence: when set, neither a deployed nor the shipped adapter is.
    pub lora: Vec<LoraAdapter>,
    /// `llama`: the sampling temperature of requests that set none (unset:
    /// greedy, the default; `hearth learn sample` raises it to draw varied
    /// trajectories).
    pub temperature: Option<f32>,
    /// `llama`: apply the adapter `hearth learn` deployed for this model, or
    /// else the one Hearth ships for it (each bound to its base model's
    /// SHA-256, so neither applies to another model).
    pub learned_adapter: bool,
    /// `llama`: fold the chosen adapter into the model's weights once (a
    /// file kept in the models directory's `merged/`) instead of applying it
    /// at every token: the same answers at the base model's speed. False
    /// applies it at run time (as `[engine] lora` always could).
    pub merge_adapter: bool,
    /// `llama`: most tokens one decode step drafts by prompt lookup and
    /// verifies at once (replies that copy from the prompt — a restated
    /// task, code, a quoted text — decode several tokens a step; the reply
    /// is unchanged). 0, the default, turns it off: on this 2-core machine
    /// it made the main job no faster (warm medians 3.5–4.2 s with and
    /// without), so it stays a setting until a measurement says otherwise.
    pub draft_tokens: u32,
    /// The scripted test double only (`backend = "scripted"`): how long each
    /// of its calls takes, in milliseconds — a stand-in for model time in
    /// throughput tests and benchmarks of the mesh.
    pub scripted_delay_ms: u64,
    /// Whether data sent to this backend stays local (sensitive requests
    /// may go only to local backends). Unset: `llama` is local, and a
    /// server is local when its address is loopback or private.
    pub local: Option<bool>,
    /// Remote backends the routing may send requests to
    /// (`[[engine.remote]]`), by name.
    pub remote: Vec<RemoteBackend>,
}

/// A named remote inference backend (`[[engine.remote]]`): any
/// OpenAI-compatible API, or Ollama. `[routing]` says when it is used.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteBackend {
    /// Its name, referred to by `[routing] remote` (letters, digits, `_`,
    /// `-`; not `local`, which is `[engine]`).
    pub name: String,
    /// Which protocol it speaks.
    #[serde(default)]
    pub backend: RemoteKind,
    /// Its base URL (OpenAI-compatible: ending in `/v1`).
    pub url: String,
    /// The model name sent (a catalog id gives its prices).
    pub model: String,
    /// USD per million input tokens (overrides the catalog's).
    #[serde(default)]
    pub input_usd_per_mtok: Option<f64>,
    /// USD per million output tokens (overrides the catalog's).
    #[serde(default)]
    pub output_usd_per_mtok: Option<f64>,
    /// Its API key (never logged).
    #[serde(default)]
    pub api_key: Secret,
    /// Or the environment variable holding it.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Whether data sent to it stays local. Unset: local when its address
    /// is loopback or private.
    #[serde(default)]
    pub local: Option<bool>,
    /// Deadline for one call, in milliseconds (default: `[engine]`'s).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Most tokens one reply may have (default: `[engine]`'s).
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

impl RemoteBackend {
    /// The API key: `api_key`, or the variable `api_key_env` names.
    pub fn api_key_value(&self) -> Result<Option<String>, String> {
        if !self.api_key.is_empty() {
            return Ok(Some(self.api_key.expose().to_string()));
        }
        match &self.api_key_env {
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(v)),
                _ => Err(format!(
                    "[[engine.remote]] {:?}: api_key_env names {var}, which is not set",
                    self.name
                )),
            },
            None => Ok(None),
        }
    }
}

/// The protocol a remote backend speaks. An unknown name is refused at
/// load, with these listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteKind {
    /// Any OpenAI-compatible chat-completions API.
    #[default]
    Openai,
    /// Ollama's native API.
    Ollama,
}

/// Which backends serve a request (`[routing] policy`). An unknown name is
/// refused at load, with these listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoutePolicy {
    /// `[engine]` only: no remote backend is ever sent anything.
    #[default]
    LocalOnly,
    /// `[engine]`, and the remote when it fails (down, broken) or its tool
    /// call was malformed.
    LocalFirst,
    /// The remote, and `[engine]` when the remote fails, is over budget or
    /// the request is sensitive.
    CloudFirst,
}

impl RoutePolicy {
    /// Its name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            RoutePolicy::LocalOnly => "local-only",
            RoutePolicy::LocalFirst => "local-first",
            RoutePolicy::CloudFirst => "cloud-first",
        }
    }
}

/// The routing section: where generations go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// `local-only` (the default), `local-first` or `cloud-first`.
    pub policy: RoutePolicy,
    /// The `[[engine.remote]]` the policy uses (may be left out when there
    /// is exactly one).
    pub remote: Option<String>,
    /// Treat requests holding credentials (private keys, provider API
    /// keys), e-mail addresses or card numbers as sensitive.
    pub detect_sensitive: bool,
    /// More regular expressions that make a request sensitive.
    pub sensitive_patterns: Vec<String>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            policy: RoutePolicy::LocalOnly,
            remote: None,
            detect_sensitive: true,
            sensitive_patterns: Vec::new(),
        }
    }
}

impl RoutingConfig {
    /// The remote the policy uses: `remote`, or the only one there is.
    pub fn remote_name<'a>(&'a self, remotes: &'a [RemoteBackend]) -> Option<&'a str> {
        match &self.remote {
            Some(r) => Some(r.as_str()),
            None if remotes.len() == 1 => Some(remotes[0].name.as_str()),
            None => None,
        }
    }
}

/// Spend limits, in US dollars, enforced before a priced request is sent
/// (`[budget]`). Unset: no limit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Per local calendar day.
    pub usd_per_day: Option<f64>,
    /// Per local calendar month.
    pub usd_per_month: Option<f64>,
    /// Per task, its subtasks included.
    pub usd_per_task: Option<f64>,
}

/// Which engine backend runs the model. An unknown name in the
/// configuration is refused at load, with these listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Embedded llama.cpp (a GGUF model in this process): the default.
    #[default]
    Llama,
    /// Any OpenAI-compatible server.
    Openai,
    /// Ollama's native API.
    Ollama,
    /// The scripted test double (mesh tests only).
    Scripted,
}

impl BackendKind {
    /// Its name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Llama => "llama",
            BackendKind::Openai => "openai",
            BackendKind::Ollama => "ollama",
            BackendKind::Scripted => "scripted",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which web search API `web.search` calls. An unknown name in the
/// configuration is refused at load, with these listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchProviderKind {
    /// A SearXNG instance (`search_url` is required).
    Searxng,
    /// Brave Search's API (`search_api_key`).
    Brave,
    /// Tavily's API (`search_api_key`).
    Tavily,
}

/// A LoRA adapter to apply over the local model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoraAdapter {
    /// The adapter's GGUF file.
    pub path: PathBuf,
    /// How strongly it applies (1.0: as trained).
    #[serde(default = "default_lora_scale")]
    pub scale: f32,
}

fn default_lora_scale() -> f32 {
    1.0
}

/// The learning section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearningConfig {
    /// Record every agent run's trace (redacted) in the data dir.
    pub traces: bool,
    /// Where traces are kept (default: the data dir's `traces/`).
    pub dir: Option<PathBuf>,
    /// Traces older than this many days are removed (0: kept for ever).
    pub keep_days: u32,
    /// At most this many traces are kept; the oldest go first (0: no cap).
    pub max_traces: usize,
}

impl Default for LearningConfig {
    fn default() -> Self {
        Self {
            traces: true,
            dir: None,
            keep_days: 30,
            max_traces: 20_000,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::Llama,
            url: None,
            model: String::new(),
            api_key: Secret::default(),
            timeout_ms: 120_000,
            max_tokens: 512,
            slots: 4,
            context: 8192,
            threads: 0,
            template: None,
            models_dir: None,
            electricity_usd_per_kwh: 0.15,
            embed_model: None,
            lora: Vec::new(),
            temperature: None,
            learned_adapter: true,
            merge_adapter: true,
            draft_tokens: 0,
            scripted_delay_ms: 0,
            local: None,
            remote: Vec::new(),
        }
    }
}

/// One webhook (`[[hooks]]`): `POST /hooks/<name>` starts a task for
/// `agent` with `template` rendered over the JSON payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The hook's name, its path: `/hooks/<name>` (letters, digits, `-`,
    /// `_`).
    pub name: String,
    /// The agent that takes the task (an orchestrator spec; default
    /// `orchestrator`).
    #[serde(default = "default_hook_agent")]
    pub agent: String,
    /// The prompt, a minijinja template over the payload:
    /// `New issue in {{ payload.repository.full_name }}: {{ payload.issue.title }}`.
    pub template: String,
    /// The secret a delivery proves it knows (bearer token or HMAC key).
    #[serde(default)]
    pub secret: Secret,
    /// Or a file holding it.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Where the result is POSTed when the task ends.
    #[serde(default)]
    pub callback_url: Option<String>,
}

fn default_hook_agent() -> String {
    "orchestrator".into()
}

/// The gateway section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Listen address (A2A JSON-RPC and HTTP+JSON, MCP); loopback unless
    /// you mean otherwise.
    pub addr: String,
    /// Listen address of A2A over gRPC (empty: no gRPC); loopback unless you
    /// mean otherwise.
    pub grpc_addr: String,
    /// The address clients reach the gateway at, for the agent card
    /// (`https://agents.example.com`), when it is behind a proxy; default:
    /// the listen address.
    pub public_url: Option<String>,
    /// Token required on every request but the agent card, when set: as
    /// `Authorization: Bearer <token>` or `X-API-Key: <token>` (gRPC: the
    /// same metadata).
    pub token: Secret,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Allow push-notification webhooks on loopback and private addresses
    /// (off: only public addresses, so a caller cannot aim the gateway at
    /// the machine's own services).
    pub push_allow_private: bool,
    /// Requests with a wrong or missing token one client address may make
    /// in a minute; past that it is answered 429 (gRPC: resource
    /// exhausted) until the minute is over, right token or not. 0: no limit.
    pub max_auth_failures_per_minute: u32,
    /// Host names the gateway answers to besides the loopback names and
    /// `public_url`'s host (a `Host` check against DNS rebinding; on a
    /// listener beyond loopback, set it to check `Host` there too).
    pub allowed_hosts: Vec<String>,
    /// Web origins (`https://chat.example.com`) whose pages may call the
    /// gateway from a browser, besides its own, `public_url`'s and pages on
    /// loopback names. Requests without an `Origin` (scripts, SDKs) are not
    /// affected.
    pub allowed_origins: Vec<String>,
    /// Serve the OpenAI-compatible API (`/v1/…`).
    pub openai_api: bool,
    /// Serve the WebChat page at `/chat` (it uses the OpenAI-compatible
    /// API).
    pub webchat: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8777".into(),
            grpc_addr: "127.0.0.1:8778".into(),
            public_url: None,
            token: Secret::default(),
            max_body_bytes: 1024 * 1024,
            push_allow_private: false,
            max_auth_failures_per_minute: 10,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            openai_api: true,
            webchat: true,
        }
    }
}

/// The toolhost section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolhostConfig {
    /// Deadline for one tool call, in milliseconds (a server may set its own).
    pub call_timeout_ms: u64,
    /// Where every tool call is recorded, one JSON line each (default: the
    /// data dir's `audit/tool-calls.jsonl`).
    pub audit_log: Option<PathBuf>,
    /// Where approved tool definitions are kept (default: the data dir's
    /// `tool-approvals.json`).
    pub approvals: Option<PathBuf>,
}

impl Default for ToolhostConfig {
    fn default() -> Self {
        Self {
            call_timeout_ms: 30_000,
            audit_log: None,
            approvals: None,
        }
    }
}

/// The built-in tools (`[tools]`), run in the toolhost's own process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    /// Exact arithmetic (`calculator.evaluate`).
    pub calculator: bool,
    /// Files under one root (`files.*`).
    pub files: FilesToolConfig,
    /// Fetching pages and searching (`web.*`).
    pub web: WebToolConfig,
    /// Running Python in a wasmtime sandbox (`code.*`).
    pub code: CodeToolConfig,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            calculator: true,
            files: FilesToolConfig::default(),
            web: WebToolConfig::default(),
            code: CodeToolConfig::default(),
        }
    }
}

/// `[tools.code]`: the Python sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodeToolConfig {
    /// Offer the code tool.
    pub enabled: bool,
    /// Where the interpreter (CPython for WASI, installed by scripts/setup)
    /// and its compiled cache are (default: the data dir's `python/`).
    pub runtime_dir: Option<PathBuf>,
    /// Sandboxes running at once; more calls wait.
    pub slots: u32,
    /// How long a call waits for a slot, in milliseconds.
    pub queue_timeout_ms: u64,
    /// Wall-clock deadline of a run, in milliseconds.
    pub deadline_ms: u64,
    /// CPU budget of a run, in fuel units (about one per wasm instruction).
    pub fuel: u64,
    /// Memory cap of a run, in MiB (at least 40: the interpreter's own).
    pub memory_mb: usize,
    /// Bytes the scratch directory may hold, in MiB.
    pub scratch_mb: u64,
    /// Bytes kept of stdout and of stderr, in KiB.
    pub output_kb: usize,
    /// Idle minutes after which a session's files are deleted.
    pub session_idle_minutes: u64,
}

impl Default for CodeToolConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            runtime_dir: None,
            slots: 4,
            queue_timeout_ms: 30_000,
            deadline_ms: 10_000,
            fuel: 40_000_000_000,
            memory_mb: 512,
            scratch_mb: 64,
            output_kb: 64,
            session_idle_minutes: 15,
        }
    }
}

/// `[tools.files]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesToolConfig {
    /// Offer the files tool.
    pub enabled: bool,
    /// The only directory it can touch (default: the data dir's `workspace/`).
    pub root: Option<PathBuf>,
    /// Refuse writes and appends.
    pub read_only: bool,
    /// Largest read returned, in bytes.
    pub max_read_bytes: usize,
    /// Largest write accepted, in bytes.
    pub max_write_bytes: usize,
}

impl Default for FilesToolConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            root: None,
            read_only: false,
            max_read_bytes: 1024 * 1024,
            max_write_bytes: 1024 * 1024,
        }
    }
}

/// `[tools.web]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebToolConfig {
    /// Offer the web tool.
    pub enabled: bool,
    /// Allow loopback and private-network addresses (refused by default).
    pub allow_private: bool,
    /// Deadline for one request, in milliseconds.
    pub timeout_ms: u64,
    /// Largest body read, in bytes.
    pub max_bytes: usize,
    /// Most redirects followed.
    pub max_redirects: usize,
    /// `searxng`, `brave` or `tavily`; unset: no `web.search`.
    pub search_provider: Option<SearchProviderKind>,
    /// The provider's base URL (SearXNG: your instance; the others have defaults).
    pub search_url: Option<String>,
    /// The provider's API key (Brave, Tavily).
    pub search_api_key: Secret,
}

impl Default for WebToolConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_private: false,
            timeout_ms: 15_000,
            max_bytes: 2 * 1024 * 1024,
            max_redirects: 5,
            search_provider: None,
            search_url: None,
            search_api_key: Secret::default(),
        }
    }
}

/// `[mcp]`: third-party MCP servers plugged in.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpConfig {
    /// The servers (`[[mcp.servers]]`).
    pub servers: Vec<McpServer>,
    /// Expose the allowed tools themselves (not only `ask`) through
    /// `hearth mcp` and the gateway's MCP endpoint.
    pub expose_tools: bool,
}

/// An MCP server the toolhost connects to: a command it starts and speaks
/// to over stdio, or a URL it reaches over streamable HTTP.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// Its name: its tools appear on the bus as `<name>.<tool>`.
    pub name: String,
    /// The program to run (stdio).
    #[serde(default)]
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables for it.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Its streamable-HTTP URL (instead of a command).
    #[serde(default)]
    pub url: Option<String>,
    /// Extra HTTP headers sent to it.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// A bearer token sent to it (never logged).
    #[serde(default)]
    pub token: Secret,
    /// Only these tools (by their own name; empty: all).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Never these tools.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Deadline for one call to it, in milliseconds (default: the toolhost's).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The memory section: where vectors live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// A Qdrant server's gRPC address (`http://host:6334`): memory is shared
    /// by every process and machine of the mesh. Unset: qdrant-edge in this
    /// process. (`HEARTH_QDRANT_URL`.)
    pub qdrant_url: Option<String>,
    /// The Qdrant server's API key (`HEARTH_QDRANT_API_KEY`; never logged).
    pub qdrant_api_key: Secret,
    /// Where qdrant-edge keeps its collections (default: the data dir's
    /// `memory/`).
    pub dir: Option<PathBuf>,
    /// Recall relevant memories into an agent's context and store its task
    /// outcomes.
    pub agent_memory: bool,
    /// Memories recalled into a task at most.
    pub recall: u32,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            qdrant_url: None,
            qdrant_api_key: Secret::default(),
            dir: None,
            agent_memory: true,
            recall: 3,
        }
    }
}

/// The agents section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// A directory of agent specs (`*.toml`); the built-in specs are used for
    /// any name not found there.
    pub dir: Option<PathBuf>,
    /// The spec the orchestrator runs.
    pub orchestrator: String,
    /// The spec operatives run unless a task names another.
    pub operative: String,
    /// External A2A agents the orchestrator may delegate to.
    pub remote: Vec<RemoteAgent>,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            dir: None,
            orchestrator: "orchestrator".into(),
            operative: "operative".into(),
            remote: Vec::new(),
        }
    }
}

/// An external A2A agent (`[[agents.remote]]`): the orchestrator sees its
/// skills as the tool `remote.<name>` and may delegate subtasks to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteAgent {
    /// A short name (letters, digits, `_`, `-`): the tool is `remote.<name>`.
    pub name: String,
    /// Its base URL (the card is at `<url>/.well-known/agent-card.json`) or
    /// the card's own URL.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` (never logged).
    #[serde(default)]
    pub token: Secret,
    /// Sent as `X-API-Key` (never logged).
    #[serde(default)]
    pub api_key: Secret,
    /// Deadline for one delegated subtask, in milliseconds.
    #[serde(default = "default_remote_timeout_ms")]
    pub timeout_ms: u64,
    /// When it fails or times out, hand the subtask to a local operative
    /// instead (and say so).
    #[serde(default = "default_true")]
    pub fallback: bool,
    /// It runs on this machine or network: a sensitive task may hand it
    /// work (off by default: a sensitive task's work is not sent to it).
    #[serde(default)]
    pub local: bool,
}

fn default_remote_timeout_ms() -> u64 {
    120_000
}

fn default_true() -> bool {
    true
}

impl Config {
    /// Loads from the config file (if any) and the environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(Self::file()?.as_deref())
    }

    /// Loads from `file` (if given) and the environment.
    pub fn load_from(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Self = figment(file)
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        // Subject names are checked here, not when NATS is first reached.
        config
            .bus
            .check()
            .and_then(|()| config.check_routing())
            .map_err(|e| ConfigError::Invalid(Box::new(figment::Error::from(e))))?;
        Ok(config)
    }

    /// Checks `[[engine.remote]]`, `[routing]` and `[budget]`: names that
    /// refer to something, budgets that are numbers of dollars, patterns
    /// that compile.
    pub fn check_routing(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for r in &self.engine.remote {
            let ok = !r.name.is_empty()
                && r.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok || r.name == "local" {
                return Err(format!(
                    "[[engine.remote]] name {:?}: use letters, digits, `_` and `-` (and not `local`, which is [engine])",
                    r.name
                ));
            }
            if !names.insert(r.name.as_str()) {
                return Err(format!("[[engine.remote]] {:?} is named twice", r.name));
            }
            for (key, v) in [
                ("input_usd_per_mtok", r.input_usd_per_mtok),
                ("output_usd_per_mtok", r.output_usd_per_mtok),
            ] {
                if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                    return Err(format!(
                        "[[engine.remote]] {:?}: {key} must be a number of dollars, 0 or more",
                        r.name
                    ));
                }
            }
            if r.input_usd_per_mtok.is_some() != r.output_usd_per_mtok.is_some() {
                return Err(format!(
                    "[[engine.remote]] {:?}: set both input_usd_per_mtok and output_usd_per_mtok, or neither",
                    r.name
                ));
            }
        }
        let known = || {
            let v: Vec<&str> = self.engine.remote.iter().map(|r| r.name.as_str()).collect();
            if v.is_empty() {
                "there is no [[engine.remote]]".to_string()
            } else {
                format!("the remotes are: {}", v.join(", "))
            }
        };
        if let Some(name) = &self.routing.remote
            && !names.contains(name.as_str())
        {
            return Err(format!(
                "[routing] remote = {name:?} names no [[engine.remote]] ({})",
                known()
            ));
        }
        if self.routing.policy != RoutePolicy::LocalOnly
            && self.routing.remote_name(&self.engine.remote).is_none()
        {
            return Err(format!(
                "[routing] policy = {:?} needs a remote: set [routing] remote to one of the [[engine.remote]] ({})",
                self.routing.policy.as_str(),
                known()
            ));
        }
        for (key, v) in [
            ("usd_per_day", self.budget.usd_per_day),
            ("usd_per_month", self.budget.usd_per_month),
            ("usd_per_task", self.budget.usd_per_task),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return Err(format!(
                    "[budget] {key} must be a number of dollars, 0 or more (it is {})",
                    v.unwrap_or_default()
                ));
            }
        }
        for p in &self.routing.sensitive_patterns {
            regex::Regex::new(p).map_err(|e| {
                format!("[routing] sensitive_patterns: {p:?} is not a valid regex: {e}")
            })?;
        }
        Ok(())
    }

    /// The file [`Config::load`] reads, if any.
    pub fn file() -> Result<Option<PathBuf>, ConfigError> {
        match std::env::var_os("HEARTH_CONFIG") {
            Some(p) => {
                let p = PathBuf::from(p);
                if p.exists() {
                    Ok(Some(p))
                } else {
                    Err(ConfigError::Missing(p))
                }
            }
            None => Ok(default_file()),
        }
    }

    /// The effective configuration loaded from `file` and the environment,
    /// every value with where it came from, secrets masked: what
    /// `hearth config show` prints.
    pub fn explain(file: Option<&Path>) -> Result<Vec<Explained>, ConfigError> {
        let fig = figment(file);
        let config: Config = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        let mut value = masked(|| serde_json::to_value(&config))
            .map_err(|e| ConfigError::Invalid(Box::new(figment::Error::from(e.to_string()))))?;
        if let Some(top) = value.as_object_mut() {
            // Shown resolved: where the data really goes.
            top.insert(
                "data_dir".into(),
                config.data_dir().display().to_string().into(),
            );
        }
        let mut out = Vec::new();
        flatten("", &value, &mut out);
        Ok(out
            .into_iter()
            .map(|(key, value)| {
                let origin = origin_of(&fig, &key);
                Explained { key, value, origin }
            })
            .collect())
    }

    /// Where model files are found and pulled to: `engine.models_dir` when
    /// configured, else `models/` in [`Config::data_dir`].
    pub fn models_dir(&self) -> PathBuf {
        self.engine
            .models_dir
            .clone()
            .unwrap_or_else(|| self.data_dir().join("models"))
    }

    /// Hearth's data directory: `data_dir` when configured (the file or
    /// `HEARTH_DATA_DIR`), else `$XDG_DATA_HOME/hearth`, else
    /// `~/.local/share/hearth`.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.data_dir {
            return d.clone();
        }
        if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
            return PathBuf::from(d).join("hearth");
        }
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".local/share/hearth"))
            .unwrap_or_else(|| PathBuf::from(".hearth"))
    }

    /// The per-request bus deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// How long a caller waits on the engine over the bus: the engine's own
    /// deadline plus a margin, so the engine's more precise error arrives first.
    pub fn engine_timeout(&self) -> Duration {
        Duration::from_millis(self.engine.timeout_ms) + Duration::from_secs(2)
    }

    /// The whole-task deadline.
    pub fn task_timeout(&self) -> Duration {
        Duration::from_millis(self.task_timeout_ms)
    }

    /// How long a stopping service waits for its work in flight.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// Threads for the async runtime: `worker_threads` when set (and not
    /// 0), else half the cores, at least one.
    pub fn async_workers(&self) -> usize {
        self.worker_threads.filter(|n| *n > 0).unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
        })
    }

    /// The subjects of this mesh.
    pub fn subjects(&self) -> crate::Subjects {
        crate::Subjects::new(self.subject_prefix.clone())
            .with_jetstream_domain(self.bus.jetstream_domain.clone())
    }
}

/// Defaults, then the file, then the environment: later ones win.
fn figment(file: Option<&Path>) -> Figment {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(f) = file {
        fig = fig.merge(Toml::file_exact(f));
    }
    fig.merge(env_provider())
}

/// One effective configuration value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explained {
    /// Its dotted key (`engine.model`).
    pub key: String,
    /// Its value (a set secret shows as [`MASK`]).
    pub value: serde_json::Value,
    /// Where it came from.
    pub origin: Origin,
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "from", content = "name")]
pub enum Origin {
    /// Hearth's built-in default.
    Default,
    /// The configuration file (its path).
    File(PathBuf),
    /// An environment variable (its name).
    Environment(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Environment(v) => write!(f, "env {v}"),
        }
    }
}

/// Leaves of `v` with their dotted keys; arrays and empty tables are leaves.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ => out.push((prefix.to_string(), v.clone())),
    }
}

/// Which provider gave `key` its value: the figment's own record of it.
fn origin_of(fig: &Figment, key: &str) -> Origin {
    let Some(meta) = fig.find_metadata(key) else {
        return Origin::Default;
    };
    if let Some(figment::Source::File(path)) = &meta.source {
        return Origin::File(path.clone());
    }
    if meta.name.contains("environment") {
        return Origin::Environment(env_name(key));
    }
    Origin::Default
}

/// The `HEARTH_*` variable that sets `key` (the inverse of [`env_provider`]'s map).
fn env_name(key: &str) -> String {
    match key {
        "nats" => "HEARTH_NATS_URL".into(),
        "memory.qdrant_url" => "HEARTH_QDRANT_URL".into(),
        "memory.qdrant_api_key" => "HEARTH_QDRANT_API_KEY".into(),
        _ => format!("HEARTH_{}", key.replace('.', "_").to_ascii_uppercase()),
    }
}

fn default_file() -> Option<PathBuf> {
    let here = PathBuf::from("hearth.toml");
    if here.exists() {
        return Some(here);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let p = base.join("hearth").join("hearth.toml");
    p.exists().then_some(p)
}

/// `HEARTH_<SECTION>_<KEY>` → `section.key` for the known sections;
/// anything else is a top-level key (`HEARTH_NATS_URL` → `nats`).
/// Variables that name no known key (`HEARTH_TEST_*`, say) are ignored.
fn env_provider() -> Env {
    const SECTIONS: [&str; 12] = [
        "engine", "gateway", "toolhost", "agents", "tools", "mcp", "memory", "learning", "work",
        "bus", "routing", "budget",
    ];
    // Tables inside sections: `HEARTH_TOOLS_FILES_ROOT` → `tools.files.root`.
    const SUBSECTIONS: [(&str, &str); 3] = [
        ("tools_files_", "tools.files."),
        ("tools_web_", "tools.web."),
        ("tools_code_", "tools.code."),
    ];
    const TOP: [&str; 7] = [
        "nats_url",
        "data_dir",
        "subject_prefix",
        "request_timeout_ms",
        "task_timeout_ms",
        "drain_timeout_ms",
        "worker_threads",
    ];
    Env::prefixed("HEARTH_")
        .filter(|key| {
            let k = key.as_str().to_ascii_lowercase();
            TOP.contains(&k.as_str())
                || k == "qdrant_url"
                || k == "qdrant_api_key"
                || SECTIONS.iter().any(|s| k.starts_with(&format!("{s}_")))
        })
        .map(|key| {
            let k = key.as_str().to_ascii_lowercase();
            for (prefix, path) in SUBSECTIONS {
                if let Some(rest) = k.strip_prefix(prefix) {
                    return format!("{path}{rest}").into();
                }
            }
            for s in SECTIONS {
                if let Some(rest) = k.strip_prefix(&format!("{s}_")) {
                    return format!("{s}.{rest}").into();
                }
            }
            match k.as_str() {
                "nats_url" => return "nats".into(),
                "qdrant_url" | "qdrant_api_key" => return format!("memory.{k}").into(),
                _ => {}
            }
            k.into()
        })
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return its own large error type
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = EngineConfig {
            api_key: Secret::new("sk-very-secret"),
            ..Default::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn a_bad_inbox_prefix_or_jetstream_domain_is_refused_at_load() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HEARTH_BUS_INBOX_PREFIX", "_INBOX.*");
            let e = Config::load_from(None).expect_err("a wildcard").to_string();
            assert!(e.contains("inbox_prefix `_INBOX.*`"), "{e}");
            jail.set_env("HEARTH_BUS_INBOX_PREFIX", "_INBOX.ops");
            jail.set_env("HEARTH_BUS_JETSTREAM_DOMAIN", "a.b");
            let e = Config::load_from(None).expect_err("two tokens").to_string();
            assert!(e.contains("jetstream_domain `a.b`"), "{e}");
            jail.set_env("HEARTH_BUS_JETSTREAM_DOMAIN", "hearth");
            let c = Config::load_from(None).map_err(|e| e.to_string())?;
            assert_eq!(c.bus.inbox().as_deref(), Ok("_INBOX.ops"));
            // Unset (or empty): the user's own inbox, or the plain one.
            let mut bus = BusConfig {
                user: Some("engine".into()),
                ..Default::default()
            };
            assert_eq!(bus.inbox().as_deref(), Ok("_INBOX.engine"));
            bus.user = Some("a.b".into());
            assert_eq!(bus.inbox().as_deref(), Ok("_INBOX"));
            Ok(())
        });
    }

    #[test]
    fn an_unknown_backend_is_refused_with_the_valid_ones_listed() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("hearth.toml", "[engine]\nbackend = \"lama\"\n")?;
            let e = Config::load_from(Some(Path::new("hearth.toml")))
                .expect_err("`lama` is no backend")
                .to_string();
            for name in ["lama", "llama", "openai", "ollama", "scripted"] {
                assert!(e.contains(&format!("`{name}`")), "{e}");
            }
            jail.create_file("hearth.toml", "[engine]\nbackend = \"ollama\"\n")?;
            let c = Config::load_from(Some(Path::new("hearth.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.engine.backend, BackendKind::Ollama);
            jail.set_env("HEARTH_ENGINE_BACKEND", "openai");
            let c = Config::load_from(Some(Path::new("hearth.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.engine.backend, BackendKind::Openai);
            Ok(())
        });
    }

    #[test]
    fn file_values_load_and_environment_overrides_them() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "hearth.toml",
                r#"
                nats = "nats://10.0.0.1:4222"
                [engine]
                url = "http://file/v1"
                model = "from-file"
                [gateway]
                token = "t0k"
                "#,
            )?;
            jail.set_env("HEARTH_ENGINE_MODEL", "from-env");
            jail.set_env("HEARTH_ENGINE_API_KEY", "k");
            jail.set_env("HEARTH_GATEWAY_ADDR", "127.0.0.1:9");
            let c = Config::load_from(Some(Path::new("hearth.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.nats_url.as_deref(), Some("nats://10.0.0.1:4222"));
            assert_eq!(c.engine.url.as_deref(), Some("http://file/v1"));
            assert_eq!(c.engine.model, "from-env");
            assert_eq!(c.engine.api_key.expose(), "k");
            assert_eq!(c.gateway.addr, "127.0.0.1:9");
            assert_eq!(c.gateway.token.expose(), "t0k");
            jail.set_env("HEARTH_TOOLS_FILES_ROOT", "/srv/notes");
            jail.set_env("HEARTH_TOOLS_WEB_ALLOW_PRIVATE", "true");
            let c = Config::load_from(Some(Path::new("hearth.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.tools.files.root.as_deref(), Some(Path::new("/srv/notes")));
            assert!(c.tools.web.allow_private);
            jail.set_env("HEARTH_QDRANT_URL", "http://127.0.0.1:6334");
            jail.set_env("HEARTH_QDRANT_API_KEY", "qk");
            let c = Config::load_from(Some(Path::new("hearth.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(
                c.memory.qdrant_url.as_deref(),
                Some("http://127.0.0.1:6334")
            );
            assert_eq!(c.memory.qdrant_api_key.expose(), "qk");
            jail.set_env("HEARTH_NATS_URL", "nats://127.0.0.1:1");
            let c = Config::load_from(Some(Path::new("hearth.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.nats_url.as_deref(), Some("nats://127.0.0.1:1"));
            assert_eq!(c.worker_threads, None);
            assert!(c.async_workers() >= 1);
            jail.set_env("HEARTH_WORKER_THREADS", "3");
            let c = Config::load_from(Some(Path::new("hearth.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.async_workers(), 3);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_a_clear_error() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("hearth.toml", "[engine]\nmodle = \"typo\"\n")?;
            let err = Config::load_from(Some(Path::new("hearth.toml")))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("modle"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn explain_says_where_each_value_came_from_and_masks_secrets() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "hearth.toml",
                "[engine]\nmodel = \"from-file\"\n[gateway]\ntoken = \"file-t0ken\"\n",
            )?;
            jail.set_env("HEARTH_ENGINE_API_KEY", "sk-env-secret");
            jail.set_env("HEARTH_QDRANT_URL", "http://127.0.0.1:6334");
            jail.set_env("HEARTH_DATA_DIR", "/srv/hearth-data");
            let shown =
                Config::explain(Some(Path::new("hearth.toml"))).map_err(|e| e.to_string())?;
            let find = |k: &str| {
                shown
                    .iter()
                    .find(|e| e.key == k)
                    .cloned()
                    .ok_or_else(|| format!("{k} not shown"))
            };
            let model = find("engine.model")?;
            assert_eq!(model.value, "from-file");
            assert!(matches!(&model.origin, Origin::File(p) if p.ends_with("hearth.toml")));
            let key = find("engine.api_key")?;
            assert_eq!(key.value, MASK);
            assert_eq!(
                key.origin,
                Origin::Environment("HEARTH_ENGINE_API_KEY".into())
            );
            assert_eq!(find("gateway.token")?.value, MASK);
            assert_eq!(
                find("memory.qdrant_url")?.origin,
                Origin::Environment("HEARTH_QDRANT_URL".into())
            );
            let dir = find("data_dir")?;
            assert_eq!(dir.value, "/srv/hearth-data");
            assert_eq!(dir.origin, Origin::Environment("HEARTH_DATA_DIR".into()));
            assert_eq!(find("gateway.addr")?.origin, Origin::Default);
            let all = serde_json::to_string(&shown).map_err(|e| e.to_string())?;
            assert!(
                !all.contains("sk-env-secret") && !all.contains("file-t0ken"),
                "{all}"
            );
            // Outside `explain`, a secret serializes as itself (what a
            // written configuration file needs).
            let c = Config::load_from(Some(Path::new("hearth.toml"))).map_err(|e| e.to_string())?;
            let plain = serde_json::to_string(&c).map_err(|e| e.to_string())?;
            assert!(plain.contains("sk-env-secret"));
            assert_eq!(c.data_dir(), PathBuf::from("/srv/hearth-data"));
            Ok(())
        });
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::default();
        assert!(c.nats_url.is_none());
        assert_eq!(c.gateway.addr, "127.0.0.1:8777");
        assert_eq!(c.subjects().prefix(), "hearth");
    }
}
