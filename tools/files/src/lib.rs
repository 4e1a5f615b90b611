//! The files tool: an MCP server (rmcp) that reads, writes, appends, lists,
//! searches and stats files inside one root directory, and nowhere else.
//!
//! Containment is the operating system's, not string checks: the root is
//! opened once as a capability (`cap-std`), and every path is resolved
//! beneath it (`openat2(RESOLVE_BENEATH)` on Linux), so `..`, absolute paths
//! and symlinks that lead outside the root are refused however they are
//! spelled. Reads and writes have size caps; read-only mode refuses every
//! change. A refused or failed operation is an MCP tool error
//! (`isError: true`) saying why; nothing panics on input.
//!
//! Not for: anything outside its root. The toolhost serves it in-process,
//! `hearth tool files` over stdio or streamable HTTP.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use serde::Deserialize;

/// How the files tool behaves.
#[derive(Debug, Clone)]
pub struct FilesOptions {
    /// The directory every path is relative to (created if missing).
    pub root: PathBuf,
    /// Refuse every write, append and mkdir.
    pub read_only: bool,
    /// Largest read returned, in bytes (longer files are cut, with a marker).
    pub max_read_bytes: usize,
    /// Largest write or append accepted, in bytes.
    pub max_write_bytes: usize,
    /// Most entries a list or search returns.
    pub max_entries: usize,
}

impl FilesOptions {
    /// Defaults for `root`: 1 MiB reads and writes, 1,000 entries.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            read_only: false,
            max_read_bytes: 1024 * 1024,
            max_write_bytes: 1024 * 1024,
            max_entries: 1000,
        }
    }
}

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The path is not a relative path inside the root.
    #[error("`{0}` is refused: paths are relative to the files root and may not leave it")]
    Outside(String),
    /// Read-only mode.
    #[error("the files tool is read-only: `{0}` was not changed")]
    ReadOnly(String),
    /// Content over the cap.
    #[error("{what} is {size} bytes; the limit is {max}")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A malformed glob.
    #[error("`{pattern}` is not a valid glob: {reason}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// The operating system refused or failed.
    #[error("{path}: {reason}")]
    Io {
        /// The path asked for.
        path: String,
        /// What the OS said.
        reason: String,
    },
}

fn io_err(path: &str, e: std::io::Error) -> FilesError {
    // cap-std reports an escape attempt as PermissionDenied with its own
    // message; say it in the tool's words.
    let escaped =
        e.kind() == std::io::ErrorKind::PermissionDenied && e.to_string().contains("outside");
    if escaped {
        return FilesError::Outside(path.to_string());
    }
    FilesError::Io {
        path: path.to_string(),
        reason: e.to_string(),
    }
}

/// Checks a path's spelling: relative, and not empty. `..` components are
/// left to the capability check, which refuses any that would escape.
/// Whitespace around the path is dropped: small models write `" notes.md"`
/// for `notes.md`, and a file whose name starts or ends in a space is
/// almost never what a person meant.
fn relative(path: &str) -> Result<PathBuf, FilesError> {
    let path = path.trim();
    let p = Path::new(path);
    if path.contains('\0')
        || p.is_absolute()
        || p.components()
            .any(|c| matches!(c, Component::Prefix(_) | Component::RootDir))
    {
        return Err(FilesError::Outside(path.to_string()));
    }
    Ok(if path.trim().is_empty() {
        PathBuf::from(".")
    } else {
        p.to_path_buf()
    })
}

/// The file operations, over a root capability (synchronous; the MCP
/// server runs them off the async runtime).
#[derive(Clone)]
pub struct Root {
    dir: Arc<Dir>,
    opts: Arc<FilesOptions>,
}

/// One directory entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    /// Path relative to the root.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: &'static str,
    /// Size in bytes (files).
    pub size: u64,
}

