//! The compose stack, run for real: `compose.yaml` at the repository root,
//! started with Podman and podman-compose as `../shared/CONTAINERS.md` says
//! (this machine has no Docker engine and reaches no registry), the real
//! model in the engine container, NATS and Qdrant as containers.
//!
//! What differs from a user's machine, and only that: the Hearth image is
//! built by the same `Dockerfile` from the binary built here
//! (`--build-arg HEARTH_BUILD=prebuilt`, not the Rust build stage); NATS and
//! Qdrant are local stand-ins tagged with the names compose.yaml uses
//! (`scripts/compose-standins`); and with no systemd here, Podman runs no
//! health checks by itself, so the test runs `podman healthcheck run` on
//! every container every two seconds, as systemd's timers would.
//!
//! One test, in order: every service healthy; an A2A `SendMessage` through
//! the published gateway port answered through the mesh with a tool call
//! on the toolhost; a request without the token refused; a CLI request from
//! inside the stack; `--scale operative=3` spreading subtasks over three;
//! an operative container killed mid-task losing nothing; `down` then `up`
//! keeping task history and memory. The stack is torn down (`down -v`)
//! whatever happens. Figures go to stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `cmd`, returning (success, stdout, stderr).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A compose project of its own (its containers, network and volumes),
/// torn down with its volumes when dropped.
struct Stack {
    project: String,
    /// The compose profiles enabled beside the default services.
    profiles: Vec<&'static str>,
    env: Vec<(String, String)>,
    gateway: String,
    token: String,
    pump: Arc<AtomicBool>,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman-compose");
        c.current_dir(repo())
            .args(["-p", &self.project, "-f", "compose.yaml"]);
        for p in &self.profiles {
            c.args(["--profile", p]);
        }
        c.args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs a compose command; panics with its output if it fails.
    fn must(&self, args: &[&str]) -> String {
        let (ok, out, err) = run(&mut self.compose(args));
        assert!(ok, "podman-compose {args:?} failed:\n{out}\n{err}");
        out
    }

