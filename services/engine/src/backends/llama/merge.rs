//! Merging a LoRA adapter into its base model, once, so the adapter costs
//! nothing per token.
//!
//! llama.cpp applies a LoRA adapter at run time as two extra small matrix
//! products beside every adapted projection; on the default model that made
//! decoding about 15% slower. Folding the adapter into the weights —
//! `W' = W + s·B·A` with `s = scale·alpha/rank`, as llama.cpp scales it —
//! gives the same model at the base model's speed. The merged file is made
//! once per (base, adapter, scale) and kept in the models directory's
//! `merged/`; a later start reuses it.
//!
//! The adapted tensors are de-quantized, merged in f32 and stored as Q8_0
//! (a quantization fine enough to keep the adapter's small change, where
//! the base model's 4-bit blocks would round much of it away); every other
//! tensor and all metadata are copied unchanged. The work is done by
//! ggml's own GGUF reader and writer and its (de)quantizers, through
//! `llama-cpp-sys-2`: this module is the one place Hearth calls C directly.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::ptr;

use llama_cpp_sys_2 as sys;
use sha2::{Digest, Sha256};

/// Why an adapter could not be merged (the caller then applies it at run
/// time instead).
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A file could not be read or written.
    #[error("{path}: {why}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The adapter does not fit the model.
    #[error("the adapter does not fit the model: {0}")]
    Mismatch(String),
}

