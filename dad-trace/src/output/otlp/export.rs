//! Sends spans to a collector over OTLP/HTTP (protobuf) from a task of its own, so that a slow
//! or absent collector never holds up the recorder: spans wait in a bounded queue, go in
//! batches, and are dropped and counted when the queue is full. Every request has a timeout;
//! 429 and 503 are retried a few times, after the collector's `Retry-After` when it gives one
//! (bounded).
use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    HeaderMap, Request, StatusCode, Uri,
    body::Bytes,
    header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER},
};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::InstrumentationScope,
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message as _;
use tokio::{sync::mpsc, task::JoinHandle};

use super::{config::OtlpConfig, spans::text};

/// Spans waiting to be sent; past it new ones are dropped (and counted).
pub const QUEUE_MAX: usize = 8192;
/// Spans per request.
pub const BATCH_MAX: usize = 512;
/// How long a span may wait for others to fill its batch.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Attempts per batch when the collector says it is busy (429, 502, 503, 504).
const ATTEMPTS: u32 = 3;
/// The longest `Retry-After` honoured; a longer one drops the batch.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);
/// The collector's answer is read up to this many bytes (only to reuse the connection).
const ANSWER_MAX: usize = 64 * 1024;
/// A CA file larger than this is not a CA file.
const CA_FILE_MAX: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read the CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("header {0:?} is not a valid HTTP header")]
    Header(String),
}

/// What the exporter did, for metrics and the end report.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub exported: AtomicU64,
    /// Spans given up: the queue was full, the collector refused them, or it did not answer.
    pub dropped: AtomicU64,
    /// Accepted into the queue, neither exported nor dropped yet.
    pending: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ExportStats {
    fn drop_spans(&self, count: u64, why: String) {
        self.dropped.fetch_add(count, Ordering::Relaxed);
        self.pending.fetch_sub(count, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(why);
        }
    }

    /// Why spans were last dropped.
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|last| last.clone())
    }
}

/// The sending side: cheap to offer to, never waits. Dropping it closes the queue: the task
/// sends what is left, then ends (see [`Finisher`]).
pub struct Exporter {
    queue: mpsc::Sender<Span>,
    stats: Arc<ExportStats>,
}

/// Waits for the task to send what is left once the [`Exporter`] is gone.
pub struct Finisher {
    stats: Arc<ExportStats>,
    task: JoinHandle<()>,
}

/// The request every batch shares: where, with which headers and resource.
struct Target {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    headers: HeaderMap,
    resource: Resource,
    timeout: Duration,
}

impl Exporter {
    /// Starts the sending task (on the current tokio runtime). `resource` is added to the
    /// configuration's (`service.name`, `OTEL_RESOURCE_ATTRIBUTES`).
    pub fn start(config: &OtlpConfig, resource: &[(&str, String)]) -> Result<(Self, Finisher), SetupError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let header = || SetupError::Header(name.clone());
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| header())?,
                HeaderValue::from_str(value).map_err(|_| header())?,
            );
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        let mut attributes: Vec<_> = config.resource.iter().map(|(key, value)| text(key, value)).collect();
        for (key, value) in resource {
            if !config.resource.iter().any(|(kept, _)| kept == key) {
                attributes.push(text(key, value));
            }
        }
        let target = Target {
            client: Client::builder(TokioExecutor::new()).build(connector(config.ca_file.as_deref())?),
            url: config.url.clone(),
            headers,
            resource: Resource {
                attributes,
                ..Resource::default()
            },
            timeout: config.timeout,
        };
        let (queue, spans) = mpsc::channel(QUEUE_MAX);
        let stats = Arc::new(ExportStats::default());
        let task = tokio::spawn(send_batches(spans, target, Arc::clone(&stats)));
        let finisher = Finisher {
            stats: Arc::clone(&stats),
            task,
        };
        Ok((Self { queue, stats }, finisher))
    }

    /// Queues `span`, or drops and counts it when the queue is full.
    pub fn offer(&self, span: Span) {
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        if self.queue.try_send(span).is_err() {
            self.stats.drop_spans(
                1,
                "the queue was full: the collector is slower than the spans come".into(),
            );
        }
    }

    #[must_use]
    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }
}

impl Finisher {
    /// Waits until what was queued is sent (the [`Exporter`] must be gone), giving up after
    /// `deadline`: what is still unsent then is dropped and counted.
    pub async fn finish(mut self, deadline: Duration) -> Arc<ExportStats> {
        if tokio::time::timeout(deadline, &mut self.task).await.is_err() {
            self.task.abort();
            let unsent = self.stats.pending.load(Ordering::Relaxed);
            self.stats
                .drop_spans(unsent, format!("not sent within {deadline:?} of the end"));
        }
        self.stats
    }
}

