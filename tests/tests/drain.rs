//! A service stops gracefully: on SIGTERM an operative takes no new tasks,
//! lets the subtask it is running finish (its answer reaches the caller),
//! and exits 0 within the drain deadline; a second SIGTERM, or the
//! deadline, ends it at once. Over a real nats-server, with `hearth serve`
//! processes and the MCP fixture's `wait` tool as the work in flight (the
//! model is the scripted test double: this is about the mesh).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hearth_agents::convert::{answer_of, text_message};
use hearth_e2e::{HearthProcess, NatsServer, fixture_bin, unique_prefix};
use hearth_mesh::clients::AgentClient;
use hearth_mesh::subjects::Service;
use hearth_mesh::{NatsBus, SharedBus, Subjects};
use hearth_proto::a2a::{Role, TaskState, stream_response::Payload};
use hearth_proto::v1::SendTaskRequest;
use tonic::Code;

/// A configuration file with the MCP fixture as server `fx`, and an agent
/// directory whose operative may call it.
fn setup(dir: &std::path::Path) -> std::path::PathBuf {
    let agents = dir.join("agents");
    std::fs::create_dir_all(&agents).unwrap();
    std::fs::write(
        agents.join("operative.toml"),
        "name = \"operative\"\nrole = \"operative\"\nsystem_prompt = \"Use the tools.\"\ntools = [\"fx.*\"]\n",
    )
    .unwrap();
    let cfg = dir.join("hearth.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agents]\ndir = \"{}\"\n[tools]\ncalculator = false\n[tools.files]\nenabled = false\n[tools.web]\nenabled = false\n\
             [toolhost]\ncall_timeout_ms = 120000\napprovals = \"{}\"\naudit_log = \"{}\"\n\
             [[mcp.servers]]\nname = \"fx\"\ncommand = \"{}\"\n",
            agents.display(),
            dir.join("approvals.json").display(),
            dir.join("audit.jsonl").display(),
            fixture_bin().display()
        ),
    )
    .unwrap();
    cfg
}

fn subtask(ms: u64) -> SendTaskRequest {
    SendTaskRequest {
        message: Some(text_message(
            Role::User,
            format!(r#"call fx.wait {{"ms": {ms}}}"#),
            "",
            "",
        )),
        ..Default::default()
    }
}

#[tokio::test]
async fn sigterm_lets_the_running_subtask_finish_then_exits_0_and_a_second_one_stops_at_once() {
    let nats = NatsServer::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = setup(state.path());
    let prefix = unique_prefix("drain");
    let base = vec![
        ("HEARTH_CONFIG", cfg.to_str().unwrap()),
        ("HEARTH_NATS_URL", nats.url.as_str()),
        ("HEARTH_SUBJECT_PREFIX", prefix.as_str()),
        ("HEARTH_ENGINE_BACKEND", "scripted"),
    ];
    let mut env = base.clone();
    env.push(("HEARTH_DRAIN_TIMEOUT_MS", "20000"));
    let engine = HearthProcess::serve("engine", &env).await.unwrap();
    let toolhost = HearthProcess::serve("toolhost", &env).await.unwrap();
    let mut operative = HearthProcess::serve("operative", &env).await.unwrap();
    let bus: SharedBus = Arc::new(NatsBus::connect(&nats.url).await.unwrap());
    let ops = AgentClient::new(
        bus,
        Subjects::new(prefix.clone()),
        Service::Operative,
        Duration::from_secs(30),
    );

    // A subtask that takes 4 s; SIGTERM lands a second into it.
    let mut events = ops.send_task(&subtask(4000)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped_at = Instant::now();
    operative.terminate().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // It takes no new task: nobody is left on the operatives' subject.
    let refused = ops.send_task(&subtask(10)).await;
    match refused {
        Err(e) => assert_eq!(e.code(), Code::Unavailable, "{e:?}"),
        Ok(mut s) => {
            let first = s.next().await.unwrap();
            assert_eq!(first.unwrap_err().code(), Code::Unavailable);
        }
    }
    // The subtask in flight finishes and its answer arrives.
    let mut last = None;
    while let Some(ev) = events.next().await {
        if let Some(Payload::Task(t)) = ev.unwrap().event.and_then(|e| e.payload) {
            last = Some(t);
        }
    }
    let task = last.unwrap();
    assert_eq!(
        task.status.as_ref().unwrap().state,
        TaskState::Completed as i32,
        "{task:?}"
    );
    assert!(answer_of(&task).contains("waited"), "{}", answer_of(&task));
    // Then it exits 0, well inside the 20 s deadline.
    let code = operative.exited(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "the drained operative's exit code");
    assert!(stopped_at.elapsed() < Duration::from_secs(15));

    // A second SIGTERM ends the drain at once.
    let mut operative = HearthProcess::serve("operative", &env).await.unwrap();
    let _long = ops.send_task(&subtask(60_000)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    operative.terminate().unwrap();
    assert_eq!(
        operative.exited(Duration::from_secs(1)).await,
        None,
        "it waits for the subtask"
    );
    let again = Instant::now();
    operative.terminate().unwrap();
    let code = operative.exited(Duration::from_secs(5)).await;
    assert!(
        code.is_some_and(|c| c != 0),
        "cut short is not a clean exit: {code:?}"
    );
    assert!(again.elapsed() < Duration::from_secs(5));

    // And so does the deadline.
    let mut env = base.clone();
    env.push(("HEARTH_DRAIN_TIMEOUT_MS", "1500"));
    let mut operative = HearthProcess::serve("operative", &env).await.unwrap();
    let _long = ops.send_task(&subtask(60_000)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped_at = Instant::now();
    operative.terminate().unwrap();
    let code = operative.exited(Duration::from_secs(10)).await;
    assert!(code.is_some_and(|c| c != 0), "{code:?}");
    let took = stopped_at.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(8),
        "it waited {took:?} for a 1.5 s deadline"
    );
    engine.kill().await;
    toolhost.kill().await;
}