fn io(path: &Path, why: impl std::fmt::Display) -> MergeError {
    MergeError::Io {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// The merged model for `base` with `adapter` at `scale`: made in
/// `dir` on first use, found there afterwards.
pub fn merged(base: &Path, adapter: &Path, scale: f32, dir: &Path) -> Result<PathBuf, MergeError> {
    let stem = base.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let base_len = std::fs::metadata(base).map_err(|e| io(base, e))?.len();
    let name = format!(
        "{stem}-{base_len}+{}-x{scale}.gguf",
        &sha256_of(adapter)?[..16]
    );
    let out = dir.join(name);
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let started = std::time::Instant::now();
    let tmp = dir.join(format!(".merging-{}", std::process::id()));
    let made = merge_into(base, adapter, scale, &tmp);
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &out).map_err(|e| io(&out, e))?;
    tracing::info!(
        model = %out.display(),
        ms = started.elapsed().as_millis() as u64,
        "merged the adapter into the model (once; reused from now on)"
    );
    Ok(out)
}

fn sha256_of(path: &Path) -> Result<String, MergeError> {
    let mut f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// A GGUF file read whole (metadata and tensor data), freed when dropped.
struct Gguf {
    gguf: *mut sys::gguf_context,
    ctx: *mut sys::ggml_context,
}

impl Gguf {
    fn read(path: &Path) -> Result<Self, MergeError> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io(path, "a NUL in the path"))?;
        let mut ctx: *mut sys::ggml_context = ptr::null_mut();
        let params = sys::gguf_init_params {
            no_alloc: false,
            ctx: &mut ctx,
        };
        // SAFETY: `c` is a valid C string; `ctx` outlives the call, which
        // sets it to a context owning the tensors' data.
        let gguf = unsafe { sys::gguf_init_from_file(c.as_ptr(), params) };
        if gguf.is_null() || ctx.is_null() {
            return Err(io(path, "not a GGUF file ggml can read"));
        }
        Ok(Self { gguf, ctx })
    }

    /// The tensor named `name`, if the file has one.
    fn tensor(&self, name: &str) -> Option<*mut sys::ggml_tensor> {
        let c = CString::new(name).ok()?;
        // SAFETY: `self.ctx` is live; `c` is a valid C string.
        let t = unsafe { sys::ggml_get_tensor(self.ctx, c.as_ptr()) };
        (!t.is_null()).then_some(t)
    }

    /// The tensors' names, in the file's order.
    fn names(&self) -> Vec<String> {
        // SAFETY: `self.gguf` is live; ids are in range; the names it
        // returns are NUL-terminated and live as long as it.
        unsafe {
            (0..sys::gguf_get_n_tensors(self.gguf))
                .map(|i| {
                    CStr::from_ptr(sys::gguf_get_tensor_name(self.gguf, i))
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        }
    }

    /// A float metadata value, if present with that type.
    fn f32_of(&self, key: &str) -> Option<f32> {
        let c = CString::new(key).ok()?;
        // SAFETY: `self.gguf` is live; the value is read only when the key
        // exists with the f32 type.
        unsafe {
            let id = sys::gguf_find_key(self.gguf, c.as_ptr());
            (id >= 0 && sys::gguf_get_kv_type(self.gguf, id) == sys::GGUF_TYPE_FLOAT32)
                .then(|| sys::gguf_get_val_f32(self.gguf, id))
        }
    }
}

impl Drop for Gguf {
    fn drop(&mut self) {
        // SAFETY: both were made by gguf_init_from_file and are freed once.
        unsafe {
            sys::gguf_free(self.gguf);
            sys::ggml_free(self.ctx);
        }
    }
}

/// A 2-D tensor's shape: (elements per row, rows).
fn shape(t: *const sys::ggml_tensor) -> (i64, i64) {
    // SAFETY: `t` is a live tensor of a live context.
    let ne = unsafe { (*t).ne };
    (ne[0], ne[1] * ne[2] * ne[3])
}

/// A tensor's values as f32.
fn floats(t: *const sys::ggml_tensor) -> Result<Vec<f32>, MergeError> {
    let (cols, rows) = shape(t);
    let n =
        usize::try_from(cols * rows).map_err(|_| MergeError::Mismatch("a tensor's size".into()))?;
    let mut out = vec![0f32; n];
    // SAFETY: `t` is live and holds `n` elements of its type, contiguous;
    // `out` has room for `n` floats; to_float converts whole blocks (the
    // row length of every ggml tensor is a multiple of its block size).
    unsafe {
        let ty = (*t).type_;
        if ty == sys::GGML_TYPE_F32 {
            ptr::copy_nonoverlapping((*t).data as *const f32, out.as_mut_ptr(), n);
        } else {
            let traits = sys::ggml_get_type_traits(ty);
            let Some(to_float) = traits.as_ref().and_then(|t| t.to_float) else {
                return Err(MergeError::Mismatch(format!(
                    "tensor type {ty} cannot be read as floats"
                )));
            };
            to_float((*t).data, out.as_mut_ptr(), n as i64);
        }
    }
    Ok(out)
}

fn merge_into(base: &Path, adapter: &Path, scale: f32, out: &Path) -> Result<(), MergeError> {
    let model = Gguf::read(base)?;
    let lora = Gguf::read(adapter)?;
    let alpha = lora.f32_of("adapter.lora.alpha").unwrap_or(0.0);
    let names = model.names();
    // The adapted tensors: `<name>.lora_a` / `<name>.lora_b` in the adapter.
    let adapted: Vec<(String, _, _)> = names
        .iter()
        .filter_map(|n| {
            let a = lora.tensor(&format!("{n}.lora_a"))?;
            let b = lora.tensor(&format!("{n}.lora_b"))?;
            Some((n.clone(), a, b))
        })
        .collect();
    if adapted.is_empty() {
        return Err(MergeError::Mismatch(
            "it adapts none of the model's tensors".into(),
        ));
    }
    const MERGED: sys::ggml_type = sys::GGML_TYPE_Q8_0;
    // SAFETY: plain queries of ggml's type table.
    let (block, overhead) = unsafe { (sys::ggml_blck_size(MERGED), sys::ggml_tensor_overhead()) };
    let mut bytes = 0usize;
    for (name, _, _) in &adapted {
        let Some(w) = model.tensor(name) else {
            continue;
        };
        let (cols, rows) = shape(w);
        if cols % block != 0 {
            return Err(MergeError::Mismatch(format!(
                "{name}: rows of {cols} do not fit Q8_0 blocks"
            )));
        }
        // SAFETY: a plain size computation.
        bytes += unsafe { sys::ggml_row_size(MERGED, cols) } * rows as usize + overhead;
    }
    // SAFETY: a context of our own for the merged tensors, freed below.
    let merged_ctx = unsafe {
        sys::ggml_init(sys::ggml_init_params {
            mem_size: bytes + overhead * 4 + (1 << 20),
            mem_buffer: ptr::null_mut(),
            no_alloc: false,
        })
    };
    if merged_ctx.is_null() {
        return Err(io(out, "no memory for the merged tensors"));
    }
    let result = (|| {
        // SAFETY: a new empty GGUF, freed below; the base's metadata copied in.
        let gguf = unsafe { sys::gguf_init_empty() };
        if gguf.is_null() {
            return Err(io(out, "no memory for the merged file"));
        }
        // SAFETY: both contexts are live.
        unsafe { sys::gguf_set_kv(gguf, model.gguf) };
        let written = (|| {
            for name in &names {
                let Some(w) = model.tensor(name) else {
                    return Err(io(base, format!("tensor {name} listed but missing")));
                };
                let tensor = match adapted.iter().find(|(n, _, _)| n == name) {
                    None => w,
                    Some((_, a, b)) => merge_one(merged_ctx, name, w, *a, *b, scale, alpha)?,
                };
                // SAFETY: `gguf` is live; the tensor and its data live until
                // the file is written (the contexts are freed after).
                unsafe { sys::gguf_add_tensor(gguf, tensor) };
            }
            let c = CString::new(out.as_os_str().as_encoded_bytes())
                .map_err(|_| io(out, "a NUL in the path"))?;
            // SAFETY: `gguf` is live and every tensor's data is live.
            if unsafe { sys::gguf_write_to_file(gguf, c.as_ptr(), false) } {
                Ok(())
            } else {
                Err(io(out, "ggml could not write the merged model"))
            }
        })();
        // SAFETY: made above, freed once.
        unsafe { sys::gguf_free(gguf) };
        written
    })();
    // SAFETY: made above, freed once, after the file is written.
    unsafe { sys::ggml_free(merged_ctx) };
    result
}

/// `w + s·B·A`, as a new Q8_0 tensor in `ctx` named `name`.
fn merge_one(
    ctx: *mut sys::ggml_context,
    name: &str,
    w: *const sys::ggml_tensor,
    a: *const sys::ggml_tensor,
    b: *const sys::ggml_tensor,
    scale: f32,
    alpha: f32,
) -> Result<*mut sys::ggml_tensor, MergeError> {
    let (cols, rows) = shape(w);
    let (a_cols, rank) = shape(a);
    let (b_cols, b_rows) = shape(b);
    if a_cols != cols || b_rows != rows || b_cols != rank || rank == 0 {
        return Err(MergeError::Mismatch(format!(
            "{name} is {cols}×{rows}, its lora_a {a_cols}×{rank}, its lora_b {b_cols}×{b_rows}"
        )));
    }
    let s = if alpha != 0.0 {
        scale * alpha / rank as f32
    } else {
        scale
    };
    let mut merged = floats(w)?;
    let (a, b) = (floats(a)?, floats(b)?);
    let (cols, rank) = (cols as usize, rank as usize);
    for (o, row) in merged.chunks_exact_mut(cols).enumerate() {
        for (k, a_row) in a.chunks_exact(cols).enumerate() {
            let coef = s * b[o * rank + k];
            if coef != 0.0 {
                for (x, y) in row.iter_mut().zip(a_row) {
                    *x += coef * y;
                }
            }
        }
    }
    let c = CString::new(name).map_err(|_| MergeError::Mismatch(format!("tensor name {name}")))?;
    // SAFETY: `ctx` has room for this tensor (sized by the caller); the
    // quantizer reads rows×cols floats from `merged` and writes that many
    // Q8_0 rows into the tensor's data.
    unsafe {
        let t = sys::ggml_new_tensor_2d(ctx, sys::GGML_TYPE_Q8_0, cols as i64, rows);
        if t.is_null() {
            return Err(MergeError::Mismatch(
                "out of room for the merged tensors".into(),
            ));
        }
        sys::ggml_set_name(t, c.as_ptr());
        sys::ggml_quantize_init(sys::GGML_TYPE_Q8_0);
        sys::ggml_quantize_chunk(
            sys::GGML_TYPE_Q8_0,
            merged.as_ptr(),
            (*t).data,
            0,
            rows,
            cols as i64,
            ptr::null(),
        );
        Ok(t)
    }
}
