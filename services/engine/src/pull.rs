//! Downloading a model file: over HTTP, resumable, checked.
//!
//! Bytes go to `<file>.part` beside the destination; an interrupted pull
//! leaves that file and the next pull asks the server for the rest (an HTTP
//! range request; a server that ignores ranges sends it all again). The
//! digest is computed over the whole file as it arrives; only a file whose
//! SHA-256 matches the expected one (when one is known) is renamed into
//! place, and a mismatch deletes the partial file, so nothing half-written or
//! wrong is ever found under the model's name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the server may stay silent mid-download.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The server could not be reached or the transfer broke off.
    #[error("downloading {url}: {reason} (run the pull again to resume)")]
    Network {
        /// What was being downloaded.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("downloading {url}: the server answered {status}")]
    Status {
        /// What was being downloaded.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The file is not what it should be; it was deleted.
    #[error(
        "the download from {url} has SHA-256 {actual}, not the expected {expected}; it was deleted"
    )]
    Checksum {
        /// What was downloaded.
        url: String,
        /// What it should hash to.
        expected: String,
        /// What it hashed to.
        actual: String,
    },
    /// A local file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A finished pull.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pulled {
    /// Where the file is now.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256 (hex).
    pub sha256: String,
    /// Whether it matched a known digest (`false`: none was known).
    pub verified: bool,
    /// Bytes that were already there from an interrupted pull.
    pub resumed_from: u64,
}

/// Progress: bytes so far, and the total when the server says.
pub type Progress<'a> = &'a (dyn Fn(u64, Option<u64>) + Send + Sync);

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
    move |source| PullError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The partial file for `dest`.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// SHA-256 of a file (hex), read in the background.
pub async fn sha256_file(path: &Path) -> Result<String, PullError> {
    let mut f = tokio::fs::File::open(path).await.map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).await.map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads `url` to `dest`, resuming a partial download and checking the
/// digest against `sha256` when given.
pub async fn pull(
    client: &reqwest::Client,
    url: &str,
    dest: &Path,
    sha256: Option<&str>,
    progress: Progress<'_>,
) -> Result<Pulled, PullError> {
    if let Some(dir) = dest.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
    }
    let part = part_path(dest);
    let net = |reason: String| PullError::Network {
        url: url.to_string(),
        reason,
    };
    let mut have = tokio::fs::metadata(&part).await.map_or(0, |m| m.len());
    let mut req = client.get(url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let resp = req.send().await.map_err(|e| net(e.to_string()))?;
    let status = resp.status();
    let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT;
    if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
        // The partial file is already whole (or longer than the file): check it.
        return finish(url, &part, dest, sha256, have).await;
    }
    if !status.is_success() {
        return Err(PullError::Status {
            url: url.to_string(),
            status: status.as_u16(),
        });
    }
    if !resumed {
        have = 0; // the server sends everything: start over
    }
    let total = resp.content_length().map(|n| n + have);
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(&part)
        .await
        .map_err(io(&part))?;
    let resumed_from = have;
    let mut done = have;
    progress(done, total);
    let mut body = resp.bytes_stream();
    loop {
        let next = tokio::time::timeout(IDLE_TIMEOUT, body.next())
            .await
            .map_err(|_| net(format!("no data for {IDLE_TIMEOUT:?}")))?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| net(e.to_string()))?;
        file.write_all(&chunk).await.map_err(io(&part))?;
        done += chunk.len() as u64;
        progress(done, total);
    }
    file.flush().await.map_err(io(&part))?;
    file.sync_all().await.map_err(io(&part))?;
    drop(file);
    if let Some(t) = total
        && done < t
    {
        return Err(net(format!("the transfer ended at {done} of {t} bytes")));
    }
    let mut pulled = finish(url, &part, dest, sha256, done).await?;
    pulled.resumed_from = resumed_from;
    Ok(pulled)
}

/// Checks the partial file and moves it into place, or deletes it.
async fn finish(
    url: &str,
    part: &Path,
    dest: &Path,
    sha256: Option<&str>,
    bytes: u64,
) -> Result<Pulled, PullError> {
    let actual = sha256_file(part).await?;
    if let Some(expected) = sha256
        && !expected.eq_ignore_ascii_case(&actual)
    {
        let _ = tokio::fs::remove_file(part).await;
        return Err(PullError::Checksum {
            url: url.to_string(),
            expected: expected.to_ascii_lowercase(),
            actual,
        });
    }
    tokio::fs::rename(part, dest).await.map_err(io(dest))?;
    Ok(Pulled {
        path: dest.to_path_buf(),
        bytes,
        sha256: actual,
        verified: sha256.is_some(),
        resumed_from: 0,
    })
}
