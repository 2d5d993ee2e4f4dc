//! The quick lane on a real socket: which requests it answers, that a connection moves to
//! hyper at its first request the lane does not take (with the bytes already read), and
//! that shutdown waits for the lane's requests in flight.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::any;
use soma_rest::{QuickLane, Threading};
use tokio::sync::oneshot;

/// Answers every POST under `/lane/`; `/lane/slow` after 300 ms.
struct Lane;

impl QuickLane for Lane {
    type Route = String;

    fn take(&self, path: &str, _: usize) -> Option<String> {
        path.starts_with("/lane/").then(|| path.to_owned())
    }

    async fn answer(&self, path: String, body: Vec<u8>) -> (StatusCode, String) {
        if path == "/lane/slow" {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let body = String::from_utf8_lossy(&body);
        (StatusCode::OK, format!("lane {path} {body}"))
    }
}

/// The router answers everything, saying so; `/big` with 1 MiB.
fn router() -> Router {
    Router::new().fallback(any(|uri: axum::http::Uri, body: String| async move {
        let body = if uri.path() == "/big" {
            "x".repeat(1 << 20)
        } else {
            body
        };
        let mut response =
            axum::response::IntoResponse::into_response(format!("router {} {body}", uri.path()));
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        response
    }))
}

async fn start() -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    start_with(2, None).await
}

async fn start_with(
    threads: usize,
    idle_timeout: Option<Duration>,
) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        let threading = Threading {
            threads,
            busy_poll: Duration::ZERO,
            idle_timeout,
        };
        soma_rest::serve_on_threads(listener, router(), Lane, threading, shutdown)
            .await
            .unwrap();
    });
    (addr, stop, server)
}

