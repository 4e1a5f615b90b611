//! The mesh over a real nats-server: the bus's own behaviour, each service
//! as a separate `hearth serve` process, and operatives sharing work as a
//! queue group.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hearth_agents::convert::{answer_of, text_message};
use hearth_e2e::{HearthProcess, NatsServer, free_port, hearth, unique_prefix};
use hearth_mesh::clients::AgentClient;
use hearth_mesh::subjects::Service;
use hearth_mesh::{NatsBus, SharedBus, Subjects, rpc};
use hearth_proto::a2a::{Role, TaskState, stream_response::Payload};
use hearth_proto::v1::{
    CallToolRequest, CallToolResponse, GenerateChunk, GenerateRequest, SendTaskRequest,
};
use tonic::Code;

async fn bus(url: &str) -> SharedBus {
    Arc::new(NatsBus::connect(url).await.unwrap())
}

#[tokio::test]
async fn nats_bus_carries_unary_and_streamed_replies_with_clear_errors() {
    let nats = NatsServer::start().await.unwrap();
    let server = bus(&nats.url).await;
    let client = bus(&nats.url).await;
    let p = unique_prefix("busbasics");
    rpc::serve_unary(
        server.clone(),
        format!("{p}.echo"),
        Some("q".into()),
        |r: CallToolRequest| async move {
            Ok(CallToolResponse {
                content: r.name,
                ..Default::default()
            })
        },
    )
    .await
    .unwrap();
    rpc::serve_stream(
        server.clone(),
        format!("{p}.gen"),
        None,
        |_r: GenerateRequest| async move {
            Ok(futures::stream::iter((0..20).map(|i| {
                Ok(GenerateChunk {
                    delta: i.to_string(),
                    ..Default::default()
                })
            })))
        },
    )
    .await
    .unwrap();
    rpc::serve_unary(
        server.clone(),
        format!("{p}.slow"),
        None,
        |_r: CallToolRequest| async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(CallToolResponse::default())
        },
    )
    .await
    .unwrap();
    let d = Duration::from_secs(5);

    let r: CallToolResponse = rpc::call(
        &client,
        &format!("{p}.echo"),
        &CallToolRequest {
            name: "hi".into(),
            ..Default::default()
        },
        d,
    )
    .await
    .unwrap();
    assert_eq!(r.content, "hi");

    let got: Vec<String> = rpc::call_stream::<_, GenerateChunk>(
        &client,
        &format!("{p}.gen"),
        &GenerateRequest::default(),
        d,
    )
    .await
    .unwrap()
    .map(|c| c.unwrap().delta)
    .collect()
    .await;
    assert_eq!(got, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());

    let none = rpc::call::<_, CallToolResponse>(
        &client,
        &format!("{p}.nobody"),
        &CallToolRequest::default(),
        d,
    )
    .await
    .unwrap_err();
    assert_eq!(none.code(), Code::Unavailable);
    assert!(
        none.message().contains(&format!("{p}.nobody")),
        "{}",
        none.message()
    );

    let t = Instant::now();
    let slow = rpc::call::<_, CallToolResponse>(
        &client,
        &format!("{p}.slow"),
        &CallToolRequest::default(),
        Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    assert_eq!(slow.code(), Code::DeadlineExceeded);
    assert!(t.elapsed() < Duration::from_secs(2));

    let big = CallToolRequest {
        arguments_json: "x".repeat(client.max_payload() + 1),
        ..Default::default()
    };
    let err = rpc::call::<_, CallToolResponse>(&client, &format!("{p}.echo"), &big, d)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("exceeds"), "{}", err.message());
}

fn env<'a>(url: &'a str, prefix: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("HEARTH_NATS_URL", url),
        ("HEARTH_SUBJECT_PREFIX", prefix),
        ("HEARTH_ENGINE_BACKEND", "scripted"),
    ]
}

