//! Alerts: every `[[notify]]` target subscribed to an event gets the same JSON document —
//! POSTed to its `url`, and/or on the standard input of its `command`. Sending happens on
//! the side with a timeout: a failing target is logged and counted, never fails a job.
//! Only a webhook's scheme and host are ever logged (its path often holds a token).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::config::{NotifyConfig, NotifyEvent};
use crate::error::{Error, Result};
use crate::postgres::ChildProcess;

/// The document every target receives. Field names are a documented contract
/// (README.md, "Alerts"); `format_version` grows when they change.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub format_version: u32,
    pub event: NotifyEvent,
    /// One line for chat webhooks (Slack and Mattermost show `text`).
    pub text: String,
    pub host: String,
    pub time: DateTime<Utc>,
    /// The job, for job events.
    pub job: Option<String>,
    /// The vault command line after `vault`, for job events.
    pub command: Option<Vec<String>>,
    pub database: Option<String>,
    pub exit_code: Option<i32>,
    /// How many times the job ran before this alert (retries included).
    pub attempts: Option<u32>,
    pub duration_seconds: Option<f64>,
    /// The error, or what is wrong, in a sentence.
    pub message: Option<String>,
}

pub const ALERT_FORMAT: u32 = 1;

impl Alert {
    pub fn new(event: NotifyEvent, text: String) -> Alert {
        Alert {
            format_version: ALERT_FORMAT,
            event,
            text,
            host: host_name(),
            time: Utc::now(),
            job: None,
            command: None,
            database: None,
            exit_code: None,
            attempts: None,
            duration_seconds: None,
            message: None,
        }
    }
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Target {
    config: NotifyConfig,
    timeout: Duration,
}

#[derive(Clone)]
pub struct Notifier {
    targets: Arc<Vec<Target>>,
    client: Option<HttpsClient>,
    failures: Counter,
    pending: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Notifier {
    pub fn new(configs: &[NotifyConfig]) -> Result<Notifier> {
        let mut targets = Vec::new();
        for config in configs {
            targets.push(Target {
                timeout: config
                    .timeout()?
                    .to_std()
                    .unwrap_or(Duration::from_secs(10)),
                config: config.clone(),
            });
        }
        let client = if targets.iter().any(|t| t.config.url.is_some()) {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(provider)
                .map_err(|e| {
                    Error::Config(format!(
                        "webhooks need the system's CA certificates, which could not be \
                         loaded: {e}"
                    ))
                })?
                .https_or_http()
                .enable_http1()
                .build();
            Some(Client::builder(TokioExecutor::new()).build(connector))
        } else {
            None
        };
        Ok(Notifier {
            targets: Arc::new(targets),
            client,
            failures: Counter::default(),
            pending: Arc::default(),
        })
    }

    /// Alerts that could not be delivered, since start.
    pub fn failures(&self) -> u64 {
        self.failures.get()
    }

    /// The counter behind [`Self::failures`], for `/metrics`.
    pub fn failures_counter(&self) -> Counter {
        self.failures.clone()
    }

    /// Sends `alert` to every subscribed target, in the background.
    pub fn send(&self, alert: Alert) {
        let this = self.clone();
        let handle = tokio::spawn(async move { this.deliver(alert).await });
        let mut pending = self.pending.lock().expect("not poisoned");
        pending.retain(|h| !h.is_finished());
        pending.push(handle);
    }

    /// Waits for alerts still being sent (each is bounded by its target's timeout).
    pub async fn flush(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().expect("not poisoned"));
        futures_util::future::join_all(pending).await;
    }

    /// Sends `alert` to every subscribed target and waits for them (or their timeouts).
    pub async fn deliver(&self, alert: Alert) {
        let body = Bytes::from(serde_json::to_vec(&alert).expect("an alert serializes"));
        let alert = &alert;
        let sends = self
            .targets
            .iter()
            .filter(|t| t.config.events.contains(&alert.event))
            .map(|target| {
                let body = body.clone();
                async move {
                    if let Some(url) = &target.config.url {
                        let result =
                            tokio::time::timeout(target.timeout, self.post(url, body.clone()))
                                .await
                                .unwrap_or_else(|_| Err("timed out".into()));
                        self.report(alert, &shown(url), result);
                    }
                    if let Some(program) = target.config.command.first() {
                        let result =
                            tokio::time::timeout(target.timeout, run_hook(&target.config, body))
                                .await
                                .unwrap_or_else(|_| Err("timed out (killed)".into()));
                        self.report(alert, program, result);
                    }
                }
            });
        futures_util::future::join_all(sends).await;
    }

