//! Progress display: an indicatif spinner with bytes and rate on a terminal, plain
//! structured log lines otherwise (cron, systemd, CI).

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use vault::progress::Progress;

pub fn for_stderr() -> Arc<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Arc::new(TerminalProgress::new())
    } else {
        Arc::new(LogProgress)
    }
}

struct TerminalProgress {
    bar: ProgressBar,
}

impl TerminalProgress {
    fn new() -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} {bytes} read ({binary_bytes_per_sec}, {elapsed})",
            )
            .expect("a valid template"),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        TerminalProgress { bar }
    }
}

impl Progress for TerminalProgress {
    fn phase(&self, message: &str) {
        self.bar.set_message(message.to_string());
    }
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn warn(&self, message: &str) {
        self.bar.suspend(|| tracing::warn!("{message}"));
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
        self.bar.reset();
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
