//! The durable mesh over a real nats-server (file storage, fsync before
//! every ack): subtasks go through the JetStream work queue, so an
//! operative killed in the middle of one hands it to another, which
//! replays the recorded steps (a tool with a side effect runs once) and
//! delivers the answer once; a subtask that keeps failing is dead-lettered
//! after its attempts and its task ends `failed` with the reason. The model
//! is the scripted test double: this is about the mesh.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hearth_agents::convert::{answer_of, text_message};
use hearth_e2e::{HearthProcess, NatsServer, fixture_bin, test_config, unique_prefix};
use hearth_launch::{Part, start};
use hearth_mesh::clients::AgentClient;
use hearth_mesh::subjects::Service;
use hearth_mesh::work::{WorkQueue, WorkSettings};
use hearth_mesh::{Headers, NatsBus, SharedBus, Subjects};
use hearth_proto::a2a::{Role, TaskState, stream_response::Payload};
use hearth_proto::v1::SendTaskRequest;

/// A configuration file whose operative may use the files tool (rooted in
/// `dir/files`) and the MCP fixture (`fx`, for its `wait` tool).
fn setup(dir: &std::path::Path) -> std::path::PathBuf {
    let agents = dir.join("agents");
    std::fs::create_dir_all(&agents).unwrap();
    std::fs::create_dir_all(dir.join("files")).unwrap();
    for (name, role, tools) in [
        ("operative", "operative", r#"["files.*", "fx.*"]"#),
        ("orchestrator", "orchestrator", "[]"),
    ] {
        std::fs::write(
            agents.join(format!("{name}.toml")),
            format!(
                "name = \"{name}\"\nrole = \"{role}\"\nsystem_prompt = \"Use the tools.\"\ntools = {tools}\n"
            ),
        )
        .unwrap();
    }
    let cfg = dir.join("hearth.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agents]\ndir = \"{}\"\n[tools]\ncalculator = false\n[tools.files]\nenabled = true\nroot = \"{}\"\n[tools.web]\nenabled = false\n\
             [toolhost]\ncall_timeout_ms = 120000\napprovals = \"{}\"\naudit_log = \"{}\"\n\
             [[mcp.servers]]\nname = \"fx\"\ncommand = \"{}\"\n",
            agents.display(),
            dir.join("files").display(),
            dir.join("approvals.json").display(),
            dir.join("audit.jsonl").display(),
            fixture_bin().display()
        ),
    )
    .unwrap();
    cfg
}

