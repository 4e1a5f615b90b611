//! `hearth bench mesh` runs end to end on a short series and reports every
//! figure it promises (the figures themselves are read by people, not
//! asserted: timings belong in the benchmark, not in tests).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::time::Duration;

use hearth_e2e::{NatsServer, hearth};

#[tokio::test]
async fn bench_mesh_reports_in_process_nats_and_raw_baseline() {
    let nats = NatsServer::start().await.unwrap();
    let (code, out, err) = hearth(
        &[
            "bench",
            "mesh",
            "--tasks",
            "20",
            "--warmup",
            "5",
            "--nats-url",
            &nats.url,
            "--json",
        ],
        &[],
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "bench failed: {err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["in_process"]["n"], 20, "{r}");
    assert_eq!(r["nats"]["n"], 20, "{r}");
    assert!(r["raw_nats_rtt"]["n"].as_u64().unwrap() >= 20, "{r}");
    for series in ["in_process", "nats", "raw_nats_rtt"] {
        let p50 = r[series]["p50_ms"].as_f64().unwrap();
        let p99 = r[series]["p99_ms"].as_f64().unwrap();
        assert!(p50 > 0.0 && p99 >= p50, "{series}: {r}");
    }
    // orchestrator → operative, operative → engine (twice: the tool call,
    // then the answer), operative → toolhost: at least four bus requests.
    assert!(r["hops_per_task"].as_f64().unwrap() >= 4.0, "{r}");
    assert!(r["overhead_ratio_to_raw_rtt"].is_number(), "{r}");
    assert!(r["target_in_process_met"].is_boolean(), "{r}");
}

#[tokio::test]
async fn bench_a2a_reports_round_trips_throughput_sse_and_baselines() {
    let (code, out, err) = hearth(
        &[
            "bench",
            "a2a",
            "--requests",
            "20",
            "--warmup",
            "3",
            "--concurrency",
            "4",
            "--json",
        ],
        &[],
        Duration::from_secs(180),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "bench failed: {err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    for series in [
        "send_message",
        "sse_first_event",
        "in_process_ask",
        "card_get",
    ] {
        assert_eq!(r[series]["n"], 20, "{series}: {r}");
        let p50 = r[series]["p50_ms"].as_f64().unwrap();
        assert!(
            p50 > 0.0 && r[series]["p99_ms"].as_f64().unwrap() >= p50,
            "{r}"
        );
    }
    assert!(r["concurrent"]["n"].as_u64().unwrap() >= 80, "{r}");
    assert!(r["concurrent"]["per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["ratio_to_in_process"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["target_send_met"].is_boolean() && r["target_sse_met"].is_boolean());
}

#[tokio::test]
async fn bench_memory_reports_search_recall_and_ingestion() {
    let model = hearth_e2e::embed_model();
    let corpus = hearth_e2e::fixture("memory/docs");
    let (code, out, err) = hearth(
        &[
            "bench",
            "memory",
            "--vectors",
            "3000",
            "--queries",
            "30",
            "--corpus",
            corpus.to_str().unwrap(),
            "--json",
        ],
        &[
            ("HEARTH_ENGINE_BACKEND", "scripted"),
            ("HEARTH_ENGINE_EMBED_MODEL", model.to_str().unwrap()),
        ],
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "bench failed: {err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &r["scale"];
    assert_eq!(s["vectors"], 3000, "{r}");
    assert_eq!(s["search"]["n"], 30, "{r}");
    assert!(s["search"]["p50_ms"].as_f64().unwrap() > 0.0, "{r}");
    assert!(s["exact"]["p50_ms"].as_f64().unwrap() > 0.0, "{r}");
    let recall = s["recall_at_10"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&recall), "{r}");
    let i = &r["ingest"];
    assert_eq!(i["files"], 44, "{r}");
    assert!(i["chunks"].as_u64().unwrap() >= 44, "{r}");
    assert!(i["chunks_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(i["model"], "all-MiniLM-L6-v2-f16", "{r}");
}