#[tokio::test]
async fn calculator_question_across_processes_over_nats() {
    let nats = NatsServer::start().await.unwrap();
    let prefix = unique_prefix("procs");
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let mut e = env(&nats.url, &prefix);
    e.push(("HEARTH_GATEWAY_ADDR", &addr));
    e.push(("HEARTH_GATEWAY_GRPC_ADDR", "127.0.0.1:0"));
    let mut procs = Vec::new();
    for part in ["engine", "toolhost", "operative", "orchestrator", "gateway"] {
        procs.push(HearthProcess::serve(part, &e).await.unwrap());
    }
    let (code, out, err) = hearth(
        &["ask", "What is 17*23+4?", "--json"],
        &e,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["answer"].as_str().unwrap().contains("395"), "{v}");
    assert_eq!(v["usage"]["model_calls"], 3);

    // The same task through the gateway's A2A JSON-RPC endpoint.
    let (_, resp) = hearth_e2e::a2a_rpc(
        &format!("http://{addr}/"),
        hearth_e2e::a2a_send_body("What is 17*23+4?").to_string(),
        None,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        resp["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED",
        "{resp}"
    );
    assert!(
        resp["result"]["task"]["artifacts"][0]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .contains("395"),
        "{resp}"
    );
    for p in procs {
        p.kill().await;
    }
}

#[tokio::test]
async fn two_operatives_in_one_queue_group_share_twenty_subtasks_each_done_once() {
    let nats = NatsServer::start().await.unwrap();
    let prefix = unique_prefix("share");
    let e = env(&nats.url, &prefix);
    let mut procs = Vec::new();
    for part in ["engine", "toolhost", "operative", "operative"] {
        procs.push(HearthProcess::serve(part, &e).await.unwrap());
    }
    let client_bus = bus(&nats.url).await;
    let ops = AgentClient::new(
        client_bus,
        Subjects::new(prefix.clone()),
        Service::Operative,
        Duration::from_secs(30),
    );
    let mut pending = Vec::new();
    for i in 0..20u32 {
        let ops = ops.clone();
        pending.push(tokio::spawn(async move {
            let req = SendTaskRequest {
                message: Some(text_message(
                    Role::User,
                    format!("What is {i}*7+1?"),
                    "",
                    "",
                )),
                task_id: format!("sub-{i}"),
                ..Default::default()
            };
            let mut events = ops.send_task(&req).await.unwrap();
            let mut last = None;
            while let Some(ev) = events.next().await {
                let ev = ev.unwrap();
                if let Some(Payload::Task(t)) = ev.event.and_then(|e| e.payload) {
                    last = Some((t, ev.worker));
                }
            }
            (i, last.unwrap())
        }));
    }
    let mut by_worker: HashMap<String, usize> = HashMap::new();
    let mut ids = HashSet::new();
    for p in pending {
        let (i, (task, worker)) = p.await.unwrap();
        assert_eq!(
            task.status.as_ref().unwrap().state,
            TaskState::Completed as i32
        );
        let expected = (i * 7 + 1).to_string();
        assert!(
            answer_of(&task).contains(&expected),
            "task {i}: {}",
            answer_of(&task)
        );
        assert!(
            ids.insert(task.id.clone()),
            "task {} finished twice",
            task.id
        );
        *by_worker.entry(worker).or_default() += 1;
    }
    assert_eq!(ids.len(), 20);
    assert_eq!(
        by_worker.len(),
        2,
        "both operatives should have worked: {by_worker:?}"
    );
    assert_eq!(by_worker.values().sum::<usize>(), 20);
    // Each task is known to exactly one operative: the one that ran it.
    let bus2 = bus(&nats.url).await;
    let ops2 = AgentClient::new(
        bus2,
        Subjects::new(prefix),
        Service::Operative,
        Duration::from_secs(5),
    );
    for (worker, n) in &by_worker {
        let mut found = 0;
        for i in 0..20 {
            let req = hearth_proto::v1::GetTaskRequest {
                id: format!("sub-{i}"),
                history_length: None,
            };
            if ops2.get_task_on(worker, &req).await.is_ok() {
                found += 1;
            }
        }
        assert_eq!(found, *n, "worker {worker}");
    }
    for p in procs {
        p.kill().await;
    }
}

#[tokio::test]
async fn over_nats_a_missing_orchestrator_is_a_clear_error_not_a_hang() {
    let nats = NatsServer::start().await.unwrap();
    let prefix = unique_prefix("noorch");
    let t = Instant::now();
    let (code, _out, err) = hearth(
        &["ask", "hi"],
        &env(&nats.url, &prefix),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_ne!(code, 0);
    assert!(
        err.contains("no service is listening") && err.contains("orchestrator"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn an_operative_killed_mid_mesh_leaves_a_clear_error() {
    let nats = NatsServer::start().await.unwrap();
    let prefix = unique_prefix("killed");
    let e = env(&nats.url, &prefix);
    let engine = HearthProcess::serve("engine", &e).await.unwrap();
    let toolhost = HearthProcess::serve("toolhost", &e).await.unwrap();
    let orch = HearthProcess::serve("orchestrator", &e).await.unwrap();
    let op = HearthProcess::serve("operative", &e).await.unwrap();
    op.kill().await;
    // The durable path (the default over NATS): the subtask waits in the
    // work queue, and with no operative at all the delegation says so.
    let t = Instant::now();
    let (code, out, err) = hearth(
        &["ask", "What is 1+1?", "--json"],
        &e,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_ne!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "TASK_STATE_FAILED", "{v} {err}");
    assert!(
        v["answer"]
            .as_str()
            .unwrap()
            .contains("no operative is running on this mesh"),
        "{v}"
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    // The plain request path says the same in its own words.
    let mut plain = env(&nats.url, &prefix);
    plain.push(("HEARTH_WORK_DURABLE", "false"));
    let orch_plain = HearthProcess::serve("orchestrator", &plain).await.unwrap();
    orch.kill().await;
    let (code, out, err) = hearth(
        &["ask", "What is 1+1?", "--json"],
        &plain,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_ne!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "TASK_STATE_FAILED", "{v} {err}");
    assert!(
        v["answer"]
            .as_str()
            .unwrap()
            .contains("operative.send_task"),
        "{v}"
    );
    for p in [engine, toolhost, orch_plain] {
        p.kill().await;
    }
}
