//! Serving a router on one thread per core, each with its own single-threaded runtime.
//!
//! Why: on the shared work-stealing runtime, every request that wakes a connection task
//! also wakes an idle worker to look for work to steal; on small models it mostly finds
//! none and goes back to sleep. Those wake-ups were a fifth of the REST server's CPU at 8
//! connections (`perf`: the scheduler's lock and context-switch symbols). An HTTP/1.1
//! connection carries one request at a time, so nothing is lost by keeping each connection
//! on one thread: the acceptor hands every new connection to the thread with the fewest
//! open connections, and that thread reads, predicts (quick models run in place, batched
//! with the other requests it has read) and writes without waking any other.
//!
//! With [`Threading::busy_poll`], a thread that has just read a request or sent an answer
//! keeps polling its sockets for a while instead of sleeping: on one connection this cuts
//! the time to pick up the next request by a third, at the cost of a core kept busy while
//! requests keep coming.
//!
//! Slow models still run on a blocking pool (each runtime has its own), so one thread's
//! busy connections do not hold up the others' reads. What is given up is stealing: if
//! one thread's connections all send quick requests while another's are idle, the idle
//! core does not help. Measured in BENCHMARKS.md §4.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

/// How [`serve_on_threads`] spreads connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Threading {
    /// Threads that serve connections, each with a single-threaded runtime (see the module
    /// docs); 0: the caller's runtime serves them all.
    pub threads: usize,
    /// After a thread reads a request or sends an answer it keeps polling its sockets,
    /// without sleeping, for this long: the next request of a busy connection is read at
    /// once instead of after a wake-up (on a virtual machine, tens of microseconds). Costs
    /// CPU that other processes on the machine may need. Zero: sleep as soon as there is
    /// nothing to do.
    pub busy_poll: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the open requests finish.
pub async fn serve_on_threads(
    listener: TcpListener,
    app: Router,
    threading: Threading,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let threads = threading.threads;
    if threads == 0 {
        return axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
    }
    let local = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let mut shards = Vec::with_capacity(threads);
    let mut finished = Vec::with_capacity(threads);
    for index in 0..threads {
        let (shard, done) = Shard::start(
            index,
            local,
            app.clone(),
            threading.busy_poll,
            stopped.clone(),
        )?;
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
        match done.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(io::Error::other("a REST thread stopped without a result")),
        }
    }
    result
}

/// One serving thread: where its connections are sent, and how many it has open.
struct Shard {
    connections: mpsc::UnboundedSender<std::net::TcpStream>,
    open: Arc<AtomicUsize>,
}

impl Shard {
    fn start(
        index: usize,
        local: SocketAddr,
        app: Router,
        busy_poll: Duration,
        mut stopped: watch::Receiver<bool>,
    ) -> io::Result<(Shard, oneshot::Receiver<io::Result<()>>)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (connections, incoming) = mpsc::unbounded_channel();
        let open = Arc::new(AtomicUsize::new(0));
        let (done, finished) = oneshot::channel();
        // Only with busy polling: otherwise no connection pays for timestamps on its I/O.
        let warmth = (!busy_poll.is_zero()).then(|| Arc::new(Warmth::new()));
        let spinner = warmth.clone();
        let listener = HandedOver {
            incoming,
            open: Arc::clone(&open),
            local,
            warmth,
        };
        std::thread::Builder::new()
            .name(format!("soma-rest-{index}"))
            .spawn(move || {
                let stop = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                let served = runtime.block_on(async move {
                    if let Some(spinner) = spinner {
                        tokio::spawn(spinner.spin(busy_poll));
                    }
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stop)
                        .await
                });
                let _ = done.send(served);
            })?;
        Ok((Shard { connections, open }, finished))
    }
}

/// Gives `stream` to the thread with the fewest open connections.
fn hand_over(shards: &[Shard], stream: TcpStream) {
    // Responses are written whole; don't let Nagle hold back the next one.
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
async fn accept_failed(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "REST accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A serving thread's side: the connections the acceptor handed to it.
struct HandedOver {
    incoming: mpsc::UnboundedReceiver<std::net::TcpStream>,
    open: Arc<AtomicUsize>,
    local: SocketAddr,
    warmth: Option<Arc<Warmth>>,
}

/// When a thread last read from or wrote to a connection, and how to wake its busy-poll
/// task.
#[derive(Debug)]
struct Warmth {
    base: std::time::Instant,
    last_io_ns: std::sync::atomic::AtomicU64,
    sleeping: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

impl Warmth {
    fn new() -> Warmth {
        Warmth {
            base: std::time::Instant::now(),
            last_io_ns: std::sync::atomic::AtomicU64::new(0),
            sleeping: std::sync::atomic::AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_io_ns.store(self.now_ns(), Ordering::Relaxed);
        if self.sleeping.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    fn recent(&self, window: Duration) -> bool {
        let since = self
            .now_ns()
            .saturating_sub(self.last_io_ns.load(Ordering::Relaxed));
        u128::from(since) < window.as_nanos()
    }

    /// Yields (which polls the sockets without blocking) while I/O was recent, so that
    /// the next request of a busy connection is read without the thread going to sleep.
    async fn spin(self: Arc<Self>, window: Duration) {
        loop {
            if self.recent(window) {
                // A yielded task makes the runtime poll its sockets without blocking.
                tokio::task::yield_now().await;
                continue;
            }
            let notified = self.wake.notified();
            self.sleeping.store(true, Ordering::Relaxed);
            if !self.recent(window) {
                notified.await;
            }
            self.sleeping.store(false, Ordering::Relaxed);
        }
    }
}

impl axum::serve::Listener for HandedOver {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let Some(stream) = self.incoming.recv().await else {
                // The acceptor is gone: shutting down; the server stops accepting first.
                std::future::pending::<()>().await;
                continue;
            };
            // Registers the socket with this thread's runtime.
            match TcpStream::from_std(stream) {
                Ok(stream) => {
                    let peer = stream.peer_addr().unwrap_or(self.local);
                    let open = Arc::clone(&self.open);
                    let warmth = self.warmth.clone();
                    return (
                        Counted {
                            stream,
                            open,
                            warmth,
                        },
                        peer,
                    );
                }
                Err(e) => {
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "a handed-over connection failed");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A connection that counts itself closed when dropped.
#[derive(Debug)]
struct Counted {
    stream: TcpStream,
    open: Arc<AtomicUsize>,
    warmth: Option<Arc<Warmth>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Counted {
    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(&mut self.stream)
    }

    /// Tells the busy-poll task (if any) that this connection just did I/O.
    fn touch(&self) {
        if let Some(warmth) = &self.warmth {
            warmth.touch();
        }
    }

    /// A response went out: its client's next request is due about one round trip from now.
    fn touch_if_sent(&self, written: &Poll<io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.touch();
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = self.stream().poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        read
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = self.stream().poll_write(cx, buf);
        self.touch_if_sent(&written);
        written
    }

    // hyper writes headers and body in one vectored write; keep it one system call.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = self.stream().poll_write_vectored(cx, bufs);
        self.touch_if_sent(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}
