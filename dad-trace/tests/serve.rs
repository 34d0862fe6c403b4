//! `serve`'s HTTP side under clients that hold connections open without asking (anyone who
//! reaches the node's address can): idle clients are closed within the header timeout,
//! connections above the cap are refused at once, and a scrape still answers meanwhile.
//! No root needed: the server runs on loopback without the tracer.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use dad_trace::output::{
    metrics::Metrics,
    serve::{Limits, start},
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn server(runtime: &tokio::runtime::Runtime, limits: Limits) -> (tokio::task::JoinHandle<()>, SocketAddr) {
    let metrics = Arc::new(Metrics::new("tracepoint", "6.18", false));
    runtime
        .block_on(start("127.0.0.1:0".parse().expect("address"), metrics, limits))
        .expect("serve")
}

/// A client that sends half a request and waits.
fn half_open(address: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: node\r\n")
        .expect("write");
    stream
}

/// A whole scrape; the response text.
fn scrape(address: SocketAddr, timeout: Duration) -> String {
    let mut stream = TcpStream::connect_timeout(&address, timeout).expect("connect");
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("a response within the timeout");
    response
}

/// Whether the server has closed `stream` (reading gives end of file or a reset).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

#[test]
fn idle_clients_do_not_starve_a_scrape_and_are_closed_in_time() {
    let runtime = runtime();
    let limits = Limits {
        header_read: Duration::from_secs(2),
        max_connections: 512,
        max_head_bytes: 16 * 1024,
    };
    let (_server, address) = server(&runtime, limits);
    let mut idle: Vec<TcpStream> = (0..300).map(|_| half_open(address)).collect();
    // Each connection's header timeout runs from its own accept: the last was connected here.
    let started = Instant::now();
    let response = scrape(address, Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        response.starts_with("HTTP/1.1 200") && response.contains("# EOF"),
        "{response}"
    );
    // Within the header timeout (and a little scheduling), every idle one is closed.
    std::thread::sleep(
        (started + limits.header_read + Duration::from_millis(500)).saturating_duration_since(Instant::now()),
    );
    let still_open = idle.iter_mut().map(closed_by_server).filter(|closed| !closed).count();
    assert_eq!(still_open, 0, "idle connections left open past the header timeout");
}

#[test]
fn connections_above_the_cap_are_refused_at_once() {
    let runtime = runtime();
    let limits = Limits {
        header_read: Duration::from_secs(30),
        max_connections: 50,
        max_head_bytes: 16 * 1024,
    };
    let (_server, address) = server(&runtime, limits);
    let mut held: Vec<TcpStream> = (0..50).map(|_| half_open(address)).collect();
    // Let the server take the 50 first.
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = half_open(address);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !closed_by_server(&mut extra) {
        assert!(Instant::now() < deadline, "the 51st connection was not refused");
    }
    assert!(
        held.iter_mut().map(closed_by_server).all(|closed| !closed),
        "the first 50 are served"
    );
}

/// HTTP/1.1 only: an HTTP/2 client gets no HTTP/2 answer.
#[test]
fn only_http1_is_spoken() {
    let runtime = runtime();
    let (_server, address) = server(&runtime, Limits::for_this_process());
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").expect("write");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    assert!(!text.contains("HTTP/2"), "{text}");
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 4") || text.starts_with("HTTP/1.1 505"),
        "{text}"
    );
}
