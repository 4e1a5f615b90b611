//! Shapes of credentials in text: private-key blocks, the key formats of
//! the common providers, bearer tokens and `api_key=…` assignments. Traces
//! redact them before anything is written; the engine's routing treats a
//! request holding one as sensitive, served only by local backends.

/// The patterns (regular expressions), each matching one credential.
pub const CREDENTIAL_PATTERNS: &[&str] = &[
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{30,}",
    r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{8,}",
    r#"(?i)\b(api[_-]?key|access[_-]?token|auth[_-]?token|secret|password|passwd)(["']?\s*[:=]\s*["']?)[^\s"',;]{4,}"#,
];
