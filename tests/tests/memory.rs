//! Memory end to end, with the real embedding model (all-MiniLM-L6-v2 in
//! llama.cpp) and real Qdrant: qdrant-edge in process, and a Qdrant server
//! (`../shared/bin/qdrant`, or the one at `HEARTH_TEST_QDRANT_URL`). The chat
//! model is the scripted double where a test needs one: what is under test
//! is storage, embeddings and retrieval, not the model's judgement.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hearth_agents::memory::{AgentMemory, BusMemory, COLLECTION as AGENT_MEMORY};
use hearth_e2e::{
    HearthProcess, NatsServer, QdrantServer, embed_model, fixture, hearth, test_config,
    unique_prefix,
};
use hearth_launch::{Mesh, Part, ask, start};
use hearth_memory::ingest::ingest;
use hearth_memory::store::CollectionMeta;
use hearth_mesh::clients::{MemoryClient, ToolhostClient};
use hearth_mesh::{Config, LocalBus, Secret, SharedBus};
use hearth_proto::v1::{
    CallToolRequest, DeleteRequest, Filter, InfoRequest, SearchRequest, SourcesRequest,
};
use tonic::Code;

/// A test configuration with real embeddings and memory under `dir`.
fn memory_config(name: &str, dir: &Path) -> Config {
    let mut c = test_config(&unique_prefix(name));
    c.engine.embed_model = Some(embed_model().display().to_string());
    c.memory.dir = Some(dir.join("memory"));
    c
}

/// The engine and the memory service in this process, and a client.
async fn local(config: &Config, parts: &[Part]) -> (Mesh, MemoryClient) {
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(config, bus.clone(), parts).await.unwrap();
    let client = MemoryClient::new(bus, config.subjects(), Duration::from_secs(600));
    (mesh, client)
}

fn docs() -> PathBuf {
    fixture("memory/docs")
}