fn task(text: &str) -> SendTaskRequest {
    SendTaskRequest {
        message: Some(text_message(Role::User, text, "", "")),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_operative_killed_mid_subtask_hands_it_to_another_which_replays_its_steps() {
    let nats = NatsServer::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = setup(state.path());
    let prefix = unique_prefix("durkill");
    let env = vec![
        ("HEARTH_CONFIG", cfg.to_str().unwrap()),
        ("HEARTH_NATS_URL", nats.url.as_str()),
        ("HEARTH_SUBJECT_PREFIX", prefix.as_str()),
        ("HEARTH_ENGINE_BACKEND", "scripted"),
        ("HEARTH_WORK_ACK_WAIT_MS", "1000"),
    ];
    let engine = HearthProcess::serve("engine", &env).await.unwrap();
    let toolhost = HearthProcess::serve("toolhost", &env).await.unwrap();
    let orchestrator = HearthProcess::serve("orchestrator", &env).await.unwrap();
    let first = HearthProcess::serve("operative", &env).await.unwrap();
    let bus: SharedBus = Arc::new(NatsBus::connect(&nats.url).await.unwrap());
    let orch = AgentClient::new(
        bus,
        Subjects::new(prefix.clone()),
        Service::Orchestrator,
        Duration::from_secs(60),
    );

    // A side effect (append a line), then 4 s of work in flight.
    let mut events = orch
        .send_task(&task(
            r#"call files.append {"path": "log.txt", "content": "ran\n"} then call fx.wait {"ms": 4000}"#,
        ))
        .await
        .unwrap();
    let mut first_worker = None;
    while first_worker.is_none() {
        let ev = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("the subtask started")
            .unwrap()
            .unwrap();
        if let Some(Payload::StatusUpdate(u)) = ev.event.and_then(|e| e.payload) {
            let text = u
                .status
                .and_then(|s| s.message)
                .map(|m| hearth_agents::convert::text_of(&m))
                .unwrap_or_default();
            if text.contains("calling fx.wait") {
                // "operative <worker>: calling fx.wait"
                first_worker = text
                    .strip_prefix("operative ")
                    .and_then(|t| t.split(':').next())
                    .map(str::to_string);
            }
        }
    }
    let first_worker = first_worker.unwrap();
    // A second operative joins the same work queue; the first dies holding the subtask.
    let second = HearthProcess::serve("operative", &env).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    first.kill().await;

    let mut resumed = None;
    let mut finals = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("the task went on")
    {
        match ev.unwrap().event.and_then(|e| e.payload) {
            Some(Payload::StatusUpdate(u)) => {
                let text = u
                    .status
                    .and_then(|s| s.message)
                    .map(|m| hearth_agents::convert::text_of(&m))
                    .unwrap_or_default();
                if resumed.is_none()
                    && text.starts_with("operative ")
                    && !text.contains(&first_worker)
                {
                    resumed = Some(killed.elapsed());
                }
            }
            Some(Payload::Task(t))
                if t.status
                    .as_ref()
                    .is_some_and(|s| hearth_mesh::a2a::is_final(s.state)) =>
            {
                finals.push(t)
            }
            _ => {}
        }
    }
    assert_eq!(finals.len(), 1, "the answer arrives once: {finals:?}");
    let done = &finals[0];
    assert_eq!(
        done.status.as_ref().unwrap().state,
        TaskState::Completed as i32,
        "{done:?}"
    );
    assert!(answer_of(done).contains("waited"), "{}", answer_of(done));
    let resumed = resumed.expect("another operative took the subtask");
    eprintln!("work resumed on another operative {resumed:?} after the kill");
    assert!(resumed < Duration::from_secs(10), "{resumed:?}");
    // The append ran once: the redelivered subtask replayed its result.
    let log = std::fs::read_to_string(state.path().join("files/log.txt")).unwrap();
    assert_eq!(log, "ran\n", "the side effect ran once");
    for p in [engine, toolhost, orchestrator, second] {
        p.kill().await;
    }
}

#[tokio::test]
async fn a_poison_subtask_is_dead_lettered_after_its_attempts_and_others_are_unaffected() {
    let nats = NatsServer::start().await.unwrap();
    let prefix = unique_prefix("durpoison");
    let mut config = test_config(&prefix);
    config.nats_url = Some(nats.url.clone());
    config.work.max_attempts = 3;
    config.work.retry_backoff_ms = 100;
    let bus: SharedBus = Arc::new(NatsBus::connect(&nats.url).await.unwrap());
    let mesh = start(
        &config,
        bus.clone(),
        &[Part::Engine, Part::Toolhost, Part::Operative],
    )
    .await
    .unwrap();
    let client = bus.nats().unwrap().clone();
    let queue = WorkQueue::open(
        client,
        &config.subjects(),
        WorkSettings::from_config(&config),
    )
    .await
    .unwrap();

    let mut poison = task("scripted:fail, whatever you do");
    poison.task_id = "poison-1".into();
    let mut fine = task("What is 6*7?");
    fine.task_id = "fine-1".into();
    let t = Instant::now();
    let poison = queue.submit(poison, &Headers::new()).await.unwrap();
    let fine = queue.submit(fine, &Headers::new()).await.unwrap();

    let follow = |s: hearth_mesh::work::Submitted| async move {
        let mut retries = Vec::new();
        let done = hearth_mesh::a2a::follow_to_end(s.events(Duration::from_secs(30)), |ev| {
            if let Some(w) = ev.working {
                retries.push(w.to_string());
            }
        })
        .await
        .unwrap();
        (done, retries)
    };
    let ((bad, retries), (good, _)) = tokio::join!(follow(poison), follow(fine));
    assert_eq!(good.state, TaskState::Completed, "{:?}", good.task);
    assert!(good.answer().contains("42"), "{}", good.answer());
    assert_eq!(bad.state, TaskState::Failed, "{:?}", bad.task);
    let reason = bad.answer();
    assert!(
        reason.contains("failed 3 time(s)") && reason.contains("scripted:fail"),
        "{reason}"
    );
    assert_eq!(
        retries
            .iter()
            .filter(|r| r.contains("trying again"))
            .count(),
        2,
        "two retries before the dead letter: {retries:?}"
    );
    // Backoff 100 ms then 200 ms: it was retried, not spun.
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let letters = queue.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].attempts, 3);
    assert!(
        letters[0].reason.contains("scripted:fail"),
        "{:?}",
        letters[0]
    );
    assert_eq!(
        letters[0]
            .item
            .as_ref()
            .unwrap()
            .task
            .as_ref()
            .unwrap()
            .task_id,
        "poison-1"
    );
    mesh.shutdown().await;
}

