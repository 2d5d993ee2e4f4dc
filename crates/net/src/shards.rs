//! The acceptor and the serving threads of [`serve_sharded`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::balance::{self, Peers};
use crate::busy_poll::Warmth;
use crate::{Connection, Threading};

/// Serves the connections `listener` accepts on `threading.threads` threads (at least one)
/// named `{name}-{index}`, until `shutdown` resolves.
///
/// Each thread runs `serve(connections, stop)` on its own single-threaded runtime:
/// `connections` yields the connections handed to that thread, and `stop` resolves when
/// the server is shutting down, after which `serve` should stop accepting, let its open
/// requests finish and return. `serve_sharded` returns when every thread has; the first
/// error any of them returned is its result.
pub async fn serve_sharded<S, F>(
    listener: TcpListener,
    threading: Threading,
    name: &str,
    serve: S,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    S: Fn(Connections, Stop) -> F + Clone + Send + 'static,
    F: Future<Output = io::Result<()>>,
{
    let threads = threading.threads.max(1);
    let local = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let runtimes = (0..threads)
        .map(|_| {
            // Sockets and timers only: with the process driver (`enable_all`) every turn of
            // the runtime, and a busy-polling thread turns it constantly, would look for
            // exited child processes (`perf`: 2% of the gRPC server's CPU).
            tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
        })
        .collect::<io::Result<Vec<_>>>()?;
    let open: Vec<Arc<AtomicUsize>> = (0..threads).map(|_| Arc::default()).collect();
    let peers = Peers::new(
        runtimes
            .iter()
            .zip(&open)
            .map(|(r, open)| (r.handle().clone(), Arc::clone(open)))
            .collect(),
        // The busy-poll task, if any, on every thread.
        usize::from(!threading.busy_poll.is_zero()),
    );
    let serving = Arc::new(watch::Sender::new(threads));
    let mut shards = Vec::with_capacity(threads);
    let mut finished = Vec::with_capacity(threads);
    for (index, (runtime, open)) in runtimes.into_iter().zip(open).enumerate() {
        let thread = ShardThread {
            name: format!("{name}-{index}"),
            index,
            runtime,
            open,
            peers: Arc::clone(&peers),
            serving: Arc::clone(&serving),
            local,
            busy_poll: threading.busy_poll,
            stop: Stop(stopped.clone()),
        };
        let (shard, done) = thread.start(serve.clone())?;
        shards.push(shard);
        finished.push(done);
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => hand_over(&shards, stream),
                Err(e) => accept_failed(e).await,
            },
        }
    }
    drop(listener);
    let _ = stop.send(true);
    drop(shards);
    let mut result = Ok(());
    for done in finished {
        let outcome = done.await.unwrap_or_else(|_| {
            Err(io::Error::other(
                "a serving thread stopped without a result",
            ))
        });
        if let (Err(e), Ok(())) = (outcome, &result) {
            result = Err(e);
        }
    }
    result
}

