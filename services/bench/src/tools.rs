//! `hearth bench tools`: what an MCP tool call costs, by transport.
//!
//! The call is `echo` on a one-tool server (a benchmark double, so the
//! figure is the protocol's and the transport's, not a tool's work), made by
//! an rmcp client: in-process (an in-memory pipe), over stdio (a child
//! process), and over streamable HTTP; then calls/s with `--concurrency`
//! clients at once over HTTP, against the same tool served by the official
//! MCP Python SDK (MCPServer, formerly FastMCP) measured in the same run.
//! A real built-in call (`calculator.evaluate`) in-process is shown beside.
//!
//! Figures are medians (and p99) of `--calls` sequential calls.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, Implementation, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};

/// Options of `hearth bench tools`.
#[derive(Debug, Clone, clap::Args)]
pub struct ToolsArgs {
    /// Sequential calls per transport.
    #[arg(long, default_value_t = 2000)]
    pub calls: usize,
    /// Concurrent clients for the throughput run.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds each throughput run lasts.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// The Python with the `mcp` package, for the baseline (skipped, and
    /// said so, if it cannot run it).
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// The benchmark double: one `echo` tool.
#[derive(Clone)]
pub struct EchoServer {
    tool_router: ToolRouter<Self>,
}

/// `echo`'s input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct EchoParams {
    /// Text to send back.
    pub text: String,
}

impl Default for EchoServer {
    fn default() -> Self {
        Self {
            tool_router: Self::tool_router(),
        }
    }
}

#[tool_router]
impl EchoServer {
    /// Echo.
    #[tool(description = "Echo the text back (a benchmark double).")]
    async fn echo(&self, Parameters(p): Parameters<EchoParams>) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::text(p.text)])
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for EchoServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("bench-echo", env!("CARGO_PKG_VERSION")))
    }
}

/// Latency of one transport.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// What was measured.
    pub transport: String,
    /// Median round trip, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Target for the median, µs (where the issue sets one).
    pub target_us: Option<f64>,
}

/// Throughput with many clients.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Whose server.
    pub server: String,
    /// Calls per second, all clients together.
    pub calls_per_s: f64,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct ToolsReport {
    /// Per transport.
    pub latency: Vec<Latency>,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Hearth's (rmcp) and the Python SDK's, over HTTP.
    pub throughput: Vec<Throughput>,
    /// rmcp ÷ Python, when both ran.
    pub ratio: Option<f64>,
    /// Why the baseline did not run, if it did not.
    pub baseline_note: Option<String>,
}

type Client = RunningService<RoleClient, ()>;

fn echo_params() -> CallToolRequestParams {
    let mut args = serde_json::Map::new();
    args.insert("text".into(), "ping".into());
    CallToolRequestParams::new("echo").with_arguments(args)
}

