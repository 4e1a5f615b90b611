//! Bus behaviour on the in-process transport (the NATS transport is covered
//! by the end-to-end tests against a real server).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hearth_proto::v1::{CallToolRequest, CallToolResponse, GenerateChunk, GenerateRequest};
use tonic::Code;

use super::*;
use crate::rpc;

fn bus() -> SharedBus {
    Arc::new(LocalBus::new(4096))
}

#[tokio::test]
async fn unary_request_gets_its_reply() {
    let bus = bus();
    rpc::serve_unary(
        bus.clone(),
        "t.echo".into(),
        Some("q".into()),
        |r: CallToolRequest| async move {
            Ok(CallToolResponse {
                content: format!("echo {}", r.name),
                ..Default::default()
            })
        },
    )
    .await
    .unwrap();
    let req = CallToolRequest {
        name: "x".into(),
        ..Default::default()
    };
    let resp: CallToolResponse = rpc::call(&bus, "t.echo", &req, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(resp.content, "echo x");
}

#[tokio::test]
async fn streamed_reply_arrives_in_order_and_ends() {
    let bus = bus();
    rpc::serve_stream(
        bus.clone(),
        "t.gen".into(),
        None,
        |_r: GenerateRequest| async move {
            Ok(futures::stream::iter((0..5).map(|i| {
                Ok(GenerateChunk {
                    delta: i.to_string(),
                    ..Default::default()
                })
            })))
        },
    )
    .await
    .unwrap();
    let stream = rpc::call_stream::<_, GenerateChunk>(
        &bus,
        "t.gen",
        &GenerateRequest::default(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let got: Vec<String> = stream.map(|c| c.unwrap().delta).collect().await;
    assert_eq!(got, vec!["0", "1", "2", "3", "4"]);
}

#[tokio::test]
async fn a_last_frame_is_a_reply_and_the_end_of_the_stream() {
    let bus = bus();
    let mut requests = bus.subscribe("t.raw", None).await.unwrap();
    tokio::spawn(async move {
        while let Some(req) = requests.next().await {
            let chunk = |d: &str| {
                Bytes::from(
                    GenerateChunk {
                        delta: d.into(),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                )
            };
            req.responder.data(chunk("a")).await.unwrap();
            req.responder.last(chunk("b")).await.unwrap();
            // Nothing after `last` reaches the caller.
            let _ = req.responder.data(chunk("c")).await;
        }
    });
    let stream = rpc::call_stream::<_, GenerateChunk>(
        &bus,
        "t.raw",
        &GenerateRequest::default(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let got: Vec<String> = stream.map(|c| c.unwrap().delta).collect().await;
    assert_eq!(got, vec!["a", "b"]);
}

#[tokio::test]
async fn a_stream_still_working_sends_each_reply_at_once() {
    let bus = bus();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<GenerateChunk, tonic::Status>>(4);
    let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
    rpc::serve_stream(
        bus.clone(),
        "t.slow".into(),
        None,
        move |_r: GenerateRequest| {
            let rx = rx.lock().unwrap().take();
            async move {
                let rx = rx.ok_or_else(|| tonic::Status::internal("one call only"))?;
                Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
            }
        },
    )
    .await
    .unwrap();
    let mut stream = rpc::call_stream::<_, GenerateChunk>(
        &bus,
        "t.slow",
        &GenerateRequest::default(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    tx.send(Ok(GenerateChunk {
        delta: "first".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    // The first reply arrives while the stream is still open.
    let first = tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .expect("the first reply waited for the stream's end")
        .unwrap()
        .unwrap();
    assert_eq!(first.delta, "first");
    drop(tx);
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn no_responders_is_unavailable() {
    let bus = bus();
    let err = rpc::call::<_, CallToolResponse>(
        &bus,
        "t.nobody",
        &CallToolRequest::default(),
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("t.nobody"), "{}", err.message());
}

#[tokio::test]
async fn a_slow_service_times_out_with_deadline_exceeded() {
    let bus = bus();
    rpc::serve_unary(
        bus.clone(),
        "t.slow".into(),
        None,
        |_r: CallToolRequest| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(CallToolResponse::default())
        },
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let err = rpc::call::<_, CallToolResponse>(
        &bus,
        "t.slow",
        &CallToolRequest::default(),
        Duration::from_millis(100),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn oversize_request_is_refused_before_sending() {
    let bus = bus();
    let req = CallToolRequest {
        arguments_json: "x".repeat(10_000),
        ..Default::default()
    };
    let err = rpc::call::<_, CallToolResponse>(&bus, "t.any", &req, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn oversize_reply_becomes_a_clear_error() {
    let bus = bus();
    rpc::serve_unary(
        bus.clone(),
        "t.big".into(),
        None,
        |_r: CallToolRequest| async move {
            Ok(CallToolResponse {
                content: "y".repeat(10_000),
                ..Default::default()
            })
        },
    )
    .await
    .unwrap();
    let err = rpc::call::<_, CallToolResponse>(
        &bus,
        "t.big",
        &CallToolRequest::default(),
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("exceeds"), "{}", err.message());
}

#[tokio::test]
async fn malformed_request_bytes_get_invalid_argument() {
    let bus = bus();
    rpc::serve_unary(
        bus.clone(),
        "t.typed".into(),
        None,
        |_r: CallToolRequest| async move { Ok(CallToolResponse::default()) },
    )
    .await
    .unwrap();
    let mut frames = bus
        .request(
            "t.typed",
            &Headers::new(),
            Bytes::from_static(&[0xff, 0xff, 0xff]),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    match frames.next().await {
        Some(Ok(frame::Kind::Error(e))) => assert_eq!(e.code, Code::InvalidArgument as i32),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_queue_group_shares_work_round_robin() {
    let bus = bus();
    for name in ["a", "b"] {
        rpc::serve_unary(
            bus.clone(),
            "t.work".into(),
            Some("workers".into()),
            move |_r: CallToolRequest| async move {
                Ok(CallToolResponse {
                    content: name.into(),
                    ..Default::default()
                })
            },
        )
        .await
        .unwrap();
    }
    let mut seen = std::collections::HashMap::new();
    for _ in 0..10 {
        let r: CallToolResponse = rpc::call(
            &bus,
            "t.work",
            &CallToolRequest::default(),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        *seen.entry(r.content).or_insert(0) += 1;
    }
    assert_eq!(seen.get("a"), Some(&5));
    assert_eq!(seen.get("b"), Some(&5));
}