fn questions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(fixture("memory/questions.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["question"].as_str().unwrap().to_string(),
                q["doc"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn search(
    client: &MemoryClient,
    collection: &str,
    query: &str,
    limit: u32,
    dense_only: bool,
) -> Vec<(String, f32, serde_json::Value)> {
    client
        .search(&SearchRequest {
            collection: collection.into(),
            query: query.into(),
            limit,
            filter: None,
            dense_only,
        })
        .await
        .unwrap()
        .hits
        .into_iter()
        .map(|h| {
            let p: serde_json::Value = serde_json::from_str(&h.payload_json).unwrap();
            (h.text, h.score, p)
        })
        .collect()
}

fn source_of(p: &serde_json::Value) -> String {
    p["source"].as_str().unwrap_or_default().to_string()
}

fn by_source(source: &str) -> Option<Filter> {
    Some(Filter {
        equals: [("source".to_string(), source.to_string())].into(),
        since: None,
        until: None,
    })
}

/// recall@5 over the 40 questions, hybrid and dense-only.
async fn recall_at_5(client: &MemoryClient, collection: &str) -> (f64, f64, Vec<String>) {
    let qs = questions();
    assert_eq!(qs.len(), 40);
    let (mut hybrid, mut dense, mut missed) = (0usize, 0usize, Vec::new());
    for (q, doc) in &qs {
        let found = |hits: &[(String, f32, serde_json::Value)]| {
            hits.iter()
                .any(|(_, _, p)| source_of(p).ends_with(doc.as_str()))
        };
        if found(&search(client, collection, q, 5, false).await) {
            hybrid += 1;
        } else {
            missed.push(format!("{q} → {doc}"));
        }
        if found(&search(client, collection, q, 5, true).await) {
            dense += 1;
        }
    }
    (
        hybrid as f64 / qs.len() as f64,
        dense as f64 / qs.len() as f64,
        missed,
    )
}

#[tokio::test]
async fn documents_are_found_with_recall_at_5_of_at_least_0_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = memory_config("recall", dir.path());
    let (mesh, client) = local(&config, &[Part::Engine, Part::Memory]).await;
    let report = ingest(&client, "documents", &docs(), &|_, _| {})
        .await
        .unwrap();
    assert_eq!(report.files, 44, "{report:?}");
    assert_eq!(report.added, 44, "{report:?}");
    assert!(report.chunks >= 44, "{report:?}");
    let (hybrid, dense, missed) = recall_at_5(&client, "documents").await;
    let info = client.info(&InfoRequest {}).await.unwrap();
    mesh.shutdown().await;
    eprintln!("recall@5: hybrid {hybrid:.3}, dense only {dense:.3}; missed: {missed:#?}");
    assert!(
        hybrid >= 0.9,
        "hybrid recall@5 {hybrid}; missed {missed:#?}"
    );
    let docs = info
        .collections
        .iter()
        .find(|c| c.name == "documents")
        .unwrap();
    assert_eq!(docs.points, report.chunks as u64);
    assert_eq!(docs.dims, 384);
    assert_eq!(docs.embed_model, "all-MiniLM-L6-v2-f16");
    assert!(info.backend.starts_with("qdrant-edge"), "{}", info.backend);
}

fn copy_docs(to: &Path, names: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for n in names {
        std::fs::copy(docs().join(n), to.join(n)).unwrap();
    }
}

const SIX: [&str; 6] = [
    "01-sourdough-starter.md",
    "02-saturn-rings.md",
    "03-arctic-tern.md",
    "04-binary-search.md",
    "05-berlin-wall.md",
    "06-offside-rule.md",
];

#[tokio::test]
async fn reingesting_changes_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    copy_docs(&notes, &SIX);
    let config = memory_config("reingest", dir.path());
    let (mesh, client) = local(&config, &[Part::Engine, Part::Memory]).await;
    let noop = |_: usize, _: usize| {};

    let first = ingest(&client, "notes", &notes, &noop).await.unwrap();
    assert_eq!((first.added, first.unchanged), (6, 0), "{first:?}");

    let again = ingest(&client, "notes", &notes, &noop).await.unwrap();
    assert_eq!(
        (again.added, again.changed, again.unchanged, again.removed),
        (0, 0, 6, 0),
        "{again:?}"
    );
    assert_eq!((again.chunks, again.deleted), (0, 0), "{again:?}");

    // One file changes, one goes, one arrives.
    let changed = notes.join(SIX[0]);
    let mut text = std::fs::read_to_string(&changed).unwrap();
    text.push_str("\n\nIn Oslo, bakers keep their starter under zebra-striped umbrellas.\n");
    std::fs::write(&changed, text).unwrap();
    std::fs::remove_file(notes.join(SIX[1])).unwrap();
    copy_docs(&notes, &["07-insulin-discovery.md"]);
    let before = client
        .sources(&SourcesRequest {
            collection: "notes".into(),
        })
        .await
        .unwrap()
        .digests;

    let third = ingest(&client, "notes", &notes, &noop).await.unwrap();
    assert_eq!(
        (third.added, third.changed, third.unchanged, third.removed),
        (1, 1, 4, 1),
        "{third:?}"
    );
    let after = client
        .sources(&SourcesRequest {
            collection: "notes".into(),
        })
        .await
        .unwrap()
        .digests;
    let key = |n: &str| {
        std::fs::canonicalize(&notes)
            .unwrap()
            .join(n)
            .display()
            .to_string()
    };
    assert_ne!(before[&key(SIX[0])], after[&key(SIX[0])]);
    assert!(!after.contains_key(&key(SIX[1])));
    assert!(after.contains_key(&key("07-insulin-discovery.md")));
    for n in &SIX[2..] {
        assert_eq!(before[&key(n)], after[&key(n)], "{n} should be untouched");
    }

    // The changed file's new text is found, and none of its old chunks
    // (with the old digest) is left.
    let hits = search(
        &client,
        "notes",
        "zebra-striped umbrellas in Oslo",
        3,
        false,
    )
    .await;
    assert_eq!(source_of(&hits[0].2), key(SIX[0]), "{hits:?}");
    let of_changed = client
        .search(&SearchRequest {
            collection: "notes".into(),
            query: "sourdough".into(),
            limit: 100,
            filter: by_source(&key(SIX[0])),
            dense_only: true,
        })
        .await
        .unwrap()
        .hits;
    assert!(!of_changed.is_empty());
    for h in &of_changed {
        let p: serde_json::Value = serde_json::from_str(&h.payload_json).unwrap();
        assert_eq!(p["digest"].as_str().unwrap(), after[&key(SIX[0])]);
    }
    // The deleted file's chunks are gone.
    let saturn = search(&client, "notes", "Saturn's rings", 10, false).await;
    assert!(
        saturn
            .iter()
            .all(|(_, _, p)| !source_of(p).ends_with(SIX[1])),
        "{saturn:?}"
    );
    mesh.shutdown().await;
}

#[tokio::test]
async fn memory_persists_across_a_restart_of_its_process() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let model = embed_model().display().to_string();
    let env = [
        ("HEARTH_DATA_DIR", data_dir.as_str()),
        ("HEARTH_ENGINE_BACKEND", "scripted"),
        ("HEARTH_ENGINE_EMBED_MODEL", model.as_str()),
    ];
    let long = Duration::from_secs(300);
    let docs = docs().display().to_string();
    let (code, out, err) = hearth(&["memory", "ingest", &docs, "--json"], &env, long)
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["added"], 44, "{r}");
    let chunks = r["chunks"].as_u64().unwrap();

    // A new process: the store is read back from disk.
    let (code, out, err) = hearth(
        &[
            "memory",
            "search",
            "Who opened the border gate at Bornholmer Straße?",
            "--json",
        ],
        &env,
        long,
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let top = r["hits"][0]["payload"]["source"].as_str().unwrap();
    assert!(top.ends_with("05-berlin-wall.md"), "{r}");

    let (code, out, err) = hearth(&["memory", "info", "--json"], &env, long)
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let col = &r["collections"][0];
    assert_eq!(col["name"], "documents", "{r}");
    assert_eq!(col["points"].as_u64().unwrap(), chunks, "{r}");
    assert_eq!(col["dims"], 384, "{r}");

    // Forget one document by its source; it is gone for the next process.
    let (code, out, err) = hearth(&["memory", "forget", "--source", top, "--json"], &env, long)
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["deleted"].as_u64().unwrap() >= 1, "{r}");
    let (_, out, _) = hearth(
        &[
            "memory",
            "search",
            "Berlin Wall Bornholmer Straße",
            "--json",
        ],
        &env,
        long,
    )
    .await
    .unwrap();
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        r["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| !h["payload"]["source"]
                .as_str()
                .unwrap()
                .ends_with("05-berlin-wall.md")),
        "{r}"
    );

    // Forgetting needs a filter: nothing is wiped by accident.
    let (code, _, err) = hearth(&["memory", "forget"], &env, long).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("--source"), "{err}");
}

