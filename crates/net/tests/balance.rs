//! `serve_sharded` and `run_balanced` with a tiny line protocol: every line a client sends
//! is a request, answered (in any order) with the name of the thread whose `run_balanced`
//! ran its work. As an HTTP/2 server does, each request is a task of its own on the
//! connection's thread. `company?` asks whether the connection's thread may have other
//! requests to poll; `hold` is a request that waits (without blocking its thread) for
//! `HOLD`, then answers `held`; `abandon` is a request whose work (`HOLD` long, not blocking)
//! is balanced and whose caller is aborted after a tenth of that, with no answer
//! ([`ABANDONED`] counts what its work did).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use soma_net::{Connections, Stop, Threading};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// How long each request's work blocks its thread.
const WORK: Duration = Duration::from_millis(5);

/// How long a `hold` request stays in hand.
const HOLD: Duration = Duration::from_millis(500);

/// What the work of `abandon` requests did: started on the second thread (`lines-1`), and
/// finished.
static ABANDONED: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

async fn serve_lines(mut connections: Connections, stop: Stop) -> std::io::Result<()> {
    let stop = stop.requested();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            (connection, _) = connections.accept() => {
                tokio::spawn(serve_connection(connection));
            }
        }
    }
}

/// One task per connection, as hyper's servers have (the answers are written by the
/// requests' tasks), so that the threads' task counts are what `run_balanced` sees there.
async fn serve_connection(connection: soma_net::Connection) {
    let (read, write) = tokio::io::split(connection);
    let write = Arc::new(tokio::sync::Mutex::new(write));
    let mut lines = tokio::io::BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line == "company?" {
            let company = soma_net::thread_may_have_company();
            let _ = write
                .lock()
                .await
                .write_all(format!("{company}\n").as_bytes())
                .await;
            continue;
        }
        if line == "abandon" {
            let call = tokio::spawn(soma_net::run_balanced(async {
                if std::thread::current().name() == Some("lines-1") {
                    ABANDONED[0].fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(HOLD).await;
                ABANDONED[1].fetch_add(1, Ordering::SeqCst);
            }));
            tokio::spawn(async move {
                tokio::time::sleep(HOLD / 10).await;
                call.abort();
            });
            continue;
        }
        let write = Arc::clone(&write);
        if line == "hold" {
            tokio::spawn(async move {
                tokio::time::sleep(HOLD).await;
                let _ = write.lock().await.write_all(b"held\n").await;
            });
            continue;
        }
        tokio::spawn(async move {
            let thread = soma_net::run_balanced(async {
                std::thread::sleep(WORK);
                std::thread::current().name().unwrap_or("?").to_string()
            })
            .await;
            let _ = write
                .lock()
                .await
                .write_all(format!("{thread}\n").as_bytes())
                .await;
        });
    }
}

/// Starts a server with two threads; returns its address and what stops it.
fn start() -> (String, oneshot::Sender<()>, std::thread::JoinHandle<()>) {
    start_polling(Duration::from_micros(30))
}

fn start_polling(
    busy_poll: Duration,
) -> (String, oneshot::Sender<()>, std::thread::JoinHandle<()>) {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            std_listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let threading = Threading {
                threads: 2,
                busy_poll,
                idle_timeout: None,
            };
            let shutdown = async move {
                let _ = stopped.await;
            };
            soma_net::serve_sharded(listener, threading, "lines", serve_lines, shutdown)
                .await
                .unwrap();
        });
    });
    (addr, stop, server)
}

fn answers(stream: &TcpStream, n: usize) -> Vec<String> {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    (0..n)
        .map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            line.trim().to_string()
        })
        .collect()
}

#[test]
fn many_requests_on_one_connection_use_both_threads() {
    let (addr, stop, server) = start();
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream.write_all(&b"go\n".repeat(40)).unwrap();
    let threads = answers(&stream, 40);
    assert!(
        threads.iter().all(|t| t == "lines-0" || t == "lines-1"),
        "{threads:?}"
    );
    let moved = threads.iter().filter(|t| *t == "lines-1").count();
    // The connection is lines-0's; its backlog of 40 sends work to lines-1 until the two
    // are within the margin.
    assert!(
        (10..=30).contains(&moved),
        "{moved} of 40 moved: {threads:?}"
    );
    drop(stream);
    stop.send(()).unwrap();
    server.join().unwrap();
}