#[tokio::test]
async fn a_layout_from_another_hearth_is_refused_with_a_clear_message() {
    let nats = NatsServer::start().await.unwrap();
    let prefix = unique_prefix("durschema");
    let config = test_config(&prefix);
    let client = async_nats::connect(&nats.url).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let name = format!("{}_WORK", prefix.to_ascii_uppercase());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![config.subjects().work(Service::Operative)],
        metadata: [("hearth_schema".to_string(), "0".to_string())].into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = WorkQueue::open(
        client,
        &config.subjects(),
        WorkSettings::from_config(&config),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&name) && err.contains("layout 0") && err.contains("layout 1"),
        "{err}"
    );
}

/// `deploy/nats/least-privilege.conf`, for the mesh under `prefix`.
fn least_privilege(prefix: &str) -> String {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/nats/least-privilege.conf");
    let upper = prefix.to_ascii_uppercase();
    std::fs::read_to_string(file)
        .unwrap()
        .replace("hearth.v1.", &format!("{prefix}.v1."))
        .replace("HEARTH_WORK", &format!("{upper}_WORK"))
        .replace("HEARTH_DEAD", &format!("{upper}_DEAD"))
        .replace("HEARTH_STEPS", &format!("{upper}_STEPS"))
}

#[tokio::test]
async fn a_mesh_runs_under_the_least_privilege_layout_and_nobody_steps_outside_it() {
    let prefix = unique_prefix("secure");
    let nats = NatsServer::start_with(&least_privilege(&prefix))
        .await
        .unwrap();
    let base = [
        ("HEARTH_NATS_URL", nats.url.as_str()),
        ("HEARTH_SUBJECT_PREFIX", prefix.as_str()),
        ("HEARTH_ENGINE_BACKEND", "scripted"),
        ("HEARTH_MEMORY_AGENT_MEMORY", "false"),
        ("HEARTH_LEARNING_TRACES", "false"),
    ];
    let as_user = |user: &'static str, password: &'static str| {
        let mut env = base.to_vec();
        env.push(("HEARTH_BUS_USER", user));
        env.push(("HEARTH_BUS_PASSWORD", password));
        env
    };
    // No credentials, and a wrong password: refused at once, saying why;
    // the password is never printed.
    for env in [base.to_vec(), as_user("engine", "wrong-pw")] {
        let (code, _out, err) =
            hearth_e2e::hearth(&["serve", "engine"], &env, Duration::from_secs(30))
                .await
                .unwrap();
        assert_ne!(code, 0);
        assert!(err.to_lowercase().contains("authorization"), "{err}");
        assert!(!err.contains("wrong-pw"), "{err}");
    }
    // Each service as its own user: the whole mesh, durable work queue
    // included, answers.
    let mut procs = Vec::new();
    for (part, password) in [
        ("engine", "CHANGE-ME-engine"),
        ("toolhost", "CHANGE-ME-toolhost"),
        ("operative", "CHANGE-ME-operative"),
        ("orchestrator", "CHANGE-ME-orchestrator"),
    ] {
        procs.push(
            HearthProcess::serve(part, &as_user(part, password))
                .await
                .unwrap(),
        );
    }
    let (code, out, err) = hearth_e2e::hearth(
        &["ask", "What is 6*7?", "--json"],
        &as_user("client", "CHANGE-ME-client"),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("42"), "{out}");
    // The engine's user cannot drive the orchestrator; the refusal is said.
    let mut engine = as_user("engine", "CHANGE-ME-engine");
    engine.push(("HEARTH_TASK_TIMEOUT_MS", "3000"));
    engine.push(("RUST_LOG", "warn"));
    let (code, _out, err) =
        hearth_e2e::hearth(&["ask", "What is 6*7?"], &engine, Duration::from_secs(30))
            .await
            .unwrap();
    assert_ne!(code, 0);
    assert!(
        err.to_lowercase().contains("permissions violation"),
        "{err}"
    );
    // Nor can a client put work in the queue behind the orchestrator's back.
    let client = async_nats::ConnectOptions::with_user_and_password(
        "client".into(),
        "CHANGE-ME-client".into(),
    )
    .connect(nats.url.as_str())
    .await
    .unwrap();
    let js = async_nats::jetstream::new(client);
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        js.publish(format!("{prefix}.v1.work.operative"), "x".into())
            .await?
            .await
    })
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a client's work item was accepted: {refused:?}"
    );
    for p in procs {
        p.kill().await;
    }
}

