//! The daemon's HTTP endpoint (`daemon.listen`): `GET /metrics` (OpenMetrics text, which
//! Prometheus scrapes) and `GET /healthz` (200 when every database's newest backup is
//! within the RPO, 503 otherwise, with a JSON body saying why). Plain HTTP/1.1 with hyper;
//! meant for loopback or a private network.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::metrics::Monitor;
use crate::error::{Error, Result};

pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        Error::Config(format!(
            "cannot listen on {addr} for /metrics and /healthz: {e}; set daemon.listen to a \
             free address, or `off`"
        ))
    })
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, monitor: Arc<Monitor>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let monitor = Arc::clone(&monitor);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let monitor = Arc::clone(&monitor);
                async move { Ok::<_, Infallible>(answer(&request, &monitor)) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        });
    }
}

fn answer(request: &Request<Incoming>, monitor: &Monitor) -> Response<Full<Bytes>> {
    let now = chrono::Utc::now();
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    match request.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            monitor.render(now),
        ),
        "/healthz" => {
            let health = monitor.health(now);
            let status = if health.ok() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut body = serde_json::to_string_pretty(&health).expect("health serializes");
            body.push('\n');
            reply(status, "application/json", body)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "vault daemon: GET /metrics or /healthz\n".into(),
        ),
    }
}
