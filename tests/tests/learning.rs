//! Learning end to end, on the real default model: traces of real runs
//! (redacted), `hearth eval run` scoring real answers, synthesis through the
//! real mesh, exports that `datasets` and TRL read, the trainer on the CPU
//! turning an export into a GGUF LoRA that llama.cpp loads over the base and
//! generates with, adapters that are corrupt, for another model, or worse
//! than the base refused, and the main job answered right.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_e2e::hearth;

/// The Python with torch, transformers, peft, gguf, datasets and trl
/// (scripts/setup-tests makes it).
fn learn_python() -> PathBuf {
    PathBuf::from(std::env::var_os("HEARTH_TEST_LEARN_PYTHON").unwrap_or_else(|| {
        panic!("HEARTH_TEST_LEARN_PYTHON is not set: run the tests with scripts/test (it runs scripts/setup-tests)")
    }))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A data dir of the test's own that still has scripts/setup's embedding
/// model and sandbox interpreter (linked, not copied).
fn data_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let real = hearth_mesh::Config::default().data_dir();
    std::fs::create_dir_all(d.path().join("models")).unwrap();
    for (from, to) in [
        (
            real.join("models/all-MiniLM-L6-v2-f16.gguf"),
            d.path().join("models/all-MiniLM-L6-v2-f16.gguf"),
        ),
        (real.join("python"), d.path().join("python")),
    ] {
        if from.exists() {
            std::os::unix::fs::symlink(&from, &to).unwrap();
        }
    }
    d
}

fn env(d: &Path) -> Vec<(&'static str, String)> {
    vec![("HEARTH_DATA_DIR", d.to_str().unwrap().to_string())]
}