/// http and https, the system's roots plus `ca_file`'s certificates.
fn connector(ca_file: Option<&Path>) -> Result<HttpsConnector<HttpConnector>, SetupError> {
    let mut roots = rustls::RootCertStore::empty();
    // A system without roots still reaches collectors whose CA is given.
    let (added, _ignored) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    log::debug!("OTLP: {added} system root certificates");
    if let Some(path) = ca_file {
        for certificate in ca_certificates(path)? {
            roots.add(certificate)?;
        }
    }
    #[allow(
        deprecated,
        reason = "ring builds without cmake; a post-quantum key exchange is not needed to reach a collector"
    )]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// The PEM certificates of `path`, read up to [`CA_FILE_MAX`] bytes; at least one.
fn ca_certificates(path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, SetupError> {
    use rustls_pki_types::pem::PemObject as _;
    let error = |reason: String| SetupError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let (mut file, size) = crate::files::open_regular(path, CA_FILE_MAX).map_err(|e| error(e.to_string()))?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, CA_FILE_MAX), &mut bytes)
        .map_err(|e| error(e.to_string()))?;
    let certificates = rustls_pki_types::CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("not PEM certificates ({e})")))?;
    if certificates.is_empty() {
        return Err(error("no PEM certificate in it".into()));
    }
    Ok(certificates)
}

/// The task: a batch at a time, until the queue is closed and empty.
async fn send_batches(mut spans: mpsc::Receiver<Span>, target: Target, stats: Arc<ExportStats>) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while let Some(first) = spans.recv().await {
        batch.push(first);
        let gathering = tokio::time::sleep(BATCH_DELAY);
        tokio::pin!(gathering);
        while batch.len() < BATCH_MAX {
            tokio::select! {
                next = spans.recv() => match next {
                    Some(span) => batch.push(span),
                    None => break,
                },
                () = &mut gathering => break,
            }
        }
        let count = batch.len() as u64;
        match send(&target, std::mem::take(&mut batch)).await {
            Ok(()) => {
                stats.exported.fetch_add(count, Ordering::Relaxed);
                stats.pending.fetch_sub(count, Ordering::Relaxed);
            }
            Err(why) => {
                log::debug!("OTLP: {count} spans dropped: {why}");
                stats.drop_spans(count, why);
            }
        }
    }
}

/// Posts one batch, retrying while the collector says it is busy; why not, on failure.
async fn send(target: &Target, spans: Vec<Span>) -> Result<(), String> {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(target.resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "dad-trace".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let body = Bytes::from(request.encode_to_vec());
    let mut backoff = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let mut post = Request::post(target.url.clone())
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        post.headers_mut().extend(target.headers.clone());
        let answer = tokio::time::timeout(target.timeout, async {
            let response = target.client.request(post).await.map_err(|e| with_causes(&e))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(retry_after);
            // Read (bounded) so that the connection can carry the next batch.
            let _ = Limited::new(response.into_body(), ANSWER_MAX).collect().await;
            Ok::<_, String>((status, retry_after))
        })
        .await
        .map_err(|_| format!("no answer within {:?}", target.timeout))??;
        let (status, retry_after) = answer;
        if status.is_success() {
            return Ok(());
        }
        if !retryable(status) || attempt == ATTEMPTS {
            return Err(format!("the collector answered {status}"));
        }
        let wait = match retry_after {
            Some(wait) if wait > RETRY_AFTER_MAX => {
                return Err(format!(
                    "the collector answered {status}, retry after {wait:?} (longer than {RETRY_AFTER_MAX:?})"
                ));
            }
            Some(wait) => wait,
            None => backoff,
        };
        tokio::time::sleep(wait).await;
        backoff *= 2;
    }
    Err("no attempt left".into())
}

/// An error with what caused it (hyper's own text says only "client error (Connect)").
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// The statuses the OTLP specification says to retry.
fn retryable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured: back off instead).
fn retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_answers_are_retried_others_are_not() {
        for status in [429, 502, 503, 504] {
            assert!(retryable(StatusCode::from_u16(status).expect("status")), "{status}");
        }
        for status in [200, 400, 401, 404, 413, 500] {
            assert!(!retryable(StatusCode::from_u16(status).expect("status")), "{status}");
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_only() {
        assert_eq!(retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(retry_after("0"), Some(Duration::ZERO));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after("-1"), None);
    }

    #[test]
    fn a_ca_file_must_hold_pem_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let error = ca_certificates(&empty).expect_err("refused").to_string();
        assert!(error.contains("no PEM certificate"), "{error}");
        let missing = ca_certificates(&dir.path().join("missing.pem"))
            .expect_err("refused")
            .to_string();
        assert!(missing.contains("missing.pem"), "{missing}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        assert!(ca_certificates(&garbage).is_err());
    }
}