impl Root {
    /// Opens (creating if needed) the root directory.
    pub fn open(opts: FilesOptions) -> Result<Self, FilesError> {
        let root_s = opts.root.display().to_string();
        if !opts.read_only {
            std::fs::create_dir_all(&opts.root).map_err(|e| io_err(&root_s, e))?;
        }
        let dir = Dir::open_ambient_dir(&opts.root, ambient_authority())
            .map_err(|e| io_err(&root_s, e))?;
        Ok(Self {
            dir: Arc::new(dir),
            opts: Arc::new(opts),
        })
    }

    /// The options it runs with.
    pub fn options(&self) -> &FilesOptions {
        &self.opts
    }

    /// Reads up to the cap (from `offset`); says when it was cut.
    pub fn read(&self, path: &str, offset: u64) -> Result<String, FilesError> {
        let rel = relative(path)?;
        let mut f = self.dir.open(&rel).map_err(|e| io_err(path, e))?;
        let meta = f.metadata().map_err(|e| io_err(path, e))?;
        if meta.is_dir() {
            return Err(FilesError::Io {
                path: path.into(),
                reason: "is a directory (use list)".into(),
            });
        }
        if offset > 0 {
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))
                .map_err(|e| io_err(path, e))?;
        }
        let max = self.opts.max_read_bytes;
        let mut buf = Vec::with_capacity(max.min(meta.len() as usize) + 1);
        (&mut f)
            .take(max as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| io_err(path, e))?;
        let cut = buf.len() > max;
        buf.truncate(max);
        let mut text = String::from_utf8_lossy(&buf).into_owned();
        if cut {
            text.push_str(&format!(
                "\n…[cut at {max} bytes of {}; read again with offset {}]",
                meta.len(),
                offset + max as u64
            ));
        }
        Ok(text)
    }

    fn check_write(&self, path: &str, content: &str) -> Result<PathBuf, FilesError> {
        if self.opts.read_only {
            return Err(FilesError::ReadOnly(path.into()));
        }
        if content.len() > self.opts.max_write_bytes {
            return Err(FilesError::TooLarge {
                what: "the content".into(),
                size: content.len(),
                max: self.opts.max_write_bytes,
            });
        }
        let rel = relative(path)?;
        if rel == Path::new(".") {
            return Err(FilesError::Outside(path.into()));
        }
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.dir
                .create_dir_all(parent)
                .map_err(|e| io_err(path, e))?;
        }
        Ok(rel)
    }

    /// Writes (replacing) a file; returns the bytes written.
    pub fn write(&self, path: &str, content: &str, append: bool) -> Result<usize, FilesError> {
        let rel = self.check_write(path, content)?;
        let mut opts = OpenOptions::new();
        opts.create(true).write(true);
        if append {
            opts.append(true);
        } else {
            opts.truncate(true);
        }
        if append {
            let existing = self.dir.metadata(&rel).map(|m| m.len()).unwrap_or(0);
            let total = existing as usize + content.len();
            if total > self.opts.max_write_bytes.saturating_mul(16) {
                return Err(FilesError::TooLarge {
                    what: format!("`{path}` after appending"),
                    size: total,
                    max: self.opts.max_write_bytes.saturating_mul(16),
                });
            }
        }
        let mut f = self
            .dir
            .open_with(&rel, &opts)
            .map_err(|e| io_err(path, e))?;
        f.write_all(content.as_bytes())
            .map_err(|e| io_err(path, e))?;
        Ok(content.len())
    }

    /// Lists a directory (recursively if asked), up to the entry cap.
    pub fn list(&self, path: &str, recursive: bool) -> Result<(Vec<Entry>, bool), FilesError> {
        let rel = relative(path)?;
        let mut out = Vec::new();
        let truncated = self.walk(&rel, recursive, &mut |e| {
            out.push(e);
            true
        })?;
        Ok((out, truncated))
    }

    /// Calls `visit` on every entry under `rel` (depth first, sorted);
    /// stops when it returns false or the cap is reached. Symlinks are
    /// reported, never followed. Returns whether it stopped early.
    fn walk(
        &self,
        rel: &Path,
        recursive: bool,
        visit: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<bool, FilesError> {
        let shown = rel.display().to_string();
        let mut stack = vec![rel.to_path_buf()];
        let mut seen = 0usize;
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<_> = self
                .dir
                .read_dir(&dir)
                .map_err(|e| io_err(&shown, e))?
                .filter_map(Result::ok)
                .collect();
            entries.sort_by_key(|e| e.file_name());
            let mut subdirs = Vec::new();
            for e in entries {
                let name = e.file_name();
                let p = if dir == Path::new(".") {
                    PathBuf::from(&name)
                } else {
                    dir.join(&name)
                };
                let ft = e.file_type().map_err(|err| io_err(&shown, err))?;
                let kind = if ft.is_symlink() {
                    "symlink"
                } else if ft.is_dir() {
                    "dir"
                } else {
                    "file"
                };
                let size = if kind == "file" {
                    e.metadata().map(|m| m.len()).unwrap_or(0)
                } else {
                    0
                };
                if kind == "dir" && recursive {
                    subdirs.push(p.clone());
                }
                seen += 1;
                if seen > self.opts.max_entries
                    || !visit(Entry {
                        path: p.display().to_string(),
                        kind,
                        size,
                    })
                {
                    return Ok(true);
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(false)
    }

    /// Files under `path` whose relative path matches `glob`; with `text`,
    /// only those containing it, with the matching lines.
    pub fn search(
        &self,
        path: &str,
        glob: &str,
        text: Option<&str>,
    ) -> Result<(Vec<String>, bool), FilesError> {
        let rel = relative(path)?;
        let matcher = globset::GlobBuilder::new(glob)
            .literal_separator(false)
            .build()
            .map_err(|e| FilesError::BadPattern {
                pattern: glob.into(),
                reason: e.to_string(),
            })?
            .compile_matcher();
        let mut hits = Vec::new();
        let max = self.opts.max_entries;
        let mut full = false;
        self.walk(&rel, true, &mut |e| {
            if e.kind != "file" || !matcher.is_match(&e.path) {
                return true;
            }
            match text {
                None => hits.push(e.path),
                Some(needle) => {
                    if e.size as usize > self.opts.max_read_bytes {
                        return true;
                    }
                    let Ok(content) = self.dir.read_to_string(&e.path) else {
                        return true;
                    };
                    for (n, line) in content.lines().enumerate() {
                        if line.contains(needle) {
                            let line: String = line.chars().take(200).collect();
                            hits.push(format!("{}:{}: {line}", e.path, n + 1));
                            if hits.len() >= max {
                                full = true;
                                return false;
                            }
                        }
                    }
                }
            }
            if hits.len() >= max {
                full = true;
                return false;
            }
            true
        })?;
        Ok((hits, full))
    }

    /// Type, size and modification time.
    pub fn stat(&self, path: &str) -> Result<serde_json::Value, FilesError> {
        let rel = relative(path)?;
        let m = self
            .dir
            .symlink_metadata(&rel)
            .map_err(|e| io_err(path, e))?;
        let kind = if m.is_symlink() {
            "symlink"
        } else if m.is_dir() {
            "dir"
        } else {
            "file"
        };
        let modified = m
            .modified()
            .ok()
            .map(|t| t.into_std())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        Ok(serde_json::json!({
            "path": path,
            "kind": kind,
            "size": m.len(),
            "modified_unix": modified,
            "read_only": self.opts.read_only || m.permissions().readonly(),
        }))
    }
}

/// `read`'s input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ReadParams {
    /// Path relative to the files root.
    pub path: String,
    /// Byte offset to start at (to continue a long file).
    #[serde(default)]
    pub offset: u64,
}

/// `write` and `append`'s input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct WriteParams {
    /// Path relative to the files root; missing directories are created.
    pub path: String,
    /// The text to write.
    pub content: String,
}