#[test]
fn one_request_at_a_time_stays_on_its_thread() {
    one_request_at_a_time_stays(Duration::from_micros(30));
}

#[test]
fn one_request_at_a_time_stays_on_its_thread_without_busy_polling() {
    one_request_at_a_time_stays(Duration::ZERO);
}

fn one_request_at_a_time_stays(busy_poll: Duration) {
    let (addr, stop, server) = start_polling(busy_poll);
    let mut first = TcpStream::connect(&addr).unwrap();
    let mut second = TcpStream::connect(&addr).unwrap();
    for _ in 0..10 {
        first.write_all(b"go\n").unwrap();
        assert_eq!(answers(&first, 1), ["lines-0"]);
        second.write_all(b"go\n").unwrap();
        assert_eq!(answers(&second, 1), ["lines-1"]);
    }
    drop((first, second));
    stop.send(()).unwrap();
    server.join().unwrap();
}

#[test]
fn a_thread_with_another_connection_may_have_company() {
    let (addr, stop, server) = start();
    let ask = |stream: &mut TcpStream| {
        stream.write_all(b"company?\n").unwrap();
        answers(stream, 1).remove(0)
    };
    let mut first = TcpStream::connect(&addr).unwrap();
    assert_eq!(ask(&mut first), "false", "alone on lines-0");
    let mut second = TcpStream::connect(&addr).unwrap();
    assert_eq!(ask(&mut second), "false", "alone on lines-1");
    let mut third = TcpStream::connect(&addr).unwrap();
    assert_eq!(ask(&mut third), "true", "lines-0 again, beside the first");
    assert_eq!(ask(&mut first), "true");
    assert_eq!(ask(&mut second), "false");
    drop((first, second, third));
    stop.send(()).unwrap();
    server.join().unwrap();
}

/// An HTTP/2 connection's requests are tasks of their own: with two of them in hand, a
/// thread with one connection may have company too.
#[test]
fn a_thread_with_requests_in_hand_may_have_company() {
    let (addr, stop, server) = start();
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream.write_all(b"company?\n").unwrap();
    assert_eq!(answers(&stream, 1), ["false"], "nothing in hand");
    stream.write_all(b"hold\nhold\ncompany?\n").unwrap();
    assert_eq!(answers(&stream, 3), ["true", "held", "held"]);
    stream.write_all(b"company?\n").unwrap();
    assert_eq!(
        answers(&stream, 1),
        ["false"],
        "the held requests have ended"
    );
    drop(stream);
    stop.send(()).unwrap();
    server.join().unwrap();
}

/// A client that cancels its call drops the call's work also where it was handed to.
#[test]
fn work_handed_to_another_thread_stops_when_its_caller_is_dropped() {
    let (addr, stop, server) = start();
    let mut stream = TcpStream::connect(&addr).unwrap();
    // The connection is lines-0's; with six requests in hand there, the work of the next
    // moves to lines-1.
    stream
        .write_all(b"hold\nhold\nhold\nhold\nhold\nhold\nabandon\n")
        .unwrap();
    assert_eq!(answers(&stream, 6), ["held"; 6]);
    std::thread::sleep(HOLD);
    let [moved, finished] = ABANDONED.each_ref().map(|n| n.load(Ordering::SeqCst));
    assert_eq!((moved, finished), (1, 0), "moved, finished");
    drop(stream);
    stop.send(()).unwrap();
    server.join().unwrap();
}

#[tokio::test]
async fn outside_a_serving_thread_there_is_no_company_and_work_runs_in_place() {
    assert!(!soma_net::thread_may_have_company());
    let here = std::thread::current().id();
    let ran = soma_net::run_balanced(async { std::thread::current().id() }).await;
    assert_eq!(ran, here);
}

#[tokio::test(flavor = "current_thread")]
#[should_panic(expected = "boom")]
async fn a_panic_in_the_work_reaches_the_caller() {
    soma_net::run_balanced(async { panic!("boom") }).await
}
