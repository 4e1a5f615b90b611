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