#[tokio::test]
async fn a_second_process_on_the_same_embedded_store_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = memory_config("busy", dir.path());
    let (mesh, _client) = local(&config, &[Part::Engine, Part::Memory]).await;
    let model = embed_model().display().to_string();
    let memory_dir = dir.path().join("memory").display().to_string();
    let (code, _out, err) = hearth(
        &["memory", "info"],
        &[
            ("HEARTH_MEMORY_DIR", memory_dir.as_str()),
            ("HEARTH_ENGINE_BACKEND", "scripted"),
            ("HEARTH_ENGINE_EMBED_MODEL", model.as_str()),
        ],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    mesh.shutdown().await;
    assert_ne!(code, 0);
    assert!(
        err.contains("another Hearth process holds the memory"),
        "{err}"
    );
}

#[tokio::test]
async fn two_processes_ingest_and_search_at_once_over_nats() {
    let nats = NatsServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("memnats");
    let model = embed_model().display().to_string();
    let data_dir = data.path().display().to_string();
    let env = [
        ("HEARTH_NATS_URL", nats.url.as_str()),
        ("HEARTH_SUBJECT_PREFIX", prefix.as_str()),
        ("HEARTH_ENGINE_BACKEND", "scripted"),
        ("HEARTH_ENGINE_EMBED_MODEL", model.as_str()),
        ("HEARTH_DATA_DIR", data_dir.as_str()),
    ];
    let _engine = HearthProcess::serve("engine", &env).await.unwrap();
    let _memory = HearthProcess::serve("memory", &env).await.unwrap();

    // The corpus in two halves, one ingesting process each, at once, into
    // one collection; a third process searches meanwhile.
    let names: Vec<String> = std::fs::read_dir(docs())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let (a, b) = (data.path().join("a"), data.path().join("b"));
    for (i, n) in names.iter().enumerate() {
        copy_docs(if i % 2 == 0 { &a } else { &b }, &[n.as_str()]);
    }
    let long = Duration::from_secs(300);
    let (a_s, b_s) = (a.display().to_string(), b.display().to_string());
    let args_a = ["memory", "ingest", &a_s, "--collection", "shared", "--json"];
    let args_b = ["memory", "ingest", &b_s, "--collection", "shared", "--json"];
    let ingest_a = hearth(&args_a, &env, long);
    let ingest_b = hearth(&args_b, &env, long);
    let searching = async {
        let mut answered = 0;
        for _ in 0..5 {
            let (code, out, _) = hearth(
                &[
                    "memory",
                    "search",
                    "Saturn rings",
                    "--collection",
                    "shared",
                    "--json",
                ],
                &env,
                long,
            )
            .await
            .unwrap();
            // Before the first chunk lands the collection does not exist yet.
            if code == 0 && serde_json::from_str::<serde_json::Value>(&out).is_ok() {
                answered += 1;
            }
        }
        answered
    };
    let ((ca, oa, ea), (cb, ob, eb), answered) = {
        let (ra, rb, n) = tokio::join!(ingest_a, ingest_b, searching);
        (ra.unwrap(), rb.unwrap(), n)
    };
    assert_eq!(ca, 0, "{ea}");
    assert_eq!(cb, 0, "{eb}");
    let (ra, rb): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&oa).unwrap(),
        serde_json::from_str(&ob).unwrap(),
    );
    assert_eq!(
        ra["added"].as_u64().unwrap() + rb["added"].as_u64().unwrap(),
        names.len() as u64
    );
    eprintln!("searches answered while ingesting: {answered}/5");

    // Afterwards, both halves are there for anyone on the mesh.
    let bus: SharedBus = Arc::new(hearth_mesh::NatsBus::connect(&nats.url).await.unwrap());
    let client = MemoryClient::new(
        bus,
        hearth_mesh::Subjects::new(&prefix),
        Duration::from_secs(60),
    );
    let info = client.info(&InfoRequest {}).await.unwrap();
    let shared = info
        .collections
        .iter()
        .find(|c| c.name == "shared")
        .unwrap();
    assert_eq!(
        shared.points,
        ra["chunks"].as_u64().unwrap() + rb["chunks"].as_u64().unwrap()
    );
    let (hybrid, _, missed) = recall_at_5(&client, "shared").await;
    assert!(hybrid >= 0.9, "recall@5 {hybrid}: {missed:#?}");
}

