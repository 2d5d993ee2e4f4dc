//! Connection lifetime, as gRPC servers take it from channel arguments: an HTTP/2 peer that
//! does not answer keepalive PINGs is disconnected, and a connection older than
//! `max_connection_age` is asked to go away (GOAWAY); and one that does not start HTTP/2 in
//! time is closed. The peer here is a bare TCP client that speaks just enough HTTP/2 (the
//! preface and an empty SETTINGS frame) and then only reads.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use soma_grpc::GrpcOptions;
use soma_runtime::{ModelHub, ModelSet, StaticHub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
const PING: u8 = 6;
const GOAWAY: u8 = 7;

async fn serve(options: GrpcOptions) -> String {
    let hub: Arc<dyn ModelHub> = Arc::new(StaticHub::new(Arc::new(ModelSet::new("x", false))));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(soma_grpc::serve(
        hub,
        listener,
        options,
        std::future::pending(),
    ));
    addr
}

/// Opens an HTTP/2 connection that never answers anything, reads frames until the server
/// closes it (or `limit` passes) and returns the frame types seen and when it closed.
async fn silent_peer(addr: &str, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(PREFACE).await.unwrap();
    tcp.write_all(&SETTINGS).await.unwrap();
    let opened = Instant::now();
    let mut bytes = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        // A reset counts as closed too.
        while let Ok(n @ 1..) = tcp.read(&mut buf).await {
            bytes.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .is_ok()
    .then(|| opened.elapsed());
    (frame_types(&bytes), closed)
}

/// The type of every complete frame in `bytes` (9-byte header: 24-bit length, type, ...).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let length =
            usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    types
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_does_not_answer_pings_is_disconnected() {
    for (server, options) in common::both_servers(GrpcOptions {
        keepalive_interval: Some(Duration::from_millis(200)),
        keepalive_timeout: Some(Duration::from_millis(200)),
        ..GrpcOptions::default()
    }) {
        let addr = serve(options).await;
        let (frames, closed) = silent_peer(&addr, Duration::from_secs(5)).await;
        assert!(
            frames.contains(&PING),
            "{server}: no PING sent: frames {frames:?}"
        );
        let closed = closed.unwrap_or_else(|| panic!("{server}: the silent peer stayed"));
        assert!(
            closed >= Duration::from_millis(350),
            "{server}: closed after {closed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_connection_is_asked_to_go_away() {
    for (server, options) in common::both_servers(GrpcOptions {
        max_connection_age: Some(Duration::from_millis(300)),
        ..GrpcOptions::default()
    }) {
        let addr = serve(options).await;
        // Not before its age...
        let (frames, _) = silent_peer(&addr, Duration::from_millis(150)).await;
        assert!(
            !frames.contains(&GOAWAY),
            "{server}: GOAWAY before the age: {frames:?}"
        );
        // ...but after it (and the connection, with nothing open, is closed).
        let (frames, _) = silent_peer(&addr, Duration::from_millis(1500)).await;
        assert!(
            frames.contains(&GOAWAY),
            "{server}: no GOAWAY sent: frames {frames:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn by_default_connections_stay_open() {
    for (server, options) in common::both_servers(GrpcOptions::default()) {
        let addr = serve(options).await;
        let (frames, closed) = silent_peer(&addr, Duration::from_millis(1500)).await;
        assert_eq!(closed, None, "{server}: closed; frames {frames:?}");
        assert!(
            !frames.contains(&PING) && !frames.contains(&GOAWAY),
            "{server}: {frames:?}"
        );
    }
}

/// A client that connects and sends nothing, half the preface, or the preface without the
/// SETTINGS frame that must follow it, is disconnected 10 s after it connected, however
/// the port is served: otherwise such connections hold their file descriptors for as long as the
/// client likes.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_does_not_start_http2_is_closed() {
    let starts: [&[u8]; 3] = [b"", &PREFACE[..16], PREFACE];
    let mut closing = Vec::new();
    for (server, options) in common::both_servers(GrpcOptions::default()) {
        let addr = serve(options).await;
        for start in starts {
            let addr = addr.clone();
            closing.push(tokio::spawn(async move {
                let mut tcp = TcpStream::connect(addr).await.unwrap();
                tcp.write_all(start).await.unwrap();
                let started = Instant::now();
                let mut read = Vec::new();
                let closed =
                    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut read));
                (server, start.len(), closed.await.is_ok(), started.elapsed())
            }));
        }
    }
    for closing in closing {
        let (server, sent, closed, after) = closing.await.unwrap();
        assert!(closed, "{server}, {sent} bytes: still open after {after:?}");
        assert!(
            after >= Duration::from_secs(9),
            "{server}, {sent} bytes: closed after {after:?}"
        );
    }
}
