//! An OTLP/HTTP trace receiver on loopback, decoding with the official protobuf definitions
//! (the `opentelemetry-proto` crate, generated from open-telemetry/opentelemetry-proto), as a
//! collector would. It answers as told: accept, a status (with `Retry-After`), or never,
//! so that tests can play a healthy, busy, or hung collector.
use std::{
    convert::Infallible,
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
pub use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::Span,
};
use prost::Message as _;

/// The largest request body read (a collector's default limit is far above a batch of ours).
const BODY_MAX: usize = 16 * 1024 * 1024;

/// How the receiver answers each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Accept,
    /// This status, with `Retry-After: <seconds>` when given; the spans are not kept.
    Status(u16, Option<u64>),
    /// Reads the request and never answers.
    Never,
}

/// A span with the resource it came with.
#[derive(Clone, Debug)]
pub struct Received {
    pub resource: Resource,
    pub span: Span,
}

#[derive(Default)]
struct State {
    answer: Option<Answer>,
    requests: usize,
    spans: Vec<Received>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Listens on `listen` (port 0: any free one) in a thread of its own.
    pub fn start(listen: SocketAddr, answer: Answer) -> std::io::Result<Self> {
        Self::start_with(listen, answer, None)
    }

    /// As [`Receiver::start`], over TLS with this PEM certificate chain and key.
    pub fn start_tls(listen: SocketAddr, answer: Answer, cert_pem: &[u8], key_pem: &[u8]) -> std::io::Result<Self> {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
        let invalid = |e: &dyn std::fmt::Display| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string());
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&e))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| invalid(&e))?;
        #[allow(deprecated, reason = "ring, as dad-trace's client uses")]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid(&e))?;
        Self::start_with(listen, answer, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    fn start_with(listen: SocketAddr, answer: Answer, tls: Option<tokio_rustls::TlsAcceptor>) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            answer: Some(answer),
            ..State::default()
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let shared = Arc::clone(&state);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::spawn(move || runtime.block_on(serve(listener, shared, stopped, tls)));
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The base endpoint (`http://127.0.0.1:PORT`), as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The same over TLS (`https://127.0.0.1:PORT`).
    #[must_use]
    pub fn endpoint_tls(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn set_answer(&self, answer: Answer) {
        self.lock().answer = Some(answer);
    }

    /// Requests received, whatever the answer.
    #[must_use]
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// The spans accepted so far.
    #[must_use]
    pub fn spans(&self) -> Vec<Received> {
        self.lock().spans.clone()
    }

    /// Waits until `done` holds for the accepted spans, or `timeout` passes; the spans then.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || std::time::Instant::now() >= deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops listening (as a collector that went away: connections refused from now on); the
    /// spans it accepted.
    #[must_use]
    pub fn stop(mut self) -> Vec<Received> {
        self.shut_down();
        self.spans()
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shut_down();
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<Mutex<State>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = Arc::clone(&state);
                let tls = tls.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| answer(request, Arc::clone(&state)));
                    match tls {
                        // A client that does not trust the certificate ends the handshake.
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        }
    }
    // Dropping the set ends every connection, hung ones included.
    connections.abort_all();
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path_ok = request.uri().path() == "/v1/traces";
    let protobuf = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes() == b"application/x-protobuf");
    let body = Limited::new(request.into_body(), BODY_MAX)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes);
    let answer = {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.requests += 1;
        state.answer.unwrap_or(Answer::Accept)
    };
    let status = match (path_ok, protobuf, body, answer) {
        (false, _, _, _) => StatusCode::NOT_FOUND,
        (_, false, _, _) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        (_, _, Err(_), _) => StatusCode::PAYLOAD_TOO_LARGE,
        (_, _, Ok(_), Answer::Never) => std::future::pending().await,
        (_, _, Ok(_), Answer::Status(code, retry_after)) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(hyper::header::RETRY_AFTER, seconds.into());
            }
            return Ok(response);
        }
        (_, _, Ok(bytes), Answer::Accept) => match ExportTraceServiceRequest::decode(bytes) {
            Ok(export) => {
                let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                for resource_spans in export.resource_spans {
                    let resource = resource_spans.resource.unwrap_or_default();
                    for span in resource_spans.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                        state.spans.push(Received {
                            resource: resource.clone(),
                            span,
                        });
                    }
                }
                StatusCode::OK
            }
            Err(_) => StatusCode::BAD_REQUEST,
        },
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    Ok(response)
}

/// The value of `key` among `attributes`, as text.
#[must_use]
pub fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        Value::StringValue(text) => text.clone(),
        Value::IntValue(int) => int.to_string(),
        Value::BoolValue(flag) => flag.to_string(),
        Value::DoubleValue(double) => double.to_string(),
        other => format!("{other:?}"),
    })
}

/// Lower-case hex, as trace and span ids are written.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// The spans as trees, one per trace: name, duration and the attributes that say what it
/// was, children indented under their parent.
#[must_use]
pub fn render_trees(spans: &[Received]) -> String {
    let mut traces: Vec<&[u8]> = Vec::new();
    for received in spans {
        if !traces.contains(&received.span.trace_id.as_slice()) {
            traces.push(&received.span.trace_id);
        }
    }
    let mut out = String::new();
    for trace in traces {
        let members: Vec<&Span> = spans.iter().map(|r| &r.span).filter(|s| s.trace_id == trace).collect();
        let _ = writeln!(out, "trace {}", hex(trace));
        let ids: Vec<&[u8]> = members.iter().map(|s| s.span_id.as_slice()).collect();
        let mut roots: Vec<&Span> = members
            .iter()
            .copied()
            .filter(|s| !ids.contains(&s.parent_span_id.as_slice()))
            .collect();
        roots.sort_by_key(|s| s.start_time_unix_nano);
        for root in roots {
            render_span(&mut out, root, &members, 1);
        }
    }
    out
}

fn render_span(out: &mut String, span: &Span, members: &[&Span], depth: usize) {
    let ms = span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) as f64 / 1e6;
    let what: Vec<String> = [
        "k8s.pod.name",
        "container.id",
        "cni.plugin",
        "network.interface.name",
        "ipv6.address",
        "ipv6.dad.outcome",
    ]
    .iter()
    .filter_map(|key| attribute(&span.attributes, key).map(|value| format!("{key}={value}")))
    .collect();
    let parent = if depth == 1 && !span.parent_span_id.is_empty() {
        format!(" (parent {})", hex(&span.parent_span_id))
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{}{} {:.1} ms{} {}",
        "  ".repeat(depth),
        span.name,
        ms,
        parent,
        what.join(" ")
    );
    let mut children: Vec<&Span> = members
        .iter()
        .copied()
        .filter(|s| s.parent_span_id == span.span_id)
        .collect();
    children.sort_by_key(|s| s.start_time_unix_nano);
    for child in children {
        render_span(out, child, members, depth + 1);
    }
}
