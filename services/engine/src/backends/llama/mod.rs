//! The embedded llama.cpp backend (crate `llama-cpp-2`): a GGUF model run in
//! this process, with no server, no network and no key.
//!
//! - The chat template comes from the file's `tokenizer.chat_template`
//!   metadata, else from the catalog's template for the model's family
//!   (Gemma 3 270M's file carries none), else from configuration.
//! - When tools are offered, the reply is constrained by a grammar (built by
//!   llama.cpp from a JSON schema, see [`prompt`]) to one well-formed tool
//!   call or answer, so even a small base model's calls parse.
//! - Decoding runs on a dedicated thread ([`worker`]), never on the async
//!   runtime; concurrent requests are decoded together in one batch, and a
//!   conversation's shared prefix is reused from the KV cache.
//! - Usage reports tokens in and out and FLOPs (2 × parameters × tokens);
//!   energy is absent (no meter here), never invented.

pub mod embed;
pub mod merge;
pub mod prompt;
pub mod worker;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use futures::StreamExt;
use hearth_proto::v1::{GenerateChunk, GenerateRequest, RenderResponse, ToolCall, ToolSpec, Usage};
use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::llama_backend::LlamaBackend as Llama;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use tokio::sync::mpsc;

use crate::backend::{Backend, ChunkStream, EngineError};
use prompt::Reply;
use worker::{Event, Job, Limits};

/// How the embedded engine runs.
#[derive(Debug, Clone)]
pub struct LlamaOptions {
    /// The GGUF file.
    pub path: PathBuf,
    /// The name usage reports carry.
    pub name: String,
    /// A llama.cpp template name (`gemma`, `chatml`, `llama3`, …) used when
    /// the file carries no template.
    pub fallback_template: Option<String>,
    /// (family id, template name): a file with no template and no fallback
    /// gets the template of the family its architecture starts with
    /// (`gemma3` → `gemma`).
    pub family_templates: Vec<(String, String)>,
    /// Parallel generations decoded together.
    pub slots: u32,
    /// Tokens per generation (prompt and output).
    pub context: u32,
    /// CPU threads (0: all cores).
    pub threads: u32,
    /// Most tokens a reply may have when the request sets none.
    pub max_tokens: u32,
    /// Sampling seed.
    pub seed: u32,
    /// A LoRA adapter (GGUF) applied over the model, and its scale.
    pub lora: Option<(PathBuf, f32)>,
    /// Sampling temperature for requests that set none (None: greedy).
    pub temperature: Option<f32>,
    /// Most draft tokens one decode step verifies by prompt lookup (0: none).
    pub draft_tokens: u32,
}

/// The embedded llama.cpp backend.
pub struct LlamaCppBackend {
    model: Arc<LlamaModel>,
    template: LlamaChatTemplate,
    jobs: Mutex<std::sync::mpsc::Sender<Job>>,
    opts: LlamaOptions,
    adapter: Option<crate::adapters::Chosen>,
}

impl std::fmt::Debug for LlamaCppBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaCppBackend")
            .field("model", &self.opts.name)
            .field("path", &self.opts.path)
            .finish()
    }
}

static BACKEND: OnceLock<Result<Llama, String>> = OnceLock::new();

/// llama.cpp's process-wide backend (it may be started only once).
pub(crate) fn llama() -> Result<&'static Llama, EngineError> {
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            Llama::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::NotConfigured(format!("llama.cpp failed to start: {e}")))
}

fn load_error(path: &Path, why: impl std::fmt::Display) -> EngineError {
    EngineError::NotConfigured(format!("cannot load the model {}: {why}", path.display()))
}

