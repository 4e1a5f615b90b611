//! Ingestion: files → text → chunks → the memory service.
//!
//! Markdown, plain text, HTML (rendered to text), PDF (through
//! `pdf-extract`) and source code are read; Markdown is split along its
//! structure (headings, paragraphs, code fences) and everything else along
//! paragraphs and lines (`text-splitter`), into chunks the embedding model
//! takes whole. Each chunk's id is derived from its source and place, and
//! each carries the file's digest, so re-ingesting is incremental: an
//! unchanged file is skipped, a changed one has its chunks replaced, and a
//! file that is gone has its chunks deleted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hearth_mesh::clients::MemoryClient;
use hearth_proto::v1::{Chunk, DeleteRequest, Filter, SourcesRequest, UpsertRequest};
use serde::Serialize;
use sha2::{Digest, Sha256};
use text_splitter::{ChunkConfig, MarkdownSplitter, TextSplitter};

/// Largest file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Chunk size range, in characters (the embedding model reads ~256 tokens).
const CHUNK_CHARS: std::ops::Range<usize> = 400..900;
/// Characters shared between neighbouring chunks.
const OVERLAP: usize = 80;
/// Chunks sent per upsert.
const BATCH: usize = 32;

/// What ingestion did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    /// Files looked at.
    pub files: usize,
    /// Unchanged since the last ingestion: skipped.
    pub unchanged: usize,
    /// New files ingested.
    pub added: usize,
    /// Changed files re-ingested.
    pub changed: usize,
    /// Files gone whose chunks were deleted.
    pub removed: usize,
    /// Files that could not be read, with why.
    pub skipped: Vec<(String, String)>,
    /// Chunks stored.
    pub chunks: usize,
    /// Chunks deleted.
    pub deleted: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Chunks per second.
    pub chunks_per_s: f64,
}

/// Why ingestion stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The path cannot be read.
    #[error("{path}: {reason}")]
    Path {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The memory service refused or failed.
    #[error("the memory service: {0}")]
    Memory(String),
}

fn memory(s: tonic::Status) -> IngestError {
    IngestError::Memory(s.message().to_string())
}

/// The file kinds ingested, by extension.
fn kind(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "md" | "markdown" => "markdown",
        "txt" | "text" | "rst" | "org" | "csv" | "log" => "text",
        "html" | "htm" => "html",
        "pdf" => "pdf",
        "rs" | "py" | "js" | "ts" | "go" | "java" | "c" | "h" | "cc" | "cpp" | "hpp" | "rb"
        | "sh" | "toml" | "yaml" | "yml" | "json" | "sql" | "kt" | "swift" | "cs" | "proto" => {
            "code"
        }
        _ => return None,
    })
}

/// The files under `root` that can be ingested (hidden entries, `target`
/// and `node_modules` skipped), sorted.
pub fn files(root: &Path) -> Result<Vec<PathBuf>, IngestError> {
    let meta = std::fs::metadata(root).map_err(|e| IngestError::Path {
        path: root.display().to_string(),
        reason: e.to_string(),
    })?;
    if meta.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "target" || name == "node_modules" {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && kind(&e.path()).is_some() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A file's text, by its kind.
fn extract(path: &Path, bytes: &[u8]) -> Result<String, String> {
    match kind(path) {
        Some("html") => html2text::config::plain_no_decorate()
            .string_from_read(bytes, 10_000)
            .map_err(|e| e.to_string()),
        Some("pdf") => {
            // pdf-extract panics on some malformed files by design: contain it.
            let bytes = bytes.to_vec();
            std::panic::catch_unwind(move || pdf_extract::extract_text_from_mem(&bytes))
                .map_err(|_| "the PDF could not be parsed".to_string())?
                .map_err(|e| e.to_string())
        }
        _ => Ok(String::from_utf8_lossy(bytes).into_owned()),
    }
}

/// A chunk of a document: its text and byte offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// Byte offset in the extracted text.
    pub start: usize,
    /// The chunk.
    pub text: String,
}

/// Splits a document's text along its structure.
pub fn split(text: &str, markdown: bool) -> Vec<Piece> {
    let config = ChunkConfig::new(CHUNK_CHARS)
        .with_overlap(OVERLAP)
        .unwrap_or_else(|_| ChunkConfig::new(CHUNK_CHARS))
        .with_trim(true);
    let pieces: Vec<(usize, &str)> = if markdown {
        MarkdownSplitter::new(config).chunk_indices(text).collect()
    } else {
        TextSplitter::new(config).chunk_indices(text).collect()
    };
    pieces
        .into_iter()
        .filter(|(_, t)| !t.trim().is_empty())
        .map(|(start, t)| Piece {
            start,
            text: t.to_string(),
        })
        .collect()
}

fn title_of(text: &str, path: &Path) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("# ").map(str::trim))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The chunk id for piece `index` of `source` in `collection`.
pub fn chunk_id(collection: &str, source: &str, index: usize) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("hearth:{collection}:{source}#{index}").as_bytes(),
    )
    .to_string()
}

fn by_source(source: &str) -> Filter {
    Filter {
        equals: [("source".to_string(), source.to_string())].into(),
        since: None,
        until: None,
    }
}