    fn report(&self, alert: &Alert, target: &str, result: std::result::Result<(), String>) {
        match result {
            Ok(()) => tracing::info!(event = alert.event.as_str(), target, "alert sent"),
            Err(e) => {
                self.failures.inc();
                tracing::warn!(
                    event = alert.event.as_str(),
                    target,
                    error = %e,
                    "could not send an alert (the job's result stands)"
                );
            }
        }
    }

    async fn post(&self, url: &str, body: Bytes) -> std::result::Result<(), String> {
        let client = self
            .client
            .as_ref()
            .expect("a client exists when a url does");
        let request = hyper::Request::post(url)
            .header("content-type", "application/json")
            .header("user-agent", concat!("vault/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .map_err(|e| format!("bad webhook url: {e}"))?;
        let response = client
            .request(request)
            .await
            .map_err(|e| describe_chain(&e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("the webhook answered {}", response.status()))
        }
    }
}

/// Runs the hook with the alert on its stdin; a non-zero exit is a failed delivery. The
/// hook runs in its own process group, killed whole when it times out.
async fn run_hook(config: &NotifyConfig, body: Bytes) -> std::result::Result<(), String> {
    let (program, args) = config.command.split_first().expect("checked by the caller");
    let mut command = tokio::process::Command::new(program);
    command.args(args);
    let (hook, mut stdin) = ChildProcess::spawn_with_stdin(&format!("hook `{program}`"), command)
        .map_err(|e| e.to_string())?;
    // A hook that does not read its input is its own business.
    let _ = stdin.write_all(&body).await;
    drop(stdin);
    hook.output().await.map(|_| ()).map_err(|e| e.to_string())
}

/// `https://hooks.example.com/…`: enough to tell targets apart, no token.
fn shown(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Credentials in the authority (`user:pass@host`) are not shown either.
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}/…")
}

fn describe_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_shown_without_path_or_credentials() {
        assert_eq!(
            shown("https://hooks.slack.com/services/T000/B000/XXXX"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            shown("http://user:secret@127.0.0.1:9000/hook?token=abc"),
            "http://127.0.0.1:9000/…"
        );
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_with_everything_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let slow = NotifyConfig {
            url: None,
            command: vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "echo $$ > {0}; sleep 30 & echo $! >> {0}; wait",
                    pids.display()
                ),
            ],
            events: vec![NotifyEvent::Failure],
            timeout: "1s".into(),
        };
        let notifier = Notifier::new(&[slow]).unwrap();
        let started = std::time::Instant::now();
        notifier
            .deliver(Alert::new(NotifyEvent::Failure, "x".into()))
            .await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(notifier.failures(), 1);
        let text = std::fs::read_to_string(&pids).unwrap();
        for pid in text.split_whitespace() {
            let pid: libc::pid_t = pid.parse().unwrap();
            let alive = || {
                // A zombie still answers kill(0): read its state instead.
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|stat| !stat.contains(") Z "))
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while alive() && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(!alive(), "process {pid} of the hook outlived its timeout");
        }
    }

    #[tokio::test]
    async fn a_command_hook_gets_the_alert_on_stdin_and_failures_are_counted_not_raised() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("alert.json");
        let ok = NotifyConfig {
            url: None,
            command: vec!["sh".into(), "-c".into(), format!("cat > {}", out.display())],
            events: vec![NotifyEvent::Failure],
            timeout: "10s".into(),
        };
        let failing = NotifyConfig {
            command: vec!["false".into()],
            ..ok.clone()
        };
        let unsubscribed = NotifyConfig {
            command: vec!["false".into()],
            events: vec![NotifyEvent::Success],
            ..ok.clone()
        };
        let notifier = Notifier::new(&[ok, failing, unsubscribed]).unwrap();
        let mut alert = Alert::new(NotifyEvent::Failure, "job backup failed".into());
        alert.job = Some("backup".into());
        alert.exit_code = Some(4);
        notifier.deliver(alert).await;
        let got: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(got["event"], "failure");
        assert_eq!(got["job"], "backup");
        assert_eq!(got["exit_code"], 4);
        assert_eq!(got["format_version"], 1);
        assert_eq!(
            notifier.failures(),
            1,
            "`false` failed; the Success-only hook was not run"
        );
    }
}