/// Runs `client` (blocking) against a fresh server, then stops the server.
async fn against_a_server(client: impl FnOnce(String) + Send + 'static) {
    let (addr, stop, server) = start().await;
    tokio::task::spawn_blocking(move || client(addr))
        .await
        .unwrap();
    stop.send(()).unwrap();
    server.await.unwrap();
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads answers until `count` bodies have come, each framed by its `content-length`;
/// returns the bodies and the heads (without their `date` line).
fn read_answers(stream: &mut TcpStream, count: usize) -> (Vec<String>, Vec<String>) {
    let mut raw = Vec::new();
    let (mut bodies, mut heads) = (Vec::new(), Vec::new());
    let mut chunk = [0; 4096];
    while bodies.len() < count {
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.parse().unwrap());
            if head.starts_with("HTTP/1.1 100") {
                raw.drain(..end + 4);
                heads.push(head.to_owned());
                continue;
            }
            if text.len() >= end + 4 + length {
                bodies.push(text[end + 4..end + 4 + length].to_owned());
                let head: Vec<&str> = head.lines().filter(|l| !l.starts_with("date: ")).collect();
                heads.push(head.join("\n"));
                raw.drain(..end + 4 + length);
                continue;
            }
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {bodies:?}");
        raw.extend_from_slice(&chunk[..n]);
    }
    (bodies, heads)
}

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_moves_to_the_router_at_its_first_request_the_lane_does_not_take() {
    against_a_server(|addr| {
        let mut stream = connect(&addr);
        let mut ask = |request: String| {
            stream.write_all(request.as_bytes()).unwrap();
            let (bodies, heads) = read_answers(&mut stream, 1);
            (bodies[0].clone(), heads[0].clone())
        };
        let (lane, lane_head) = ask(post("/lane/a", "1"));
        assert_eq!(lane, "lane /lane/a 1");
        assert_eq!(ask(post("/lane/b?q=1", "2")).0, "lane /lane/b 2");
        // Not the lane's path: the router, and from then on the router only.
        let (routed, router_head) = ask(post("/other", "3"));
        assert_eq!(routed, "router /other 3");
        assert_eq!(ask(post("/lane/c", "4")).0, "router /lane/c 4");
        // Both wrote the same head, but for the length.
        let lengths = |head: &str| head.replace(char::is_numeric, "#");
        assert_eq!(lengths(&lane_head), lengths(&router_head));
        assert!(lane_head.starts_with("HTTP/1.1 200 OK\ncontent-type: application/json"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_hyper_reads_differently_go_to_the_router() {
    against_a_server(|addr| {
        let cases = [
            // Chunked: the router reads the body.
            "POST /lane/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
                .to_owned(),
            // Expect: hyper says 100 Continue first.
            "POST /lane/a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx"
                .to_owned(),
            "POST /lane/a HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 1\r\n\r\nx"
                .to_owned(),
            // No Host: the router (soma's refuses it).
            "POST /lane/a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx".to_owned(),
            format!(
                "POST /lane/a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{}",
                soma_rest::QUICK_BODY_LIMIT + 1,
                "x".repeat(soma_rest::QUICK_BODY_LIMIT + 1)
            ),
        ];
        for request in cases {
            let mut stream = connect(&addr);
            stream.write_all(request.as_bytes()).unwrap();
            let (bodies, _) = read_answers(&mut stream, 1);
            assert!(bodies[0].starts_with("router /lane/a"), "{request:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_and_split_requests_are_answered_in_order() {
    against_a_server(|addr| {
        let mut stream = connect(&addr);
        // Two requests in one write, and a third cut in the head and in the body.
        let third = post("/lane/3", "three");
        let batch = format!(
            "{}{}{}",
            post("/lane/1", "one"),
            post("/lane/2", "two"),
            &third[..10]
        );
        stream.write_all(batch.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        stream
            .write_all(&third.as_bytes()[10..third.len() - 2])
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        stream
            .write_all(&third.as_bytes()[third.len() - 2..])
            .unwrap();
        let (bodies, _) = read_answers(&mut stream, 3);
        assert_eq!(
            bodies,
            ["lane /lane/1 one", "lane /lane/2 two", "lane /lane/3 three"]
        );
        // Then one the lane hands over, with a lane request behind it in the same write:
        // the router answers both, in order.
        let batch = format!("{}{}", post("/x", "x"), post("/lane/4", "four"));
        stream.write_all(batch.as_bytes()).unwrap();
        let (bodies, _) = read_answers(&mut stream, 2);
        assert_eq!(bodies, ["router /x x", "router /lane/4 four"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_lanes_requests_and_closes_idle_connections() {
    let (addr, stop, server) = start().await;
    let (slow, idle) = {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut idle = connect(&addr);
            idle.write_all(post("/lane/a", "").as_bytes()).unwrap();
            read_answers(&mut idle, 1);
            let mut slow = connect(&addr);
            slow.write_all(post("/lane/slow", "s").as_bytes()).unwrap();
            (slow, idle)
        })
        .await
        .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let (answer, idle_read) = tokio::task::spawn_blocking(move || {
        let (mut slow, mut idle) = (slow, idle);
        let (bodies, _) = read_answers(&mut slow, 1);
        let mut rest = Vec::new();
        let closed = idle.read_to_end(&mut rest).map(|_| rest.len());
        (bodies[0].clone(), closed)
    })
    .await
    .unwrap();
    assert_eq!(answer, "lane /lane/slow s");
    assert_eq!(idle_read.unwrap(), 0, "the idle connection is closed");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops once its requests are done")
        .unwrap();
}

/// Whether the server closed `stream` (read returns 0 or a reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut chunk = [0; 64];
    match stream.read(&mut chunk) {
        Ok(0) => true,
        Ok(n) => panic!(
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&chunk[..n])
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        Err(_) => false,
    }
}

/// A connection that sends nothing while a request is awaited is closed after the idle
/// timeout: idle from the start, idle after a request, stopped inside a head or a body,
/// in the lane and after the move to hyper. One that keeps sending stays open, and so does
/// one whose request takes longer than the timeout to answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_nothing_are_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(400);
    let (addr, stop, server) = start_with(2, Some(idle)).await;
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let mut silent = connect(&addr);
        assert!(closed_within(&mut silent, Duration::from_secs(5)));
        assert!(started.elapsed() >= idle, "{:?}", started.elapsed());
        h2_is_refused(&addr);

        let stalls = [
            String::new(),
            "POST /lane/a HTTP/1.1\r\nContent-Le".to_owned(),
            "POST /lane/a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345".to_owned(),
        ];
        // After a request in the lane, then (idle and a stalled head) after the move to
        // hyper, whose body reads are the router's (`rest.rs`, 408).
        let lane = stalls
            .iter()
            .map(|stall| ("/lane/a", "lane /lane/a 1", stall));
        let hyper = stalls[..2]
            .iter()
            .map(|stall| ("/other", "router /other 1", stall));
        for (path, answer, stall) in lane.chain(hyper) {
            let mut stream = connect(&addr);
            stream.write_all(post(path, "1").as_bytes()).unwrap();
            assert_eq!(read_answers(&mut stream, 1).0, [answer]);
            stream.write_all(stall.as_bytes()).unwrap();
            assert!(
                closed_within(&mut stream, Duration::from_secs(5)),
                "{path} {stall:?}"
            );
        }

        // Busy connections stay: requests 150 ms apart for three timeouts, in the lane and
        // in hyper, and a lane answer that takes 300 ms after a 200 ms pause.
        for path in ["/lane/a", "/other"] {
            let mut stream = connect(&addr);
            let until = std::time::Instant::now() + 3 * idle;
            while std::time::Instant::now() < until {
                stream.write_all(post(path, "x").as_bytes()).unwrap();
                assert_eq!(read_answers(&mut stream, 1).0.len(), 1);
                std::thread::sleep(Duration::from_millis(150));
            }
        }
        let mut stream = connect(&addr);
        std::thread::sleep(Duration::from_millis(200));
        stream
            .write_all(post("/lane/slow", "s").as_bytes())
            .unwrap();
        assert_eq!(read_answers(&mut stream, 1).0, ["lane /lane/slow s"]);
    })
    .await
    .unwrap();
    stop.send(()).unwrap();
    server.await.unwrap();
}

/// On the caller's runtime (`threads: 0`, as `soma serve` serves), the same: the lane's
/// requests in the lane, the others in the router, the same timeout for silent and stalled
/// connections, none for busy ones; shutdown closes the kept-alive ones and returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_runtime_server_closes_idle_connections_too() {
    let idle = Duration::from_millis(400);
    let (addr, stop, server) = start_with(0, Some(idle)).await;
    let client = tokio::task::spawn_blocking(move || {
        let mut silent = connect(&addr);
        assert!(closed_within(&mut silent, Duration::from_secs(5)));
        h2_is_refused(&addr);
        for stall in ["", "POST /lane/a HTTP/1.1\r\nContent-Le"] {
            let mut stream = connect(&addr);
            stream.write_all(post("/lane/a", "1").as_bytes()).unwrap();
            assert_eq!(read_answers(&mut stream, 1).0, ["lane /lane/a 1"]);
            stream.write_all(stall.as_bytes()).unwrap();
            assert!(
                closed_within(&mut stream, Duration::from_secs(5)),
                "{stall:?}"
            );
        }
        let mut stream = connect(&addr);
        let until = std::time::Instant::now() + 3 * idle;
        while std::time::Instant::now() < until {
            stream.write_all(post("/other", "x").as_bytes()).unwrap();
            assert_eq!(read_answers(&mut stream, 1).0, ["router /other x"]);
            std::thread::sleep(Duration::from_millis(150));
        }
        stream
    });
    let mut open = client.await.unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops")
        .unwrap();
    assert!(closed_within(&mut open, Duration::from_secs(1)));
}

/// REST is HTTP/1.1 only, as TF Serving's: an HTTP/2 preface, whole or in part, is
/// answered 505 or closed, not held open (hyper's HTTP/2 has no idle timer).
fn h2_is_refused(addr: &str) {
    for preface in ["PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "PRI * HT"] {
        let mut stream = connect(addr);
        stream.write_all(preface.as_bytes()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty()
                || answer.starts_with("HTTP/1.1 505")
                || answer.starts_with("HTTP/1.1 400"),
            "{preface:?}: {answer}"
        );
    }
}

/// A client that asks and never reads is cut off once the server's writes have made no
/// progress for the idle timeout, on both servers, instead of holding its answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off() {
    for threads in [2, 0] {
        let (addr, stop, server) = start_with(threads, Some(Duration::from_millis(400))).await;
        tokio::task::spawn_blocking(move || {
            let mut stream = connect(&addr);
            let asked = 50;
            for _ in 0..asked {
                stream.write_all(post("/big", "").as_bytes()).unwrap();
            }
            std::thread::sleep(Duration::from_secs(2));
            let mut answers = Vec::new();
            let _ = stream.read_to_end(&mut answers);
            assert!(
                answers.len() < asked << 20,
                "threads {threads}: all {} bytes arrived",
                answers.len()
            );
        })
        .await
        .unwrap();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops")
            .unwrap();
    }
}