#[tokio::test]
async fn agents_remember_facts_and_recall_only_relevant_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = memory_config("agentmem", dir.path());
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(
        &config,
        bus.clone(),
        &[
            Part::Engine,
            Part::Memory,
            Part::Toolhost,
            Part::Operative,
            Part::Orchestrator,
        ],
    )
    .await
    .unwrap();
    // The scripted double calls the tool the task names.
    let answer = ask(
        &config,
        bus.clone(),
        r#"call hearth.remember {"fact": "The on-call engineer this week is Priya Raman."}"#,
        &|_| {},
    )
    .await
    .unwrap();
    assert!(answer.completed(), "{answer:?}");
    assert!(answer.answer.contains("remembered"), "{}", answer.answer);
    let answer = ask(&config, bus.clone(), "What is 17*23+4?", &|_| {})
        .await
        .unwrap();
    assert!(answer.answer.contains("395"), "{}", answer.answer);

    let client = MemoryClient::new(bus.clone(), config.subjects(), Duration::from_secs(60));
    let memory = BusMemory::new(client.clone());
    let recalled = memory
        .recall("operative", "Who is on call this week?", 3)
        .await;
    assert!(
        recalled
            .iter()
            .any(|m| m == "The on-call engineer this week is Priya Raman."),
        "{recalled:?}"
    );
    // The arithmetic task's outcome was kept too, and is what a similar task recalls.
    let recalled = memory.recall("operative", "What is 17*23+4?", 3).await;
    assert!(recalled.iter().any(|m| m.contains("395")), "{recalled:?}");
    // Unrelated tasks recall nothing rather than noise.
    let recalled = memory
        .recall("operative", "Describe how glaciers carve fjords.", 3)
        .await;
    assert!(recalled.is_empty(), "{recalled:?}");
    // Another agent's memories are not this one's.
    assert!(
        memory
            .recall("orchestrator", "Who is on call this week?", 3)
            .await
            .is_empty()
    );

    // `forget` by agent and kind.
    let deleted = client
        .delete(&DeleteRequest {
            collection: AGENT_MEMORY.into(),
            ids: vec![],
            filter: Some(Filter {
                equals: [
                    ("agent".to_string(), "operative".to_string()),
                    ("kind".to_string(), "fact".to_string()),
                ]
                .into(),
                since: None,
                until: None,
            }),
        })
        .await
        .unwrap()
        .deleted;
    assert_eq!(deleted, 1);
    let recalled = memory
        .recall("operative", "Who is on call this week?", 3)
        .await;
    // The fact is gone (the outcome of the task that stored it remains).
    assert!(
        recalled
            .iter()
            .all(|m| m != "The on-call engineer this week is Priya Raman."),
        "{recalled:?}"
    );
    // Forgetting by agent clears the rest.
    let deleted = client
        .delete(&DeleteRequest {
            collection: AGENT_MEMORY.into(),
            ids: vec![],
            filter: Some(Filter {
                equals: [("agent".to_string(), "operative".to_string())].into(),
                since: None,
                until: None,
            }),
        })
        .await
        .unwrap()
        .deleted;
    assert_eq!(deleted, 2);
    assert!(
        memory
            .recall("operative", "Who is on call this week?", 3)
            .await
            .is_empty()
    );
    mesh.shutdown().await;
}

