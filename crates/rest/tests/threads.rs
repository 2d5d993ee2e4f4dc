//! `serve_on_threads`: each connection is served by one thread for its whole life, new
//! connections go to the thread with the fewest open ones, and shutdown lets the requests
//! in flight finish.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use soma_testkit::HttpConnection;
use tokio::sync::oneshot;

/// A router whose answers say which thread served them.
fn thread_names() -> Router {
    let name = || std::thread::current().name().unwrap_or("?").to_string();
    Router::new()
        .route("/thread", get(move || async move { name() }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        )
}

async fn start(
    threads: usize,
    busy_poll: Duration,
) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        let threading = soma_rest::Threading {
            threads,
            busy_poll,
            idle_timeout: None,
        };
        soma_rest::serve_on_threads(
            listener,
            thread_names(),
            soma_rest::NoQuickLane,
            threading,
            shutdown,
        )
        .await
        .unwrap();
    });
    (addr, stop, server)
}

fn thread_of(connection: &mut HttpConnection) -> String {
    let response = connection.request("GET", "/thread", &[], b"").unwrap();
    assert_eq!(response.status, 200);
    response.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stay_on_one_thread_and_go_to_the_least_busy() {
    let (addr, stop, server) = start(2, Duration::ZERO).await;
    tokio::task::spawn_blocking(move || {
        let mut connections: Vec<HttpConnection> = (0..4)
            .map(|_| HttpConnection::connect(&addr).unwrap())
            .collect();
        let threads: Vec<String> = connections.iter_mut().map(thread_of).collect();
        // Handed over in turn, as each had the fewest open connections.
        assert_eq!(
            threads,
            ["soma-rest-0", "soma-rest-1", "soma-rest-0", "soma-rest-1"]
        );
        // Every later request of a connection is served by the same thread.
        for _ in 0..3 {
            for (connection, thread) in connections.iter_mut().zip(&threads) {
                assert_eq!(&thread_of(connection), thread);
            }
        }
        // Closing both of soma-rest-0's connections makes it the least busy.
        drop(connections.remove(2));
        drop(connections.remove(0));
        std::thread::sleep(Duration::from_millis(300));
        let mut fresh: Vec<HttpConnection> = (0..2)
            .map(|_| HttpConnection::connect(&addr).unwrap())
            .collect();
        let threads: Vec<String> = fresh.iter_mut().map(thread_of).collect();
        assert_eq!(threads, ["soma-rest-0", "soma-rest-0"]);
    })
    .await
    .unwrap();
    stop.send(()).unwrap();
    server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    // Busy polling on: it must not keep the threads from stopping.
    let (addr, stop, server) = start(2, Duration::from_micros(200)).await;
    let slow = {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = HttpConnection::connect(&addr).unwrap();
            connection.request("GET", "/slow", &[], b"").unwrap().text()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    assert_eq!(slow.await.unwrap(), "done");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops once its requests are done")
        .unwrap();
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "no longer listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_threads_serve_on_the_callers_runtime() {
    let (addr, stop, server) = start(0, Duration::ZERO).await;
    let thread = tokio::task::spawn_blocking(move || {
        thread_of(&mut HttpConnection::connect(&addr).unwrap())
    })
    .await
    .unwrap();
    assert!(!thread.starts_with("soma-rest-"), "{thread}");
    stop.send(()).unwrap();
    server.await.unwrap();
}