/// Submits `n` subtasks ("What is i*7?") to the work queue at once and
/// follows them all; each must answer right, exactly once. Returns each
/// task's time from submission to its answer, and the wall time of all.
async fn run_batch(queue: &WorkQueue, tag: &str, n: usize) -> (Vec<Duration>, Duration) {
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for i in 0..n {
        let mut t = task(&format!("What is {i}*7?"));
        t.task_id = format!("{tag}-{i}");
        let submitted = queue.submit(t, &Headers::new()).await.unwrap();
        let sent = Instant::now();
        handles.push(tokio::spawn(async move {
            let mut events = submitted.events(Duration::from_secs(120));
            let final_of = |ev: hearth_proto::v1::TaskEvent| match ev.event.and_then(|e| e.payload)
            {
                Some(Payload::Task(t))
                    if t.status
                        .as_ref()
                        .is_some_and(|s| hearth_mesh::a2a::is_final(s.state)) =>
                {
                    Some(t)
                }
                _ => None,
            };
            let mut finals = Vec::new();
            while let Some(ev) = events.next().await {
                if let Some(t) = final_of(ev.unwrap()) {
                    finals.push(t);
                    break;
                }
            }
            let took = sent.elapsed();
            // Anything final within a moment more would be a duplicate.
            while let Ok(Some(ev)) =
                tokio::time::timeout(Duration::from_millis(50), events.next()).await
            {
                if let Some(t) = ev.ok().and_then(final_of) {
                    finals.push(t);
                }
            }
            (i, finals, took)
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for h in handles {
        let (i, finals, took) = h.await.unwrap();
        assert_eq!(finals.len(), 1, "task {i}: {} final events", finals.len());
        let answer = answer_of(&finals[0]);
        assert!(answer.contains(&(i * 7).to_string()), "task {i}: {answer}");
        latencies.push(took);
    }
    let wall = t0.elapsed();
    latencies.sort();
    (latencies, wall)
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

#[tokio::test]
async fn a_thousand_subtasks_at_once_on_four_operatives_all_answer_once_and_throughput_scales() {
    let nats = NatsServer::start().await.unwrap();
    let prefix = unique_prefix("durload");
    let mut env = vec![
        ("HEARTH_NATS_URL", nats.url.as_str()),
        ("HEARTH_SUBJECT_PREFIX", prefix.as_str()),
        ("HEARTH_ENGINE_BACKEND", "scripted"),
        ("HEARTH_MEMORY_AGENT_MEMORY", "false"),
        ("HEARTH_LEARNING_TRACES", "false"),
        ("HEARTH_TOOLS_FILES_ENABLED", "false"),
        ("HEARTH_TOOLS_WEB_ENABLED", "false"),
        ("HEARTH_TOOLS_CODE_ENABLED", "false"),
        // Each model call takes 50 ms; each operative holds one subtask at a time.
        ("HEARTH_ENGINE_SCRIPTED_DELAY_MS", "50"),
        ("HEARTH_WORK_SLOTS", "1"),
    ];
    let engine = HearthProcess::serve("engine", &env).await.unwrap();
    let toolhost = HearthProcess::serve("toolhost", &env).await.unwrap();
    let mut ops = vec![HearthProcess::serve("operative", &env).await.unwrap()];
    let config = {
        let mut c = test_config(&prefix);
        c.nats_url = Some(nats.url.clone());
        c
    };
    let client = async_nats::connect(nats.url.as_str()).await.unwrap();
    let queue = WorkQueue::open(
        client,
        &config.subjects(),
        WorkSettings::from_config(&config),
    )
    .await
    .unwrap();

    // Throughput: 40 subtasks (two model calls each) on one operative, then on four.
    let (_, one) = run_batch(&queue, "one", 40).await;
    for _ in 0..3 {
        ops.push(HearthProcess::serve("operative", &env).await.unwrap());
    }
    let (_, four) = run_batch(&queue, "four", 40).await;
    let speedup = one.as_secs_f64() / four.as_secs_f64();
    eprintln!(
        "40 subtasks at 50 ms a model call: 1 operative {one:?}, 4 operatives {four:?}: {speedup:.2}x"
    );
    assert!(
        speedup >= 3.0,
        "4 operatives gave {speedup:.2}x the throughput of one"
    );

    // Load: a thousand at once, no model delay, four slots each.
    for op in ops {
        op.kill().await;
    }
    env.retain(|(k, _)| *k != "HEARTH_ENGINE_SCRIPTED_DELAY_MS" && *k != "HEARTH_WORK_SLOTS");
    engine.kill().await;
    let engine = HearthProcess::serve("engine", &env).await.unwrap();
    let mut ops = Vec::new();
    for _ in 0..4 {
        ops.push(HearthProcess::serve("operative", &env).await.unwrap());
    }
    let rss_before: u64 = ops.iter().filter_map(HearthProcess::rss_kib).sum();
    let (lat, wall) = run_batch(&queue, "load", 1000).await;
    let rss_after: u64 = ops.iter().filter_map(HearthProcess::rss_kib).sum();
    eprintln!(
        "1000 subtasks on 4 operatives: p50 {:?}, p99 {:?}, {:.0} tasks/s; operatives' RSS {} → {} MiB",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        1000.0 / wall.as_secs_f64(),
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        rss_after < rss_before * 3 + 200 * 1024,
        "resident memory grew from {rss_before} to {rss_after} KiB"
    );
    let stats = hearth_mesh::work::stats(
        &async_nats::connect(nats.url.as_str()).await.unwrap(),
        &config.subjects(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(stats.waiting, 0, "{stats:?}");
    assert_eq!(stats.in_progress, 0, "{stats:?}");
    assert_eq!(stats.dead_letters, 0, "{stats:?}");
    for p in ops.into_iter().chain([engine, toolhost]) {
        p.kill().await;
    }
}