#[tokio::test]
async fn the_retrieval_tool_returns_passages_with_source_and_score() {
    let dir = tempfile::tempdir().unwrap();
    let config = memory_config("retrieval", dir.path());
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(
        &config,
        bus.clone(),
        &[Part::Engine, Part::Memory, Part::Toolhost],
    )
    .await
    .unwrap();
    let client = MemoryClient::new(bus.clone(), config.subjects(), Duration::from_secs(600));
    let toolhost = ToolhostClient::new(bus.clone(), config.subjects(), Duration::from_secs(60));
    let call = |args: &str| CallToolRequest {
        name: "retrieval.search".into(),
        arguments_json: args.into(),
        ..Default::default()
    };
    // Nothing ingested yet: a clear error, not a crash.
    let r = toolhost
        .call_tool(&call(r#"{"query": "tardigrades"}"#))
        .await
        .unwrap();
    assert!(r.is_error && r.content.contains("ingest"), "{r:?}");

    ingest(&client, "documents", &docs(), &|_, _| {})
        .await
        .unwrap();
    let r = toolhost
        .call_tool(&call(
            r#"{"query": "Which animal survives being frozen and dried out?", "limit": 3}"#,
        ))
        .await
        .unwrap();
    assert!(!r.is_error, "{r:?}");
    assert!(r.content.contains("44-tardigrades.md"), "{}", r.content);
    assert!(r.content.contains("score"), "{}", r.content);
    let r = toolhost
        .call_tool(&call(r#"{"query": "  "}"#))
        .await
        .unwrap();
    assert!(r.is_error, "{r:?}");
    mesh.shutdown().await;
}

#[tokio::test]
async fn a_collection_built_with_another_model_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = memory_config("mismatch", dir.path());
    // Built by "another model" with 8 dimensions, before this service runs.
    {
        let store = hearth_memory::open_store(&config, dir.path())
            .await
            .unwrap();
        store
            .ensure(
                "old",
                &CollectionMeta {
                    embed_model: "other-model".into(),
                    dims: 8,
                },
            )
            .await
            .unwrap();
    }
    let (mesh, client) = local(&config, &[Part::Engine, Part::Memory]).await;
    let err = client
        .search(&SearchRequest {
            collection: "old".into(),
            query: "anything".into(),
            limit: 5,
            filter: None,
            dense_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("other-model") && err.message().contains("384"),
        "{}",
        err.message()
    );
    // Malformed input: a clear error each, and the service keeps serving.
    let bad_name = client
        .search(&SearchRequest {
            collection: "../etc".into(),
            query: "x".into(),
            limit: 5,
            filter: None,
            dense_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(bad_name.code(), Code::InvalidArgument);
    let none = client
        .search(&SearchRequest {
            collection: "nosuch".into(),
            query: "x".into(),
            limit: 5,
            filter: None,
            dense_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::NotFound);
    let wipe = client
        .delete(&DeleteRequest {
            collection: "old".into(),
            ids: vec![],
            filter: None,
        })
        .await
        .unwrap_err();
    assert_eq!(wipe.code(), Code::InvalidArgument);
    mesh.shutdown().await;
}

/// The Qdrant-server backend passes the same checks as the embedded one.
#[tokio::test]
async fn the_qdrant_server_backend_stores_searches_filters_and_persists() {
    let qdrant = QdrantServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = memory_config("qdrantsrv", dir.path());
    config.memory.qdrant_url = Some(qdrant.grpc_url.clone());
    config.memory.qdrant_api_key = Secret::new(qdrant.api_key.clone());
    // Its own collection, in case the server is shared (HEARTH_TEST_QDRANT_URL).
    let collection = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);

    let (mesh, client) = local(&config, &[Part::Engine, Part::Memory]).await;
    let report = ingest(&client, &collection, &docs(), &|_, _| {})
        .await
        .unwrap();
    assert_eq!(report.added, 44);
    let (hybrid, dense, missed) = recall_at_5(&client, &collection).await;
    eprintln!("qdrant server: recall@5 hybrid {hybrid:.3}, dense {dense:.3}");
    assert!(hybrid >= 0.9, "{hybrid}: {missed:#?}");
    let info = client.info(&InfoRequest {}).await.unwrap();
    assert!(
        info.backend.starts_with("qdrant server"),
        "{}",
        info.backend
    );
    let mine = info
        .collections
        .iter()
        .find(|c| c.name == collection)
        .unwrap();
    assert_eq!(
        (mine.points, mine.dims),
        (report.chunks as u64, 384),
        "{mine:?}"
    );
    // A filter narrows the search to one source.
    let sources: BTreeMap<String, String> = client
        .sources(&SourcesRequest {
            collection: collection.clone(),
        })
        .await
        .unwrap()
        .digests
        .into_iter()
        .collect();
    assert_eq!(sources.len(), 44);
    let tern = sources
        .keys()
        .find(|s| s.ends_with("03-arctic-tern.md"))
        .unwrap()
        .clone();
    let hits = client
        .search(&SearchRequest {
            collection: collection.clone(),
            query: "Saturn".into(),
            limit: 10,
            filter: by_source(&tern),
            dense_only: false,
        })
        .await
        .unwrap()
        .hits;
    assert!(!hits.is_empty());
    assert!(
        hits.iter()
            .all(|h| h.payload_json.contains("03-arctic-tern.md"))
    );
    mesh.shutdown().await;

    // Restarted, the memory service finds everything still there.
    let (mesh, client) = local(&config, &[Part::Engine, Part::Memory]).await;
    let hits = search(
        &client,
        &collection,
        "How far does an Arctic tern fly in a year?",
        3,
        false,
    )
    .await;
    assert!(
        source_of(&hits[0].2).ends_with("03-arctic-tern.md"),
        "{hits:?}"
    );
    let deleted = client
        .delete(&DeleteRequest {
            collection: collection.clone(),
            ids: vec![],
            filter: by_source(&tern),
        })
        .await
        .unwrap()
        .deleted;
    assert!(deleted >= 1);
    let hits = search(&client, &collection, "Arctic tern migration", 10, false).await;
    assert!(
        hits.iter().all(|(_, _, p)| source_of(p) != tern),
        "{hits:?}"
    );
    mesh.shutdown().await;

    // A wrong API key is a clear error at start, not a hang.
    config.memory.qdrant_api_key = Secret::new("wrong");
    let err = match hearth_memory::open_store(&config, dir.path()).await {
        Ok(_) => panic!("a wrong API key was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("API key") && !err.contains(&qdrant.api_key),
        "{err}"
    );
}