impl LlamaCppBackend {
    /// Loads the model and starts the decode thread. Blocking: call it from
    /// a blocking context (it reads the whole file).
    pub fn load(opts: LlamaOptions) -> Result<Self, EngineError> {
        if !opts.path.is_file() {
            return Err(load_error(&opts.path, "no such file"));
        }
        let backend = llama()?;
        let mut model =
            LlamaModel::load_from_file(backend, &opts.path, &LlamaModelParams::default())
                .map_err(|e| load_error(&opts.path, e))?;
        let mut adapter = match &opts.lora {
            None => None,
            Some((path, scale)) => {
                if !path.is_file() {
                    return Err(load_error(
                        path,
                        "no such file (the LoRA adapter in [engine] lora)",
                    ));
                }
                let a = model.lora_adapter_init(path).map_err(|e| {
                    load_error(
                        path,
                        format!(
                            "llama.cpp refused the LoRA adapter ({e}): not a GGUF LoRA file, \
                             or made for another base model"
                        ),
                    )
                })?;
                Some((a, *scale))
            }
        };
        let template = match model.chat_template(None) {
            Ok(t) => t,
            Err(_) => {
                let arch = model
                    .meta_val_str("general.architecture")
                    .unwrap_or_default();
                let name = opts
                    .fallback_template
                    .clone()
                    .or_else(|| {
                        opts.family_templates
                            .iter()
                            .find(|(family, _)| arch.starts_with(family.as_str()))
                            .map(|(_, t)| t.clone())
                    })
                    .ok_or_else(|| {
                        load_error(
                            &opts.path,
                            format!(
                                "the file has no chat template and no family is known for its \
                                 architecture `{arch}` (set engine.template to a llama.cpp \
                                 template name such as chatml)"
                            ),
                        )
                    })?;
                tracing::debug!(template = %name, "the model file has no chat template; using the family's");
                LlamaChatTemplate::new(&name).map_err(|e| load_error(&opts.path, e))?
            }
        };
        let model = Arc::new(model);
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get() as i32)
        } else {
            opts.threads as i32
        };
        let slots = opts.slots.clamp(1, 64);
        let slot_context = opts.context.max(256);
        let n_ctx = slot_context.checked_mul(slots).ok_or_else(|| {
            EngineError::NotConfigured("engine.context × engine.slots overflows".into())
        })?;
        // Tokens handed to llama.cpp per decode call; it computes them in
        // micro-batches of `n_ubatch`. The micro-batch sizes the compute
        // buffer (for a 262k vocabulary, 512 tokens' logits alone are 512 MB)
        // and 128 prefills as fast on a CPU.
        let n_batch = 512u32;
        let n_ubatch = 128u32;
        // A sliding-window model keeps only its window per sequence in the
        // windowed layers (llama.cpp's default keeps the whole context there
        // too, several times the memory); prefix reuse checks the window.
        let arch = model
            .meta_val_str("general.architecture")
            .unwrap_or_default();
        let n_swa = model
            .meta_val_str(&format!("{arch}.attention.sliding_window"))
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_batch)
            .with_n_ubatch(n_ubatch)
            .with_n_seq_max(slots)
            .with_swa_full(false)
            // 8-bit keys and values: half the memory of f16, with no
            // measurable change in what small models say.
            .with_type_k(KvCacheType::Q8_0)
            .with_type_v(KvCacheType::Q8_0)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let limits = Limits {
            slots: slots as usize,
            slot_context: slot_context as usize,
            n_batch: n_batch as usize,
            n_swa,
            draft: opts.draft_tokens as usize,
        };
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let worker_model = model.clone();
        std::thread::Builder::new()
            .name("llama-decode".into())
            .spawn(move || {
                // The context borrows the model, so both live on this thread.
                let ctx = match worker_model.new_context(backend, params) {
                    Ok(mut c) => {
                        if let Some((a, scale)) = adapter.as_mut()
                            && let Err(e) = c.lora_adapter_set(a, *scale)
                        {
                            let _ = ready_tx.send(Err(format!("applying the LoRA adapter: {e}")));
                            return;
                        }
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                worker::run(worker_model.clone(), ctx, rx, limits);
            })
            .map_err(|e| load_error(&opts.path, e))?;
        ready_rx
            .recv()
            .map_err(|e| load_error(&opts.path, e))?
            .map_err(|e| load_error(&opts.path, format!("creating the context: {e}")))?;
        tracing::info!(
            model = %opts.name,
            path = %opts.path.display(),
            params = model.n_params(),
            slots,
            slot_context,
            threads,
            lora = ?opts.lora.as_ref().map(|(p, _)| p.display().to_string()),
            "llama.cpp model loaded"
        );
        Ok(Self {
            model,
            template,
            jobs: Mutex::new(tx),
            opts,
            adapter: None,
        })
    }

    /// Records which adapter (and from where) this backend runs with.
    pub fn with_adapter(mut self, adapter: Option<crate::adapters::Chosen>) -> Self {
        self.adapter = adapter;
        self
    }

    /// The adapter applied over the model, if any.
    pub fn adapter(&self) -> Option<&crate::adapters::Chosen> {
        self.adapter.as_ref()
    }

    /// Parameters of the loaded model.
    pub fn n_params(&self) -> u64 {
        self.model.n_params()
    }

    /// The prompt text for a request: exactly what [`Backend::generate`]
    /// tokenizes and decodes.
    pub fn render_prompt(&self, req: &GenerateRequest) -> Result<String, EngineError> {
        self.template_messages(prompt::fold_messages(&req.messages, &req.tools), true)
    }

    fn template_messages(
        &self,
        folded: Vec<prompt::TemplateMessage>,
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        let chat = folded
            .into_iter()
            .map(|m| LlamaChatMessage::new(m.role.to_string(), m.content))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EngineError::InvalidRequest(format!("a message holds a NUL byte: {e}")))?;
        self.model
            .apply_chat_template(&self.template, &chat, add_generation_prompt)
            .map_err(|e| EngineError::InvalidRequest(format!("applying the chat template: {e}")))
    }

    fn tokenize(&self, text: &str, add_bos: bool) -> Vec<llama_cpp_2::token::LlamaToken> {
        self.model.vocab().tokenize(text.as_bytes(), add_bos, true)
    }

    /// The prompt and, when the request's last message is the assistant's,
    /// that reply as the model writes it (the constrained JSON when tools
    /// are offered) followed by the template's end-of-turn marker.
    pub fn render_row(&self, req: &GenerateRequest) -> Result<RenderResponse, EngineError> {
        let (history, reply) = match req.messages.split_last() {
            Some((last, rest)) if last.role() == hearth_proto::v1::ChatRole::Assistant => {
                (rest, Some(last))
            }
            _ => (req.messages.as_slice(), None),
        };
        let mut prompt_req = req.clone();
        prompt_req.messages = history.to_vec();
        let prompt_text = self.render_prompt(&prompt_req)?;
        let mut out = RenderResponse {
            prompt_ids: self
                .tokenize(&prompt_text, true)
                .into_iter()
                .map(|t| t.0)
                .collect(),
            ..Default::default()
        };
        if let Some(reply) = reply {
            let written = prompt::written_reply(reply, &req.tools)?;
            let mut folded = prompt::fold_messages(history, &req.tools);
            folded.push(prompt::TemplateMessage {
                role: "assistant",
                content: written.clone(),
            });
            let whole = self.template_messages(folded, false)?;
            // The template's own rendering of the finished turn, after the
            // prompt: the reply and its end-of-turn marker.
            let completion = match whole.strip_prefix(prompt_text.as_str()) {
                Some(rest) => rest.trim_end().to_string(),
                None => {
                    return Err(EngineError::InvalidRequest(
                        "the chat template renders a finished turn differently from a prompt; \
                         its replies cannot be made into training rows"
                            .into(),
                    ));
                }
            };
            out.completion_ids = self
                .tokenize(&completion, false)
                .into_iter()
                .map(|t| t.0)
                .collect();
            out.completion = completion;
        }
        out.prompt = prompt_text;
        Ok(out)
    }

    /// The grammar a reply must follow when tools are offered.
    fn grammar(
        &self,
        req: &GenerateRequest,
        max_tokens: usize,
    ) -> Result<Option<LlamaSampler>, EngineError> {
        if req.tools.is_empty() {
            return Ok(None);
        }
        // Room for the answer inside the token budget, roughly 3 characters a token.
        let answer_chars = max_tokens.saturating_mul(3).max(16);
        // When the model must answer now, the answer alternative alone.
        let tools: &[ToolSpec] = if req.answer_now { &[] } else { &req.tools };
        let schema = prompt::reply_schema(tools, answer_chars, &[])?;
        let unenforceable = |e: String| {
            EngineError::InvalidRequest(format!("a tool's input schema cannot be enforced: {e}"))
        };
        let gbnf = match llama_cpp_2::json_schema_to_grammar(&schema) {
            Ok(g) => g,
            Err(_) => {
                // One tool's schema spoils the whole grammar: find which, and
                // constrain its arguments only to be an object rather than
                // refuse every call.
                let loose: Vec<String> = tools
                    .iter()
                    .filter(|t| {
                        prompt::reply_schema(std::slice::from_ref(*t), answer_chars, &[])
                            .map(|s| llama_cpp_2::json_schema_to_grammar(&s).is_err())
                            .unwrap_or(true)
                    })
                    .map(|t| t.name.clone())
                    .collect();
                tracing::warn!(tools = ?loose, "llama.cpp cannot enforce these tools' input schemas; their arguments are only kept to a JSON object");
                let schema = prompt::reply_schema(tools, answer_chars, &loose)?;
                llama_cpp_2::json_schema_to_grammar(&schema)
                    .map_err(|e| unenforceable(e.to_string()))?
            }
        };
        LlamaSampler::grammar(&self.model, &gbnf, "root")
            .map(Some)
            .map_err(|e| unenforceable(e.to_string()))
    }

    /// The sampler chain: greedy at temperature 0 (the default), else
    /// top-k/top-p/temperature; DRY ("don't repeat yourself", llama.cpp's
    /// defaults) first, against the loops small models fall into.
    fn sampler(&self, req: &GenerateRequest) -> LlamaSampler {
        let temperature = req.temperature.or(self.opts.temperature).unwrap_or(0.0);
        let mut chain = vec![LlamaSampler::dry(
            &self.model,
            0.8,
            1.75,
            2,
            256,
            ["\n", ":", "\"", "*"],
        )];
        if temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
        } else {
            chain.push(LlamaSampler::top_k(40));
            chain.push(LlamaSampler::top_p(0.95, 1));
            chain.push(LlamaSampler::temp(temperature));
            chain.push(LlamaSampler::dist(self.opts.seed));
        }
        LlamaSampler::chain_simple(chain)
    }
}