/// Resolves when the server is shutting down.
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// A stop that comes when `signal` turns `true` (for servers that serve connections
    /// their own way, on the caller's runtime).
    pub fn when(signal: watch::Receiver<bool>) -> Stop {
        Stop(signal)
    }

    /// Waits for the shutdown.
    pub async fn requested(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// One serving thread, before it starts.
struct ShardThread {
    name: String,
    index: usize,
    runtime: tokio::runtime::Runtime,
    /// Its open connections.
    open: Arc<AtomicUsize>,
    peers: Arc<Peers>,
    /// How many threads of the server are still serving.
    serving: Arc<watch::Sender<usize>>,
    local: SocketAddr,
    busy_poll: Duration,
    stop: Stop,
}

/// The acceptor's side of a serving thread: where its connections are sent, and how many
/// it has open.
struct Shard {
    connections: mpsc::UnboundedSender<std::net::TcpStream>,
    open: Arc<AtomicUsize>,
}

impl ShardThread {
    fn start<S, F>(self, serve: S) -> io::Result<(Shard, oneshot::Receiver<io::Result<()>>)>
    where
        S: Fn(Connections, Stop) -> F + Send + 'static,
        F: Future<Output = io::Result<()>>,
    {
        let (connections, incoming) = mpsc::unbounded_channel();
        let open = Arc::clone(&self.open);
        let (done, finished) = oneshot::channel();
        // Only with busy polling: otherwise no connection pays for timestamps on its I/O.
        let busy_poll = self.busy_poll;
        let warmth = (!busy_poll.is_zero()).then(|| Arc::new(Warmth::new()));
        let spinner = warmth.clone();
        let handed_over = Connections {
            incoming,
            open: Arc::clone(&open),
            local: self.local,
            warmth,
        };
        let ShardThread {
            name,
            index,
            runtime,
            peers,
            serving,
            stop,
            ..
        } = self;
        std::thread::Builder::new().name(name).spawn(move || {
            balance::enter(peers, index);
            let served = runtime.block_on(async move {
                if let Some(spinner) = spinner {
                    tokio::spawn(spinner.spin(busy_poll));
                }
                let served = serve(handed_over, stop).await;
                // The other threads may hand work to this one (`run_balanced`) until they
                // have stopped serving too.
                serving.send_modify(|n| *n -= 1);
                let _ = serving.subscribe().wait_for(|n| *n == 0).await;
                served
            });
            let _ = done.send(served);
        })?;
        Ok((Shard { connections, open }, finished))
    }
}

/// Gives `stream` to the thread with the fewest open connections.
fn hand_over(shards: &[Shard], stream: TcpStream) {
    // Answers are written whole; don't let Nagle hold back the next one.
    let _ = stream.set_nodelay(true);
    let Some(shard) = shards.iter().min_by_key(|s| s.open.load(Ordering::Relaxed)) else {
        return;
    };
    match stream.into_std() {
        Ok(stream) => {
            shard.open.fetch_add(1, Ordering::Relaxed);
            if shard.connections.send(stream).is_err() {
                shard.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Err(e) => tracing::debug!(error = %e, "dropped a connection that could not be handed over"),
    }
}

/// Connection errors (a client that gave up) are routine; others (e.g. out of file
/// descriptors) are logged and slow the loop down instead of spinning on them.
pub(crate) async fn accept_failed(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A serving thread's side: the connections the acceptor handed to it.
#[derive(Debug)]
pub struct Connections {
    incoming: mpsc::UnboundedReceiver<std::net::TcpStream>,
    open: Arc<AtomicUsize>,
    local: SocketAddr,
    warmth: Option<Arc<Warmth>>,
}

impl Connections {
    /// The next connection and its peer's address. Once the acceptor has stopped, never
    /// resolves: servers stop accepting when [`Stop`] resolves, before that.
    pub async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            let Some(stream) = self.incoming.recv().await else {
                std::future::pending::<()>().await;
                continue;
            };
            // Registers the socket with this thread's runtime.
            match TcpStream::from_std(stream) {
                Ok(stream) => {
                    let peer = stream.peer_addr().unwrap_or(self.local);
                    let open = Arc::clone(&self.open);
                    let connection = Connection::new(stream, open, self.warmth.clone());
                    return (connection, peer);
                }
                Err(e) => {
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "a handed-over connection failed");
                }
            }
        }
    }

    /// Serves every connection with `serve`, a task each, until `stop`; then accepts no
    /// more and returns once every open connection's task has finished.
    pub async fn serve_each<F, S>(mut self, stop: Stop, serve: F) -> io::Result<()>
    where
        F: Fn(Connection, Stop) -> S,
        S: Future<Output = ()> + Send + 'static,
    {
        // Every connection task holds a receiver; `closed` resolves when the last is dropped.
        let (open, _) = watch::channel(());
        let stopping = stop.clone().requested();
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                () = &mut stopping => break,
                (connection, _) = self.accept() => {
                    let held = open.subscribe();
                    let served = serve(connection, stop.clone());
                    tokio::spawn(async move {
                        served.await;
                        drop(held);
                    });
                }
            }
        }
        drop(self);
        open.closed().await;
        Ok(())
    }

    /// The address the acceptor listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The connections as a stream, for servers that take one (tonic's
    /// `serve_with_incoming`).
    pub fn into_stream(self) -> impl Stream<Item = io::Result<Connection>> + Send + 'static {
        futures::stream::unfold(self, |mut connections| async move {
            let (connection, _) = connections.accept().await;
            Some((Ok(connection), connections))
        })
    }
}