async fn latency(
    client: &Client,
    params: &CallToolRequestParams,
    calls: usize,
) -> Result<(f64, f64)> {
    for _ in 0..calls.min(200) {
        client.call_tool(params.clone()).await?;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let r = client.call_tool(params.clone()).await?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        if r.is_error == Some(true) {
            bail!("the tool reported an error");
        }
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Ok((at(0.5), at(0.99)))
}

async fn throughput(url: &str, clients: usize, seconds: f64) -> Result<f64> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(
            ().serve(StreamableHttpClientTransport::from_uri(url.to_string()))
                .await
                .with_context(|| format!("connecting to {url}"))?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let t0 = Instant::now();
    let runs = conns.iter().map(|c| async move {
        let mut n = 0u64;
        let p = echo_params();
        while Instant::now() < deadline {
            if c.call_tool(p.clone()).await.is_ok() {
                n += 1;
            }
        }
        n
    });
    let total: u64 = futures::future::join_all(runs).await.into_iter().sum();
    let rate = total as f64 / t0.elapsed().as_secs_f64();
    for c in conns {
        let _ = c.cancel().await;
    }
    Ok(rate)
}

async fn wait_for_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("nothing listened on port {port} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs the benchmark and prints its report.
pub async fn tools(args: ToolsArgs) -> Result<()> {
    let exe = hearth_launch::current_exe()?;
    let params = echo_params();
    let mut lat = Vec::new();

    // In-process: typed messages over channels, as the toolhost runs its
    // built-ins (nothing serialized).
    let (server_end, client_end) = hearth_toolhost::in_process_pair();
    tokio::spawn(async move {
        if let Ok(s) = EchoServer::default().serve(server_end).await {
            let _ = s.waiting().await;
        }
    });
    let c = ().serve(client_end).await?;
    let (p50, p99) = latency(&c, &params, args.calls).await?;
    lat.push(Latency {
        transport: "in-process".into(),
        p50_us: p50,
        p99_us: p99,
        target_us: Some(50.0),
    });
    c.cancel().await?;
    eprintln!("in-process done");

    // A real built-in, in-process: the calculator.
    let (server_end, client_end) = hearth_toolhost::in_process_pair();
    tokio::spawn(async move {
        if let Ok(s) = hearth_calculator::Calculator::new().serve(server_end).await {
            let _ = s.waiting().await;
        }
    });
    let c = ().serve(client_end).await?;
    let mut calc = serde_json::Map::new();
    calc.insert("expression".into(), "17*23+4".into());
    let (p50, p99) = latency(
        &c,
        &CallToolRequestParams::new("evaluate").with_arguments(calc),
        args.calls,
    )
    .await?;
    lat.push(Latency {
        transport: "in-process, calculator.evaluate".into(),
        p50_us: p50,
        p99_us: p99,
        target_us: None,
    });
    c.cancel().await?;

    // stdio.
    let cmd = tokio::process::Command::new(&exe).configure(|c| {
        c.args(["bench-echo-server"]);
    });
    let c = ().serve(TokioChildProcess::new(cmd)?).await?;
    let (p50, p99) = latency(&c, &params, args.calls).await?;
    lat.push(Latency {
        transport: "stdio".into(),
        p50_us: p50,
        p99_us: p99,
        target_us: Some(200.0),
    });
    c.cancel().await?;
    eprintln!("stdio done");

    // Streamable HTTP.
    let port = free_port()?;
    let mut child = tokio::process::Command::new(&exe)
        .args(["bench-echo-server", "--http", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    wait_for_port(port).await?;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let c = ().serve(StreamableHttpClientTransport::from_uri(url.clone())).await?;
    let (p50, p99) = latency(&c, &params, args.calls).await?;
    lat.push(Latency {
        transport: "streamable HTTP".into(),
        p50_us: p50,
        p99_us: p99,
        target_us: Some(1000.0),
    });
    c.cancel().await?;
    let ours = throughput(&url, args.concurrency, args.seconds).await?;
    let _ = child.kill().await;
    eprintln!("HTTP done");

    let mut through = vec![Throughput {
        server: "Hearth (rmcp)".into(),
        calls_per_s: ours,
    }];
    // The Python SDK's server, same tool, same client, same machine.
    let script = std::env::temp_dir().join(format!("hearth-bench-echo-{}.py", std::process::id()));
    std::fs::write(&script, include_str!("../fixtures/mcp_echo_server.py"))?;
    let port = free_port()?;
    let py = tokio::process::Command::new(&args.python)
        .arg(&script)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let (mut ratio, mut note) = (None, None);
    match py {
        Ok(mut child) => match wait_for_port(port).await {
            Ok(()) => {
                let url = format!("http://127.0.0.1:{port}/mcp");
                let c = ().serve(StreamableHttpClientTransport::from_uri(url.clone())).await?;
                let (p50, p99) = latency(&c, &params, args.calls.min(500)).await?;
                lat.push(Latency {
                    transport: "streamable HTTP, Python SDK server".into(),
                    p50_us: p50,
                    p99_us: p99,
                    target_us: None,
                });
                c.cancel().await?;
                let theirs = throughput(&url, args.concurrency, args.seconds).await?;
                through.push(Throughput {
                    server: "Python MCP SDK (MCPServer, formerly FastMCP)".into(),
                    calls_per_s: theirs,
                });
                ratio = Some(ours / theirs.max(1e-9));
                let _ = child.kill().await;
            }
            Err(e) => {
                note = Some(format!(
                    "the Python baseline did not start ({e}); install it with pip install mcp==2.3.0"
                ));
                let _ = child.kill().await;
            }
        },
        Err(e) => note = Some(format!("{} could not run: {e}", args.python)),
    }
    let _ = std::fs::remove_file(&script);

    let report = ToolsReport {
        latency: lat,
        concurrency: args.concurrency,
        throughput: through,
        ratio,
        baseline_note: note,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.set_header(["tool call round trip", "p50", "p99", "target (p50)"]);
    for l in &report.latency {
        t.add_row([
            l.transport.clone(),
            format!("{:.1} µs", l.p50_us),
            format!("{:.1} µs", l.p99_us),
            match l.target_us {
                Some(tgt) => format!(
                    "< {tgt:.0} µs: {}",
                    if l.p50_us < tgt { "met" } else { "NOT met" }
                ),
                None => "-".into(),
            },
        ]);
    }
    println!("{t}");
    let mut t = comfy_table::Table::new();
    t.set_header([
        format!("{} concurrent clients over HTTP", report.concurrency),
        "calls/s".to_string(),
    ]);
    for x in &report.throughput {
        t.add_row([x.server.clone(), format!("{:.0}", x.calls_per_s)]);
    }
    println!("{t}");
    match (report.ratio, &report.baseline_note) {
        (Some(r), _) => println!("Hearth ÷ Python SDK: {r:.1}×"),
        (None, Some(n)) => println!("baseline not measured: {n}"),
        _ => {}
    }
    Ok(())
}

/// `hearth bench-echo-server`: the benchmark double over stdio or HTTP.
pub async fn echo_server(http: Option<std::net::SocketAddr>) -> Result<()> {
    match http {
        None => {
            let s = EchoServer::default()
                .serve(rmcp::transport::stdio())
                .await?;
            s.waiting().await?;
        }
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            axum::serve(
                listener,
                hearth_gateway::mcp::http_router(EchoServer::default(), false),
            )
            .await?;
        }
    }
    Ok(())
}
