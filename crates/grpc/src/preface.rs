//! [`PrefaceDeadline`]: a connection served by tonic must start HTTP/2 in time, as one
//! served by the lane must.
//!
//! hyper's HTTP/2 server waits for a client's connection preface as long as the client
//! keeps the socket open, and nothing else runs before it (keepalive PINGs start after the
//! handshake), so a client that connects and sends nothing holds a file descriptor until it
//! goes away; enough of them shut every other client out.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a new connection may take to send the HTTP/2 preface and its first frame (the
/// lane: the whole SETTINGS frame; under tonic: its header). Clients send them as soon as
/// they connect. gRPC's C++ server allows 120 s for its whole handshake.
pub(crate) const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// The preface (24 bytes) and a frame header (9): what a client sends first.
const OPENING_BYTES: usize = 33;

/// `io` whose reads fail with `TimedOut` if its first [`OPENING_BYTES`] have not arrived
/// [`PREFACE_TIMEOUT`] after it was wrapped. Over TLS it wraps the decrypted stream once the
/// handshake, which has a deadline of its own (`tls::HANDSHAKE_TIMEOUT`), is done.
#[derive(Debug)]
pub(crate) struct PrefaceDeadline<S> {
    io: S,
    /// Bytes still to come, and the deadline for them; `None` once they came.
    waiting: Option<(usize, Pin<Box<Sleep>>)>,
}

impl<S> PrefaceDeadline<S> {
    pub(crate) fn new(io: S) -> PrefaceDeadline<S> {
        let deadline = Box::pin(tokio::time::sleep(PREFACE_TIMEOUT));
        PrefaceDeadline {
            io,
            waiting: Some((OPENING_BYTES, deadline)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefaceDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        let Some((missing, deadline)) = &mut this.waiting else {
            return poll;
        };
        match poll {
            Poll::Ready(Ok(())) => {
                *missing = missing.saturating_sub(buf.filled().len() - before);
                if *missing == 0 {
                    this.waiting = None;
                }
                Poll::Ready(Ok(()))
            }
            // Checked whenever the client has nothing more to give, so a client that
            // trickles its first bytes is held to the deadline too.
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the client sent no HTTP/2 preface within {} s",
                        PREFACE_TIMEOUT.as_secs()
                    ),
                ))),
                Poll::Pending => Poll::Pending,
            },
            error => error,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefaceDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for PrefaceDeadline<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
