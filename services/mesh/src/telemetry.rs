//! Tracing set-up shared by every binary: `RUST_LOG` filters, logs go to
//! stderr so stdout stays the command's own output.

use tracing_subscriber::EnvFilter;

/// Installs a stderr subscriber; `default` is the filter when `RUST_LOG` is unset.
/// Safe to call more than once (later calls do nothing).
pub fn init(default: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
