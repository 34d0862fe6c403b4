//! The HTTP side of `serve`: `/metrics` (and `/healthz`) over the registry of
//! [`super::metrics`], bounded for a port anyone who reaches the node can connect to:
//! HTTP/1.1 only, a client has [`Limits::header_read`] to send its request headers (and as
//! long again between requests on a kept-alive connection), at most
//! [`Limits::max_connections`] connections at once (the ones above are closed at once), and
//! small request heads only.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::sync::Semaphore;

use super::metrics::Metrics;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one client may hold of the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// To send a request's headers, and to start the next request on a kept-alive connection.
    pub header_read: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Bytes of a request head (a scrape's is a few hundred).
    pub max_head_bytes: usize,
}

impl Limits {
    /// 5 s for headers; 512 connections, or half the open-file limit when that is lower, so
    /// that a flood of connections cannot take the descriptors the tracer needs.
    #[must_use]
    pub fn for_this_process() -> Self {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscall with a valid pointer.
        let files = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } == 0 {
            usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
        } else {
            1024
        };
        Self {
            header_read: Duration::from_secs(5),
            max_connections: (files / 2).clamp(16, 512),
            max_head_bytes: 16 * 1024,
        }
    }
}

/// Serves `/metrics` (and `/healthz`) until the task is dropped; returns the task and the
/// address it listens on (the port the kernel chose, for port 0).
pub async fn start(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    limits: Limits,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen} (is another dad-trace serving there? use --listen)"))?;
    let bound = listener.local_addr().context("the listening address")?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render()) }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: wait instead of spinning.
                    log::warn!("metrics server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Over the cap the connection is closed at once; the ones held time out.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                log::debug!(
                    "metrics server: {} connections open, one refused",
                    limits.max_connections
                );
                continue;
            };
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read)
                    .max_buf_size(limits.max_head_bytes.max(8192))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    log::debug!("metrics connection: {e}");
                }
                drop(slot);
            });
        }
    });
    Ok((task, bound))
}
