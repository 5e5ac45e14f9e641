//! Progress display: an indicatif spinner with bytes and rate on a terminal, plain
//! structured log lines otherwise (cron, systemd, CI).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};
use vault::progress::Progress;

/// A bar on a terminal, log lines otherwise or when `VAULT_PROGRESS=log` (set by the
/// daemon for its jobs, which share its terminal).
pub fn for_stderr() -> Arc<dyn Progress> {
    let forced_log = std::env::var_os("VAULT_PROGRESS").is_some_and(|v| v == "log");
    if std::io::stderr().is_terminal() && !forced_log {
        Arc::new(TerminalProgress::new())
    } else {
        Arc::new(LogProgress)
    }
}

/// One spinner per operation: created by the first phase, cleared by `finish`.
struct TerminalProgress {
    bar: Mutex<Option<ProgressBar>>,
}

impl TerminalProgress {
    fn new() -> Self {
        TerminalProgress {
            bar: Mutex::new(None),
        }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        let mut slot = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        let bar = slot.get_or_insert_with(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} {bytes} read ({binary_bytes_per_sec}, {elapsed})",
                )
                .expect("a valid template"),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        f(bar);
    }
}

impl Progress for TerminalProgress {
    fn phase(&self, message: &str) {
        self.with_bar(|bar| bar.set_message(message.to_string()));
    }
    fn advance(&self, bytes: u64) {
        self.with_bar(|bar| bar.inc(bytes));
    }
    fn warn(&self, message: &str) {
        self.with_bar(|bar| bar.suspend(|| tracing::warn!("{message}")));
    }
    fn finish(&self) {
        let bar = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    }
}

struct LogProgress;

impl Progress for LogProgress {
    fn phase(&self, message: &str) {
        tracing::info!("{message}");
    }
    fn advance(&self, _bytes: u64) {}
    fn warn(&self, message: &str) {
        tracing::warn!("{message}");
    }
    fn finish(&self) {}
}
