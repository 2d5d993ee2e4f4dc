//! Serving connections on the caller's runtime ([`serve_here`]), for servers without
//! threads of their own and for listeners `serve_sharded` does not take (Unix sockets).

use std::future::Future;
use std::io;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::shards::{Stop, accept_failed};

/// Something that accepts connections.
pub trait Listener: Send {
    type Io: Send + 'static;

    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Listener for TcpListener {
    type Io = TcpStream;

    /// A connection with Nagle's algorithm off, as the serving threads' are: answers are
    /// written whole, and a client waits for each.
    async fn accept_one(&self) -> io::Result<TcpStream> {
        let (io, _) = self.accept().await?;
        // A socket that refuses the option is served as it is.
        let _ = io.set_nodelay(true);
        Ok(io)
    }
}

impl Listener for UnixListener {
    type Io = UnixStream;

    async fn accept_one(&self) -> io::Result<UnixStream> {
        self.accept().await.map(|(io, _)| io)
    }
}

/// Serves every connection `listener` accepts with `serve`, a task each on the caller's
/// runtime, until `shutdown`; then accepts no more, gives each connection its [`Stop`]
/// (after which it should finish its open requests and close) and returns once all have.
pub async fn serve_here<L, F, S>(listener: L, serve: F, shutdown: impl Future<Output = ()>)
where
    L: Listener,
    F: Fn(L::Io, Stop) -> S,
    S: Future<Output = ()> + Send + 'static,
{
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept_one() => match accepted {
                Ok(io) => {
                    connections.spawn(serve(io, Stop::when(stop.clone())));
                }
                Err(error) => accept_failed(error).await,
            },
            // Reaps finished connections, so a long-lived server holds no handle for every
            // connection it ever had.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stopping.send(true);
    while connections.join_next().await.is_some() {}
}