/// `list`'s input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListParams {
    /// Directory relative to the files root (default: the root).
    #[serde(default)]
    pub path: String,
    /// Include subdirectories' contents.
    #[serde(default)]
    pub recursive: bool,
}

/// `search`'s input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SearchParams {
    /// A glob over paths relative to the root, e.g. `**/*.md`.
    pub glob: String,
    /// Only files containing this text; each matching line is returned.
    #[serde(default)]
    pub text: Option<String>,
    /// Directory to search under (default: the root).
    #[serde(default)]
    pub path: String,
}

/// `stat`'s input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct StatParams {
    /// Path relative to the files root.
    pub path: String,
}

/// The files MCP server.
#[derive(Clone)]
pub struct Files {
    root: Root,
    tool_router: ToolRouter<Self>,
}

fn ok(text: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text.into())])
}

fn fail(e: impl std::fmt::Display) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(e.to_string())])
}

/// Runs a blocking file operation off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FilesError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the operation failed: {e}")),
    }
}

#[tool_router]
impl Files {
    /// A server over `root`.
    pub fn new(root: Root) -> Self {
        Self {
            root,
            tool_router: Self::tool_router(),
        }
    }

    /// Read a text file.
    #[tool(
        description = "Read a text file under the files root. Long files are cut at the size limit; read on with `offset`.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn read(&self, Parameters(p): Parameters<ReadParams>) -> CallToolResult {
        let root = self.root.clone();
        match blocking(move || root.read(&p.path, p.offset)).await {
            Ok(t) => ok(t),
            Err(e) => fail(e),
        }
    }

    /// Write a file.
    #[tool(
        description = "Write a text file under the files root, replacing it if it exists (missing directories are created).",
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn write(&self, Parameters(p): Parameters<WriteParams>) -> CallToolResult {
        let root = self.root.clone();
        let path = p.path.clone();
        match blocking(move || root.write(&p.path, &p.content, false)).await {
            Ok(n) => ok(format!("wrote {n} bytes to {}", path.trim())),
            Err(e) => fail(e),
        }
    }

    /// Append to a file.
    #[tool(
        description = "Append text to a file under the files root (created if missing).",
        annotations(destructive_hint = false, open_world_hint = false)
    )]
    async fn append(&self, Parameters(p): Parameters<WriteParams>) -> CallToolResult {
        let root = self.root.clone();
        let path = p.path.clone();
        match blocking(move || root.write(&p.path, &p.content, true)).await {
            Ok(n) => ok(format!("appended {n} bytes to {}", path.trim())),
            Err(e) => fail(e),
        }
    }

    /// List a directory.
    #[tool(
        description = "List a directory under the files root (recursively if asked): path, kind and size of each entry.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list(&self, Parameters(p): Parameters<ListParams>) -> CallToolResult {
        let root = self.root.clone();
        match blocking(move || root.list(&p.path, p.recursive)).await {
            Ok((entries, cut)) => {
                let mut lines: Vec<String> = entries
                    .iter()
                    .map(|e| match e.kind {
                        "file" => format!("{} ({} bytes)", e.path, e.size),
                        k => format!("{}/ ({k})", e.path),
                    })
                    .collect();
                if cut {
                    lines.push("…[more entries not shown]".into());
                }
                if lines.is_empty() {
                    lines.push("(empty)".into());
                }
                ok(lines.join("\n"))
            }
            Err(e) => fail(e),
        }
    }

    /// Search by glob and text.
    #[tool(
        description = "Find files under the files root whose path matches a glob (e.g. `**/*.md`); with `text`, only files containing it, with each matching line as `path:line: text`.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn search(&self, Parameters(p): Parameters<SearchParams>) -> CallToolResult {
        let root = self.root.clone();
        match blocking(move || root.search(&p.path, &p.glob, p.text.as_deref())).await {
            Ok((hits, cut)) => {
                let mut out = if hits.is_empty() {
                    "no matches".to_string()
                } else {
                    hits.join("\n")
                };
                if cut {
                    out.push_str("\n…[more matches not shown]");
                }
                ok(out)
            }
            Err(e) => fail(e),
        }
    }

    /// Stat a path.
    #[tool(
        description = "Kind, size and modification time of a path under the files root.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn stat(&self, Parameters(p): Parameters<StatParams>) -> CallToolResult {
        let root = self.root.clone();
        match blocking(move || root.stat(&p.path)).await {
            Ok(v) => ok(v.to_string()),
            Err(e) => fail(e),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Files {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "hearth-files",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(if self.root.opts.read_only {
                "Read, list, search and stat files under one root directory (read-only)."
            } else {
                "Read, write, append, list, search and stat files under one root directory."
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(read_only: bool) -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("root");
        std::fs::create_dir_all(inside.join("notes")).unwrap();
        std::fs::write(inside.join("notes/a.md"), "alpha\nbeta gamma\n").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "outside").unwrap();
        let mut opts = FilesOptions::new(&inside);
        opts.read_only = read_only;
        opts.max_read_bytes = 64;
        opts.max_write_bytes = 32;
        (dir, Root::open(opts).unwrap())
    }

    #[test]
    fn reads_writes_lists_and_searches_inside_the_root() {
        let (_d, r) = root(false);
        assert_eq!(r.read("notes/a.md", 0).unwrap(), "alpha\nbeta gamma\n");
        r.write("out/b.txt", "hello", false).unwrap();
        r.write("out/b.txt", " world", true).unwrap();
        assert_eq!(r.read("out/b.txt", 0).unwrap(), "hello world");
        // Whitespace around a path is not part of the name.
        r.write(" out/c.txt\n", "spaced", false).unwrap();
        assert_eq!(r.read("out/c.txt", 0).unwrap(), "spaced");
        assert!(r.stat(" out/c.txt ").is_ok());
        std::fs::remove_file(r.options().root.join("out/c.txt")).unwrap();
        let (entries, cut) = r.list("", true).unwrap();
        assert!(!cut);
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["notes", "out", "notes/a.md", "out/b.txt"]);
        let (hits, _) = r.search("", "**/*.md", Some("gamma")).unwrap();
        assert_eq!(hits, ["notes/a.md:2: beta gamma"]);
        let (hits, _) = r.search("", "*.txt", None).unwrap();
        assert_eq!(hits, ["out/b.txt"]);
        assert_eq!(r.stat("out/b.txt").unwrap()["size"], 11);
    }

    #[test]
    fn every_way_out_of_the_root_is_refused() {
        let (dir, r) = root(false);
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), dir.path().join("root/link"))
            .unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("root/up")).unwrap();
        for bad in [
            "../secret.txt",
            "notes/../../secret.txt",
            "/etc/passwd",
            "link",
            "up/secret.txt",
        ] {
            let e = r.read(bad, 0).unwrap_err();
            assert!(matches!(e, FilesError::Outside(_)), "{bad}: {e}");
        }
        assert!(matches!(
            r.read("../secret.txt", 0),
            Err(FilesError::Outside(_))
        ));
        assert!(r.write("../escape.txt", "x", false).is_err());
        assert!(r.write("up/escape.txt", "x", false).is_err());
        assert!(!dir.path().join("escape.txt").exists());
        assert!(r.list("..", false).is_err());
        assert!(r.write("a\0b", "x", false).is_err());
        // The secret is untouched and was never read.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("secret.txt")).unwrap(),
            "outside"
        );
    }

    #[test]
    fn size_caps_and_read_only_mode_hold() {
        let (_d, r) = root(false);
        let e = r.write("big.txt", &"x".repeat(33), false).unwrap_err();
        assert!(matches!(e, FilesError::TooLarge { .. }), "{e}");
        r.write("long.txt", &"y".repeat(30), false).unwrap();
        r.write("long.txt", &"y".repeat(30), true).unwrap();
        r.write("long.txt", &"y".repeat(30), true).unwrap();
        let text = r.read("long.txt", 0).unwrap();
        assert!(
            text.starts_with(&"y".repeat(64)) && text.contains("cut at 64 bytes of 90"),
            "{text}"
        );
        assert_eq!(r.read("long.txt", 64).unwrap(), "y".repeat(26));

        let (_d, ro) = root(true);
        assert!(matches!(
            ro.write("n.txt", "x", false),
            Err(FilesError::ReadOnly(_))
        ));
        assert!(matches!(
            ro.write("notes/a.md", "x", true),
            Err(FilesError::ReadOnly(_))
        ));
        assert_eq!(ro.read("notes/a.md", 0).unwrap(), "alpha\nbeta gamma\n");
    }
}
