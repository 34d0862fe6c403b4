//! The HTTP side of `serve`: `/metrics` (and `/healthz`) over the registry of [`super::metrics`].
use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;

use super::metrics::Metrics;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `/metrics` (and `/healthz`) until the task is dropped.
pub async fn start(listen: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen} (is another dad-trace serving there? use --listen)"))?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render()) }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            log::error!("metrics server stopped: {e}");
        }
    }))
}