/// Ingests `root` (a file or a directory) into `collection`.
/// `progress(done, total)` hears about each file.
pub async fn ingest(
    client: &MemoryClient,
    collection: &str,
    root: &Path,
    progress: &(dyn Fn(usize, usize) + Send + Sync),
) -> Result<IngestReport, IngestError> {
    let t0 = Instant::now();
    let root = std::fs::canonicalize(root).map_err(|e| IngestError::Path {
        path: root.display().to_string(),
        reason: e.to_string(),
    })?;
    let files = files(&root)?;
    let known: BTreeMap<String, String> = client
        .sources(&SourcesRequest {
            collection: collection.to_string(),
        })
        .await
        .map_err(memory)?
        .digests
        .into_iter()
        .collect();
    let mut report = IngestReport {
        files: files.len(),
        ..Default::default()
    };
    let mut seen = Vec::new();
    for (i, path) in files.iter().enumerate() {
        progress(i, files.len());
        let source = path.display().to_string();
        seen.push(source.clone());
        let read = std::fs::metadata(path)
            .map_err(|e| e.to_string())
            .and_then(|m| {
                if m.len() > MAX_FILE_BYTES {
                    Err(format!("{} bytes; the limit is {MAX_FILE_BYTES}", m.len()))
                } else {
                    std::fs::read(path).map_err(|e| e.to_string())
                }
            });
        let bytes = match read {
            Ok(b) => b,
            Err(why) => {
                report.skipped.push((source, why));
                continue;
            }
        };
        let digest: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let previous = known.get(&source);
        if previous == Some(&digest) {
            report.unchanged += 1;
            continue;
        }
        let text = match extract(path, &bytes) {
            Ok(t) => t,
            Err(why) => {
                report.skipped.push((source, why));
                continue;
            }
        };
        if previous.is_some() {
            report.deleted += client
                .delete(&DeleteRequest {
                    collection: collection.to_string(),
                    ids: vec![],
                    filter: Some(by_source(&source)),
                })
                .await
                .map_err(memory)?
                .deleted;
            report.changed += 1;
        } else {
            report.added += 1;
        }
        let title = title_of(&text, path);
        let ts = now();
        let chunks: Vec<Chunk> = split(&text, kind(path) == Some("markdown"))
            .into_iter()
            .enumerate()
            .map(|(n, p)| Chunk {
                id: chunk_id(collection, &source, n),
                payload_json: serde_json::json!({
                    "source": source,
                    "title": title,
                    "start": p.start,
                    "end": p.start + p.text.len(),
                    "digest": digest,
                    "kind": "document",
                    "ts": ts,
                })
                .to_string(),
                text: p.text,
            })
            .collect();
        for batch in chunks.chunks(BATCH) {
            client
                .upsert(&UpsertRequest {
                    collection: collection.to_string(),
                    chunks: batch.to_vec(),
                })
                .await
                .map_err(memory)?;
            report.chunks += batch.len();
        }
    }
    // Files that were ingested from under this root and are gone now.
    let prefix = root.display().to_string();
    for source in known.keys() {
        let under = source == &prefix || source.starts_with(&format!("{prefix}/"));
        if under && !seen.contains(source) {
            report.deleted += client
                .delete(&DeleteRequest {
                    collection: collection.to_string(),
                    ids: vec![],
                    filter: Some(by_source(source)),
                })
                .await
                .map_err(memory)?
                .deleted;
            report.removed += 1;
        }
    }
    progress(files.len(), files.len());
    report.seconds = t0.elapsed().as_secs_f64();
    report.chunks_per_s = report.chunks as f64 / report.seconds.max(1e-9);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_splits_along_its_structure_and_offsets_point_back() {
        let mut text = String::from("# Title\n\nIntro paragraph.\n\n");
        for i in 0..12 {
            text.push_str(&format!(
                "## Section {i}\n\n{}\n\n",
                format!("Sentence number {i} about the topic at hand. ").repeat(6)
            ));
        }
        let pieces = split(&text, true);
        assert!(pieces.len() > 3, "{}", pieces.len());
        for p in &pieces {
            assert!(
                p.text.chars().count() <= CHUNK_CHARS.end,
                "{}",
                p.text.len()
            );
            assert_eq!(&text[p.start..p.start + p.text.len()], p.text);
        }
        assert!(
            pieces
                .iter()
                .skip(1)
                .all(|p| p.text.starts_with("## ") || !p.text.contains("\n## "))
        );
        assert_eq!(title_of(&text, Path::new("x.md")), "Title");
    }

    #[test]
    fn chunk_ids_are_stable_and_distinct() {
        assert_eq!(chunk_id("d", "/a.md", 0), chunk_id("d", "/a.md", 0));
        assert_ne!(chunk_id("d", "/a.md", 0), chunk_id("d", "/a.md", 1));
        assert_ne!(chunk_id("d", "/a.md", 0), chunk_id("e", "/a.md", 0));
    }

    #[test]
    fn html_is_read_as_text_and_unknown_files_are_left_alone() {
        let t = extract(
            Path::new("p.html"),
            b"<html><body><h1>Hi</h1><p>there <b>you</b></p><script>x()</script></body></html>",
        )
        .unwrap();
        assert!(
            t.contains("Hi") && t.contains("there you") && !t.contains("<b>"),
            "{t}"
        );
        assert_eq!(kind(Path::new("a.bin")), None);
        assert_eq!(kind(Path::new("a.PDF")), Some("pdf"));
        assert!(extract(Path::new("broken.pdf"), b"%PDF-1.4 not really").is_err());
        let pdf = extract(
            Path::new("hello.pdf"),
            include_bytes!("../testdata/hello.pdf"),
        )
        .unwrap();
        assert!(pdf.contains("Hearth keeps its memory in Qdrant."), "{pdf}");
    }
}