async fn run(args: &[&str], env: &[(&'static str, String)], secs: u64) -> (i32, String, String) {
    let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    hearth(args, &e, Duration::from_secs(secs)).await.unwrap()
}

#[tokio::test]
async fn the_main_job_answers_right_and_leaves_a_redacted_trace() {
    let d = data_dir();
    let mut e = env(d.path());
    let key = "sk-hearthtest-0123456789abcdefABCDEF";
    e.push(("HEARTH_ENGINE_API_KEY", key.to_string()));
    let (code, out, err) = run(&["ask", "What is 12*12?", "--json"], &e, 300).await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["answer"].as_str().unwrap().contains("144"),
        "the README's main job answers right: {v}"
    );
    let right = v["task_id"].as_str().unwrap().to_string();
    assert!(
        !err.contains("MULTI_MMAP"),
        "library warnings stay out: {err}"
    );
    // The shipped adapter was folded into the model once, in the models
    // directory; the next start reuses that file instead of making it again.
    let merged = |d: &Path| -> Vec<(PathBuf, std::time::SystemTime)> {
        std::fs::read_dir(d.join("models/merged"))
            .map(|r| {
                r.filter_map(|e| {
                    let e = e.ok()?;
                    Some((e.path(), e.metadata().ok()?.modified().ok()?))
                })
                .collect()
            })
            .unwrap_or_default()
    };
    let first = merged(d.path());
    assert_eq!(first.len(), 1, "one merged model: {first:?}");
    assert!(
        first[0].0.extension().is_some_and(|x| x == "gguf"),
        "{first:?}"
    );
    // A secret in a request never reaches a trace file.
    let (code, out, err) = run(
        &[
            "ask",
            &format!("My API key is {key}. What is 2+3?"),
            "--json",
        ],
        &e,
        300,
    )
    .await;
    assert!(code == 0 || code == 1, "{out}{err}");
    assert_eq!(
        merged(d.path()),
        first,
        "the merged model is reused, not made again"
    );
    let task: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut seen = 0;
    for f in std::fs::read_dir(d.path().join("traces")).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        assert!(!text.contains(key), "a trace holds the key: {text}");
        seen += 1;
    }
    assert!(
        seen >= 4,
        "orchestrator and operative traces of both tasks: {seen}"
    );
    let id = task["task_id"].as_str().unwrap();
    let (code, shown, err) = run(&["traces", "show", id, "--json"], &e, 30).await;
    assert_eq!(code, 0, "{err}");
    let t: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert!(shown.contains("[REDACTED]"), "{shown}");
    assert_eq!(t["agent"], "orchestrator");
    assert!(!t["model_calls"].as_array().unwrap().is_empty());
    // A bad rating takes the answer out of the agents' memory (the
    // operative remembered its subtask's outcome) and remembers the
    // correction in its place.
    let (code, out, err) = run(
        &[
            "traces",
            "feedback",
            &right,
            "bad",
            "--correction",
            "one hundred and forty-four",
            "--json",
        ],
        &e,
        60,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let fb: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(fb["forgotten"].as_u64().unwrap() >= 1, "{fb}");
    assert_eq!(
        fb["corrected_for"],
        serde_json::json!(["operative"]),
        "{fb}"
    );
    let (code, out, err) = run(
        &[
            "memory",
            "search",
            "What is 12*12?",
            "--collection",
            "agent_memory",
            "--json",
        ],
        &e,
        60,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let hits: serde_json::Value = serde_json::from_str(&out).unwrap();
    let texts: Vec<(&str, &str)> = hits["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["text"].as_str().unwrap(),
                h["payload"]["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        texts
            .iter()
            .any(|(t, k)| *k == "correction" && t.contains("one hundred and forty-four")),
        "{texts:?}"
    );
    assert!(
        !texts
            .iter()
            .any(|(t, k)| *k == "outcome" && t.contains("12*12")),
        "the rated answer is forgotten: {texts:?}"
    );
    // The right answer is rated good after all (the other one's tools may
    // have failed: a 270M model is not steady on a prompt holding a key).
    let (code, _, err) = run(&["traces", "feedback", &right, "good"], &e, 30).await;
    assert_eq!(code, 0, "{err}");
    // The rated task (and its subtask) exports in the OpenAI chat format,
    // which datasets loads and TRL takes as conversational data.
    let export = d.path().join("sft.jsonl");
    let (code, out, err) = run(
        &[
            "learn",
            "export",
            "--format",
            "sft",
            "--out",
            export.to_str().unwrap(),
            "--json",
        ],
        &e,
        60,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(summary["rows"].as_u64().unwrap() >= 2, "{summary}");
    let check = std::process::Command::new(learn_python())
        .arg("-c")
        .arg(
            "import sys, datasets\n\
             from trl.data_utils import is_conversational\n\
             ds = datasets.load_dataset('json', data_files=sys.argv[1], split='train')\n\
             assert len(ds) >= 2, len(ds)\n\
             assert all(is_conversational(r) for r in ds)\n\
             roles = [m['role'] for m in ds[0]['messages']]\n\
             assert 'tool' in roles or 'assistant' in roles, roles\n\
             print('ok', len(ds))",
        )
        .arg(&export)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[tokio::test]
async fn eval_scores_wrong_expectations_and_uncalled_tools_as_failed() {
    let d = data_dir();
    let suite = d.path().join("mini.jsonl");
    std::fs::write(
        &suite,
        r#"{"id":"right","prompt":"What is 12*12?","expect":{"number":144},"tool":"calculator.evaluate"}
{"id":"wrong-expectation","prompt":"What is 12*12?","expect":{"number":145}}
{"id":"tool-not-called","prompt":"What is 12*12?","expect":{"number":144},"tool":"code.run_python"}
"#,
    )
    .unwrap();
    let (code, out, err) = run(
        &["eval", "run", suite.to_str().unwrap(), "--json"],
        &env(d.path()),
        600,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["cases"], 3);
    let by_id = |id: &str| {
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("right")["passed"], true, "{r}");
    assert_eq!(by_id("wrong-expectation")["passed"], false, "{r}");
    let t = by_id("tool-not-called");
    assert_eq!(t["passed"], false, "{r}");
    assert!(t["reason"].as_str().unwrap().contains("not called"), "{t}");
    assert!(
        by_id("right")["tools_called"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "hearth.delegate"),
        "{r}"
    );
    assert_eq!(r["passed"], 1);
    assert!(r["median_latency_ms"].as_f64().unwrap() > 0.0);
    let kept = d
        .path()
        .join("eval")
        .join(format!("{}.json", r["run_id"].as_str().unwrap()));
    assert!(kept.is_file(), "the run is kept");
}

/// A GGUF LoRA for another architecture, written with PyPI's gguf.
fn foreign_adapter(dir: &Path) -> PathBuf {
    let path = dir.join("foreign.gguf");
    let out = std::process::Command::new(learn_python())
        .arg("-c")
        .arg(
            "import sys, numpy as np, gguf\n\
             w = gguf.GGUFWriter(sys.argv[1], 'llama')\n\
             w.add_string('general.type', 'adapter')\n\
             w.add_string('adapter.type', 'lora')\n\
             w.add_float32('adapter.lora.alpha', 8.0)\n\
             w.add_tensor('blk.0.attn_q.weight.lora_a', np.zeros((4, 64), np.float32))\n\
             w.add_tensor('blk.0.attn_q.weight.lora_b', np.zeros((64, 4), np.float32))\n\
             w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()",
        )
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

#[tokio::test]
async fn synth_export_train_convert_load_and_gate_on_the_cpu() {
    let d = data_dir();
    let e = env(d.path());
    // Synthesis through the real mesh: the teacher plays the model, the
    // real tools answer.
    let synth = d.path().join("synth");
    let (code, out, err) = run(
        &[
            "learn",
            "synth",
            "--count",
            "24",
            "--seed",
            "3",
            "--out",
            synth.to_str().unwrap(),
            "--json",
        ],
        &e,
        600,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(s["completed"].as_u64().unwrap() >= 20, "{s}");
    assert!(s["traces"].as_u64().unwrap() >= 30, "{s}");
    // Rendered by the engine, with its own tokens.
    let rows = d.path().join("rows.jsonl");
    let (code, out, err) = run(
        &[
            "learn",
            "export",
            "--format",
            "rendered",
            "--out",
            rows.to_str().unwrap(),
            "--traces",
            synth.to_str().unwrap(),
            "--json",
        ],
        &e,
        300,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(&rows).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(
        first["completion"]
            .as_str()
            .unwrap()
            .ends_with("<end_of_turn>"),
        "{first}"
    );
    assert!(!first["prompt_ids"].as_array().unwrap().is_empty());
    // Held-out prompts never appear in training data.
    for suite in ["calculator", "files", "python", "plain", "newcomer"] {
        let path = repo().join(format!("services/learning/suites/{suite}.test.jsonl"));
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let case: serde_json::Value = serde_json::from_str(line).unwrap();
            let prompt = case["prompt"].as_str().unwrap();
            assert!(
                !text.contains(&format!("\n{prompt}<end_of_turn>")),
                "held-out {prompt} exported"
            );
        }
    }
    // A few steps of the real trainer on the CPU, then the GGUF LoRA.
    let adapter = d.path().join("adapter.gguf");
    let model = hearth_engine::catalog::Catalog::builtin()
        .unwrap()
        .resolve("", &hearth_mesh::Config::default().models_dir())
        .unwrap()
        .path;
    let train = std::process::Command::new(learn_python())
        .arg(repo().join("services/learning/train/finetune.py"))
        .args(["--model", model.to_str().unwrap()])
        .args(["--data", rows.to_str().unwrap()])
        .args(["--out", adapter.to_str().unwrap()])
        .args([
            "--max-steps",
            "2",
            "--batch",
            "2",
            "--rank",
            "4",
            "--device",
            "cpu",
            "--max-len",
            "1024",
        ])
        .output()
        .unwrap();
    assert!(
        train.status.success(),
        "{}{}",
        String::from_utf8_lossy(&train.stdout),
        String::from_utf8_lossy(&train.stderr)
    );
    assert!(adapter.is_file());
    // llama.cpp loads base + adapter and generates.
    let lora = format!(
        "[engine]\nlora = [{{ path = \"{}\", scale = 1.0 }}]\n",
        adapter.display()
    );
    let cfg = d.path().join("hearth.toml");
    std::fs::write(&cfg, lora).unwrap();
    let mut with_cfg = e.clone();
    with_cfg.push(("HEARTH_CONFIG", cfg.to_str().unwrap().to_string()));
    let (code, out, err) = run(&["ask", "What is 2+2?", "--json"], &with_cfg, 300).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
    assert!(v["usage"]["tokens_out"].as_u64().unwrap() > 0, "{v}");
    assert!(code == 0 || code == 1, "{err}");
    // A corrupt adapter and one for another model are refused, clearly.
    let corrupt = d.path().join("corrupt.gguf");
    std::fs::write(&corrupt, b"GGUF this is not an adapter").unwrap();
    for bad in [corrupt, foreign_adapter(d.path())] {
        std::fs::write(
            &cfg,
            format!("[engine]\nlora = [{{ path = \"{}\" }}]\n", bad.display()),
        )
        .unwrap();
        let (code, out, err) = run(&["ask", "What is 2+2?"], &with_cfg, 120).await;
        assert_ne!(code, 0, "{out}");
        assert!(err.contains("refused the LoRA adapter"), "{err}");
    }
    // The gate: an adapter that makes answers worse (the trained one's
    // tensors replaced by noise) is not deployed.
    let harmful = d.path().join("harmful.gguf");
    let out = std::process::Command::new(learn_python())
        .arg("-c")
        .arg(
            "import sys, numpy as np, gguf\n\
             r = gguf.GGUFReader(sys.argv[1])\n\
             w = gguf.GGUFWriter(sys.argv[2], 'gemma3')\n\
             w.add_string('general.type', 'adapter')\n\
             w.add_string('adapter.type', 'lora')\n\
             w.add_float32('adapter.lora.alpha', 64.0)\n\
             rng = np.random.default_rng(0)\n\
             for t in r.tensors:\n\
             \x20   shape = tuple(int(x) for x in reversed(t.shape))\n\
             \x20   w.add_tensor(t.name, (rng.standard_normal(shape) * 0.5).astype(np.float32))\n\
             w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()",
        )
        .arg(&adapter)
        .arg(&harmful)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gate_suite = d.path().join("gate.jsonl");
    let cases: Vec<String> = [(7, 8), (12, 12), (9, 9), (6, 7), (11, 3), (15, 4), (8, 8), (5, 9)]
        .iter()
        .enumerate()
        .map(|(i, (a, b))| {
            format!(
                r#"{{"id":"g{i}","prompt":"What is {a}*{b}?","expect":{{"number":{}}},"tool":"calculator.evaluate"}}"#,
                a * b
            )
        })
        .collect();
    std::fs::write(&gate_suite, cases.join("\n")).unwrap();
    let (code, out, err) = run(
        &[
            "learn",
            "deploy",
            "--adapter",
            harmful.to_str().unwrap(),
            "--suite",
            gate_suite.to_str().unwrap(),
            "--json",
        ],
        &e,
        600,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let g: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(g["deployed"], false, "{g}");
    let c = &g["comparison"];
    assert!(
        c["candidate"].as_f64().unwrap() <= c["baseline"].as_f64().unwrap(),
        "noise does not help: {c}"
    );
    assert!(!d.path().join("learning/deployed.json").exists());
    let (_, status, _) = run(&["learn", "status", "--json"], &e, 30).await;
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(st["deployed"], serde_json::Value::Null, "{st}");
}