    /// The project's containers: name → (service, status).
    fn containers(&self) -> BTreeMap<String, (String, String)> {
        let (ok, json, err) = run(Command::new("podman").args([
            "ps",
            "-a",
            "--filter",
            &format!("label=io.podman.compose.project={}", self.project),
            "--format",
            "json",
        ]));
        assert!(ok, "{err}");
        let list: Vec<Value> = serde_json::from_str(&json).unwrap_or_default();
        list.iter()
            .filter_map(|c| {
                let name = c["Names"][0].as_str()?.to_string();
                let service = c["Labels"]["com.docker.compose.service"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let status = c["Status"].as_str().unwrap_or_default().to_string();
                Some((name, (service, status)))
            })
            .collect()
    }

    /// The containers of `service`, by name.
    fn of(&self, service: &str) -> Vec<String> {
        self.containers()
            .into_iter()
            .filter(|(_, (s, _))| s == service)
            .map(|(n, _)| n)
            .collect()
    }

    /// Waits until every container is up and healthy (panics after `within`,
    /// with each one's status and the logs of those that are not).
    fn wait_healthy(&self, want: usize, within: Duration) -> Duration {
        let t = Instant::now();
        loop {
            let all = self.containers();
            let healthy = all
                .values()
                .filter(|(_, st)| st.contains("(healthy)"))
                .count();
            if all.len() >= want && healthy == all.len() {
                return t.elapsed();
            }
            if t.elapsed() > within {
                let mut why = String::new();
                for (name, (_, st)) in &all {
                    why.push_str(&format!("{name}: {st}\n"));
                    if !st.contains("(healthy)") {
                        let (_, out, err) =
                            run(Command::new("podman").args(["logs", "--tail", "30", name]));
                        why.push_str(&format!("{out}{err}\n"));
                    }
                }
                panic!("not all {want} containers healthy within {within:?}:\n{why}");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// `hearth <args>` inside the container `name`.
    fn exec(&self, name: &str, args: &[&str]) -> (bool, String, String) {
        run(Command::new("podman")
            .args(["exec", name, "hearth"])
            .args(args))
    }

    /// Sends `text` as an A2A `SendMessage` through the published gateway
    /// port, with `token` (none: no Authorization header).
    async fn send(&self, text: &str, token: Option<&str>) -> (u16, Value) {
        send(&self.gateway, text, token).await
    }

    /// The kept tasks (`hearth tasks list --json` inside `container`).
    fn tasks(&self, container: &str) -> Vec<Value> {
        let (ok, out, err) = self.exec(container, &["tasks", "list", "--json", "--limit", "500"]);
        assert!(ok, "hearth tasks list: {out} {err}");
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v.as_array()
            .cloned()
            .or_else(|| v["tasks"].as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.pump.store(false, Ordering::SeqCst);
        let (ok, out, err) = run(&mut self.compose(&["down", "-v", "-t", "2"]));
        if !ok || std::thread::panicking() {
            eprintln!("compose down:\n{out}\n{err}");
        }
        // Whatever `down` left (a container restarting as it ran, say) is
        // removed by force: nothing of the test outlives it.
        let label = format!("label=io.podman.compose.project={}", self.project);
        let (_, ids, _) = run(Command::new("podman").args(["ps", "-aq", "--filter", &label]));
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = run(Command::new("podman")
                .args(["rm", "-f", "-t", "0"])
                .args(&ids));
        }
        let _ =
            run(Command::new("podman").args(["pod", "rm", "-f", &format!("pod_{}", self.project)]));
        let (_, vols, _) =
            run(Command::new("podman").args(["volume", "ls", "-q", "--filter", &label]));
        let vols: Vec<&str> = vols.split_whitespace().collect();
        if !vols.is_empty() {
            let _ = run(Command::new("podman")
                .args(["volume", "rm", "-f"])
                .args(&vols));
        }
        let _ = run(Command::new("podman").args([
            "network",
            "rm",
            "-f",
            &format!("{}_default", self.project),
        ]));
    }
}

/// Runs every container's health check every two seconds (what systemd's
/// timers do for Podman where systemd runs; it does not run here).
fn pump_health_checks(project: String, on: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while on.load(Ordering::SeqCst) {
            let (_, names, _) = run(Command::new("podman").args([
                "ps",
                "--filter",
                &format!("label=io.podman.compose.project={project}"),
                "--format",
                "{{.Names}}",
            ]));
            for name in names.lines().filter(|n| !n.is_empty()) {
                let _ = Command::new("podman")
                    .args(["healthcheck", "run", name])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    });
}

/// Sends `text` as an A2A `SendMessage` to the gateway at `url`, with
/// `token` (none: no Authorization header).
async fn send(url: &str, text: &str, token: Option<&str>) -> (u16, Value) {
    hearth_e2e::a2a_rpc(
        url,
        hearth_e2e::a2a_send_body(text).to_string(),
        token,
        Duration::from_secs(300),
    )
    .await
}

/// The answer text of an A2A `SendMessage` result.
fn answer(v: &Value) -> String {
    let task = &v["result"]["task"];
    task["artifacts"][0]["parts"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// One stack at a time: each takes most of this machine.
static ONE_STACK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Makes sure Podman, the stand-ins and `hearth:local` (from the binary
/// built here) are there.
fn build_image() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let root = repo();
        // Podman, the stand-in images, and the image's files from this build.
        let (ok, out, err) = run(&mut Command::new(root.join("scripts/compose-standins")));
        assert!(ok, "scripts/compose-standins: {out} {err}");
        let (ok, out, err) = run(Command::new(root.join("scripts/compose-prebuilt")).env(
            "CARGO_TARGET_DIR",
            hearth_e2e::hearth_bin().parent().unwrap().parent().unwrap(),
        ));
        assert!(ok, "scripts/compose-prebuilt: {out} {err}");
        let t = Instant::now();
        let (ok, out, err) = run(Command::new("podman").current_dir(&root).args([
            "build",
            "--build-arg",
            "HEARTH_BUILD=prebuilt",
            "-t",
            "hearth:local",
            ".",
        ]));
        assert!(ok, "podman build: {out} {err}");
        // The image this build replaced is left untagged; without this every run keeps one.
        let _ = run(Command::new("podman").args(["image", "prune", "-f"]));
        eprintln!(
            "the Hearth image built (from the binary built here) in {:?}",
            t.elapsed()
        );
        let (_, layers, _) = run(Command::new("podman").args([
            "history",
            "--format",
            "{{.Size}}\t{{.CreatedBy}}",
            "hearth:local",
        ]));
        eprintln!("the image's layers:\n{layers}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_runs_answers_scales_survives_a_killed_operative_and_keeps_its_volumes() {
    let _one = ONE_STACK.lock().await;
    build_image();

    let project = format!("hearthtest{}", std::process::id());
    let port = hearth_e2e::free_port();
    let gateway_token = token();
    let stack = Stack {
        project: project.clone(),
        profiles: vec![],
        env: vec![
            ("HEARTH_NATS_TOKEN".into(), token()),
            ("QDRANT_API_KEY".into(), token()),
            ("HEARTH_GATEWAY_TOKEN".into(), gateway_token.clone()),
            ("HEARTH_GATEWAY_PORT".into(), port.to_string()),
        ],
        gateway: format!("http://127.0.0.1:{port}/"),
        token: gateway_token,
        pump: Arc::new(AtomicBool::new(true)),
    };
    pump_health_checks(project.clone(), stack.pump.clone());

    // Up: nine containers (two operatives), every one healthy.
    let t = Instant::now();
    stack.must(&["up", "-d", "--no-build"]);
    let healthy = stack.wait_healthy(10, Duration::from_secs(300));
    eprintln!("`up` to every container healthy: {healthy:?}");

    // An A2A SendMessage through the published port, answered through the
    // mesh; the arithmetic is the calculator's, on the toolhost.
    let (status, v) = stack.send("What is 23*19?", Some(&stack.token)).await;
    let first_answer = t.elapsed();
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED",
        "{v}"
    );
    assert!(answer(&v).contains("437"), "{v}");
    eprintln!("`up` to the first answer: {first_answer:?}");
    let toolhost = stack.of("toolhost").pop().unwrap();
    let (ok, audit, err) = run(Command::new("podman").args([
        "exec",
        &toolhost,
        "cat",
        "/var/lib/hearth/audit/tool-calls.jsonl",
    ]));
    assert!(ok, "{err}");
    assert!(
        audit.contains("calculator.evaluate"),
        "the toolhost's audit log has no calculator call: {audit}"
    );

    // No token: refused.
    let (status, v) = stack.send("What is 2+2?", None).await;
    assert_eq!(status, 401, "{v}");
    let (status, v) = stack.send("What is 2+2?", Some("wrong")).await;
    assert_eq!(status, 401, "{v}");

    // The CLI, inside the stack: status of every service, and a question.
    let orchestrator = stack.of("orchestrator").pop().unwrap();
    let (ok, out, err) = stack.exec(&orchestrator, &["status", "--json"]);
    assert!(ok, "hearth status: {out} {err}");
    for part in [
        "engine",
        "toolhost",
        "memory",
        "learning",
        "orchestrator",
        "operative",
        "gateway",
    ] {
        assert!(
            out.contains(&format!("\"{part}\"")),
            "{part} missing from status: {out}"
        );
    }
    let (ok, out, err) = stack.exec(&orchestrator, &["ask", "What is 12*12?", "--json"]);
    assert!(ok, "hearth ask: {out} {err}");
    let asked: Value = serde_json::from_str(&out).unwrap();
    assert!(asked["answer"].as_str().unwrap().contains("144"), "{out}");
    // The CLI's task goes through the durable queue: it is kept.
    let asked_id = asked["task_id"].as_str().unwrap().to_string();
    let kept = stack.tasks(&orchestrator);
    assert!(
        kept.iter().any(|t| t["task_id"] == asked_id.as_str()),
        "the CLI's task is not in `hearth tasks list`: {kept:?}"
    );

    // Three operatives: subtasks spread over all three.
    stack.must(&["up", "-d", "--no-build", "--scale", "operative=3"]);
    stack.wait_healthy(11, Duration::from_secs(120));
    assert_eq!(stack.of("operative").len(), 3, "{:?}", stack.containers());
    let mut asks = Vec::new();
    for i in 1..=9 {
        let s = &stack;
        asks.push(async move {
            (
                i,
                s.send(&format!("What is {i}*111?"), Some(&s.token)).await,
            )
        });
    }
    for (i, (status, v)) in futures::future::join_all(asks).await {
        assert_eq!(status, 200, "{v}");
        assert!(answer(&v).contains(&(i * 111).to_string()), "task {i}: {v}");
    }
    let workers: HashSet<String> = stack
        .tasks(&orchestrator)
        .iter()
        .filter(|t| !t["parent"].as_str().unwrap_or_default().is_empty())
        .filter_map(|t| t["worker"].as_str().map(str::to_string))
        .filter(|w| w.starts_with("operative"))
        .collect();
    assert!(workers.len() >= 3, "subtasks ran on {workers:?}");
    // Each operative's log names the tasks it took.
    for name in stack.of("operative") {
        let (_, out, err) = run(Command::new("podman").args(["logs", &name]));
        assert!(
            format!("{out}{err}").contains("took a task from the queue"),
            "{name} took no task"
        );
    }

    // An operative container killed mid-task: the task is answered once.
    let before: HashSet<String> = stack.of("operative").into_iter().collect();
    let send = {
        let (gateway, token) = (stack.gateway.clone(), stack.token.clone());
        tokio::spawn(async move { send(&gateway, "What is 31*47?", Some(&token)).await })
    };
    // The operative that has taken a task and not ended it is killed.
    let t = Instant::now();
    let victim = loop {
        let busy = before.iter().find(|name| {
            let (_, out, err) = run(Command::new("podman").args(["logs", name]));
            let log = format!("{out}{err}");
            log.matches("took a task from the queue").count()
                > log.matches("the task ended").count()
        });
        if let Some(name) = busy {
            break name.clone();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no operative took the task"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (ok, _, err) = run(Command::new("podman").args(["kill", &victim]));
    assert!(ok, "{err}");
    let (status, v) = tokio::time::timeout(Duration::from_secs(240), send)
        .await
        .expect("no answer after an operative was killed")
        .unwrap();
    assert_eq!(status, 200, "{v}");
    assert!(answer(&v).contains("1457"), "{v}");
    eprintln!(
        "an operative killed mid-task ({victim}): answered {:?} after the kill",
        t.elapsed()
    );

    // Memory, kept in Qdrant: a note stored now is found after down/up.
    let memory = stack.of("memory").pop().unwrap();
    let (ok, out, err) = run(Command::new("podman").args([
        "exec",
        &memory,
        "sh",
        "-c",
        "printf 'The lighthouse keeper is named Ada Quill.\\n' > /tmp/note.txt && hearth memory ingest /tmp/note.txt",
    ]));
    assert!(ok, "memory ingest: {out} {err}");

    // Down (volumes kept), up again: history and memory are still there.
    // podman-compose's `down` knows only the replicas the file names (two):
    // the third from `--scale` is removed first (docker compose needs not).
    for name in stack.of("operative").iter().filter(|n| n.ends_with("_3")) {
        let (ok, _, err) = run(Command::new("podman").args(["rm", "-f", "-t", "2", name]));
        assert!(ok, "{err}");
    }
    stack.must(&["down", "-t", "2"]);
    assert!(stack.containers().is_empty(), "{:?}", stack.containers());
    stack.must(&["up", "-d", "--no-build"]);
    stack.wait_healthy(10, Duration::from_secs(300));
    let orchestrator = stack.of("orchestrator").pop().unwrap();
    let kept = stack.tasks(&orchestrator);
    assert!(
        kept.iter().any(|t| t["task_id"] == asked_id.as_str()),
        "task history lost across down/up: {kept:?}"
    );
    let memory = stack.of("memory").pop().unwrap();
    let (ok, out, err) = stack.exec(
        &memory,
        &["memory", "search", "lighthouse keeper", "--json"],
    );
    assert!(ok, "memory search: {out} {err}");
    assert!(
        out.contains("Ada Quill"),
        "memory lost across down/up: {out}"
    );

    // Idle memory: each container's main process — resident (VmRSS), its
    // own (RssAnon: heap and stacks), and its proportional share (Pss:
    // pages shared with other processes, such as the binary's code that
    // every Hearth container maps from the same image layer, counted once
    // across them).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kib_of = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut stats = String::from("container\tRSS\tanon\tPSS (MiB)\n");
    let (mut hearth, mut engine) = ([0u64; 3], [0u64; 3]);
    for (name, (service, _)) in stack.containers() {
        let (_, status, _) =
            run(Command::new("podman").args(["exec", &name, "cat", "/proc/1/status"]));
        let (_, rollup, _) =
            run(Command::new("podman").args(["exec", &name, "cat", "/proc/1/smaps_rollup"]));
        let got = [
            kib_of(&status, "VmRSS:"),
            kib_of(&status, "RssAnon:"),
            kib_of(&rollup, "Pss:"),
        ];
        stats.push_str(&format!(
            "{name}\t{:.1}\t{:.1}\t{:.1}\n",
            mib(got[0]),
            mib(got[1]),
            mib(got[2])
        ));
        let sum = match service.as_str() {
            "nats" | "qdrant" => continue,
            "engine" => &mut engine,
            _ => &mut hearth,
        };
        for (s, g) in sum.iter_mut().zip(got) {
            *s += g;
        }
    }
    stats.push_str(&format!(
        "Hearth services but the engine: RSS {:.1} MiB, anon {:.1} MiB, PSS {:.1} MiB; the engine (the model mapped in): RSS {:.1} MiB, anon {:.1} MiB, PSS {:.1} MiB\n",
        mib(hearth[0]),
        mib(hearth[1]),
        mib(hearth[2]),
        mib(engine[0]),
        mib(engine[1]),
        mib(engine[2])
    ));
    eprintln!("idle memory per container:\n{stats}");
}

/// The systemd unit for `hearth up` is one systemd accepts: `systemd-analyze
/// verify` on it, with its ExecStart pointed at the binary built here (there
/// is no systemd running on this machine to start it for real).
#[test]
fn the_systemd_unit_for_hearth_up_verifies() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/hearth.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/hearth up"),
        "{unit}"
    );
    assert!(
        unit.contains("User=hearth") && unit.contains("Restart=on-failure"),
        "{unit}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hearth.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/hearth",
            &hearth_e2e::hearth_bin().display().to_string(),
        ),
    )
    .unwrap();
    let (ok, out, err) = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    assert!(ok, "systemd-analyze verify: {out} {err}");
    // A typo in a directive is a warning on stderr, not a failure: none.
    assert!(!err.contains("Unknown key"), "{err}");
}

/// Operatives on another machine join the stack (the `remote` profile):
/// its NATS edge, a leaf node of the stack's NATS, published with TLS (the
/// certificate `scripts/compose-certs` makes) and the stack's token, the
/// work queue reached through the JetStream domain `hearth`; a `hearth serve
/// operative` in a network namespace
/// standing in for the second host, reaching the stack only through the
/// published port, takes the subtasks (the stack runs no operative of its
/// own). A wrong token is refused there, and no TLS with TLS required fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operative_on_another_host_joins_the_stack_over_tls_with_its_token() {
    let _one = ONE_STACK.lock().await;
    build_image();
    let host = hearth_e2e::Netns::create(7).unwrap();
    let (ok, out, err) = run(Command::new(repo().join("scripts/compose-certs")).arg(&host.host_ip));
    assert!(ok, "scripts/compose-certs: {out} {err}");
    let project = format!("hearthremote{}", std::process::id());
    let (port, nats_port) = (hearth_e2e::free_port(), hearth_e2e::free_port());
    let (gateway_token, nats_token) = (token(), token());
    let stack = Stack {
        project: project.clone(),
        profiles: vec!["remote"],
        env: vec![
            ("HEARTH_NATS_TOKEN".into(), nats_token.clone()),
            ("QDRANT_API_KEY".into(), token()),
            ("HEARTH_GATEWAY_TOKEN".into(), gateway_token.clone()),
            ("HEARTH_GATEWAY_PORT".into(), port.to_string()),
            ("HEARTH_NATS_PORT".into(), nats_port.to_string()),
        ],
        gateway: format!("http://127.0.0.1:{port}/"),
        token: gateway_token,
        pump: Arc::new(AtomicBool::new(true)),
    };
    pump_health_checks(project.clone(), stack.pump.clone());
    stack.must(&["up", "-d", "--no-build", "--scale", "operative=0"]);
    stack.wait_healthy(9, Duration::from_secs(300));
    assert!(stack.of("operative").is_empty(), "{:?}", stack.containers());

    let data = tempfile::tempdir().unwrap();
    let ca = repo().join("deploy/compose/certs/ca.pem");
    let url = format!("tls://{}:{nats_port}", host.host_ip);
    let base = |token: &str| -> Vec<(String, String)> {
        vec![
            ("HEARTH_NATS_URL".into(), url.clone()),
            ("HEARTH_BUS_TOKEN".into(), token.to_string()),
            ("HEARTH_BUS_TLS_CA".into(), ca.display().to_string()),
            ("HEARTH_BUS_TLS_REQUIRED".into(), "true".into()),
            ("HEARTH_BUS_JETSTREAM_DOMAIN".into(), "hearth".into()),
            ("HEARTH_DATA_DIR".into(), data.path().display().to_string()),
        ]
    };
    // A wrong token: refused, and it says so.
    let wrong = base("a-guess");
    let wrong: Vec<(&str, &str)> = wrong
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let refused = hearth_e2e::HearthProcess::serve_in(Some(&host.name), "operative", &wrong).await;
    let Err(e) = refused else {
        panic!("an operative with a wrong token joined the stack")
    };
    assert!(
        format!("{e:#}").to_lowercase().contains("authorization"),
        "{e:#}"
    );
    // The stack's token over TLS: it joins, and takes the work.
    let right = base(&nats_token);
    let right: Vec<(&str, &str)> = right
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let remote = hearth_e2e::HearthProcess::serve_in(Some(&host.name), "operative", &right)
        .await
        .unwrap();
    let pid = remote.pid().unwrap();
    let (status, v) = stack.send("What is 6*7?", Some(&stack.token)).await;
    assert_eq!(status, 200, "{v}");
    assert!(answer(&v).contains("42"), "{v}");
    let orchestrator = stack.of("orchestrator").pop().unwrap();
    let subtasks: Vec<String> = stack
        .tasks(&orchestrator)
        .iter()
        .filter(|t| !t["parent"].as_str().unwrap_or_default().is_empty())
        .filter_map(|t| t["worker"].as_str().map(str::to_string))
        .collect();
    assert!(
        subtasks
            .iter()
            .any(|w| w.starts_with(&format!("operative-{pid}-"))),
        "no subtask ran on the operative of the other host (pid {pid}): {subtasks:?}"
    );
    remote.kill().await;
}