#[async_trait::async_trait]
impl Backend for LlamaCppBackend {
    fn kind(&self) -> hearth_proto::v1::EngineBackend {
        hearth_proto::v1::EngineBackend::LlamaCpp
    }

    fn default_model(&self) -> &str {
        &self.opts.name
    }

    fn render(&self, req: GenerateRequest) -> Result<RenderResponse, EngineError> {
        if req.messages.is_empty() {
            return Err(EngineError::InvalidRequest("no messages".into()));
        }
        self.render_row(&req)
    }

    async fn generate(&self, req: GenerateRequest) -> Result<ChunkStream, EngineError> {
        if req.messages.is_empty() {
            return Err(EngineError::InvalidRequest("no messages".into()));
        }
        let max_tokens = if req.max_tokens == 0 {
            self.opts.max_tokens
        } else {
            req.max_tokens.min(self.opts.context)
        } as usize;
        let text = self.render_prompt(&req)?;
        let tokens = self.tokenize(&text, true);
        let grammar = self.grammar(&req, max_tokens)?;
        let sampler = self.sampler(&req);
        let (out, rx) = mpsc::unbounded_channel();
        let job = Job {
            prompt: tokens,
            sampler,
            grammar,
            max_tokens,
            stop: req.stop.clone(),
            out,
        };
        self.jobs
            .lock()
            .map_err(|_| EngineError::NotConfigured("the decode thread failed".into()))?
            .send(job)
            .map_err(|_| EngineError::NotConfigured("the decode thread has stopped".into()))?;
        let constrained = !req.tools.is_empty();
        let tools = req.tools;
        let model_name = if req.model.is_empty() {
            self.opts.name.clone()
        } else {
            req.model
        };
        let params = self.model.n_params() as f64;
        let mut whole = String::new();
        // Time to the first decoded token, constrained replies included
        // (they stream nothing until they parse).
        let started = std::time::Instant::now();
        let mut first: Option<f64> = None;
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(move |ev| {
            if first.is_none() && matches!(ev, Event::Piece(_) | Event::Done { .. }) {
                first = Some(started.elapsed().as_secs_f64() * 1e3);
            }
            match ev {
                Event::Piece(p) if constrained => {
                    whole.push_str(&p);
                    Ok(GenerateChunk::default())
                }
                Event::Piece(p) => Ok(GenerateChunk {
                    delta: p,
                    ..Default::default()
                }),
                Event::Error(e) => Err(EngineError::InvalidRequest(e)),
                Event::Done {
                    tokens_in,
                    tokens_cached,
                    tokens_out,
                    finish,
                } => {
                    let usage = Usage {
                        tokens_in,
                        tokens_cached,
                        tokens_out,
                        model: model_name.clone(),
                        backend: hearth_proto::v1::EngineBackend::LlamaCpp.into(),
                        // Cached prompt tokens were not computed again.
                        flops: Some(2.0 * params * (tokens_in - tokens_cached + tokens_out) as f64),
                        ttft_ms: first.unwrap_or_default(),
                        calls: 1,
                        ..Default::default()
                    };
                    let mut chunk = GenerateChunk {
                        finish_reason: hearth_proto::v1::FinishReason::from_name(finish)
                            .unwrap_or(hearth_proto::v1::FinishReason::Stop)
                            .into(),
                        usage: Some(usage),
                        ..Default::default()
                    };
                    if constrained {
                        tracing::debug!(reply = %whole, "constrained reply");
                        match prompt::parse_reply(&whole, &tools) {
                            Ok(Reply::Answer(a)) => chunk.delta = a,
                            Ok(Reply::Call { name, arguments }) => {
                                chunk.tool_calls.push(ToolCall {
                                    id: format!("call_{}", uuid_like(&whole)),
                                    name,
                                    arguments_json: arguments,
                                });
                                chunk.finish_reason =
                                    hearth_proto::v1::FinishReason::ToolCalls.into();
                            }
                            Err(e) => return Err(EngineError::Malformed(e)),
                        }
                    }
                    Ok(chunk)
                }
            }
        });
        // Constrained replies stream nothing until they parse; drop the
        // empty placeholders.
        let stream = stream.filter(|c| {
            let keep = match c {
                Ok(c) => !c.delta.is_empty() || !c.tool_calls.is_empty() || c.usage.is_some(),
                Err(_) => true,
            };
            futures::future::ready(keep)
        });
        Ok(stream.boxed())
    }
}

/// A short id for a tool call, unique enough within one conversation.
fn uuid_like(seed: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    format!("{:016x}", RandomState::new().hash_one(seed))
}
