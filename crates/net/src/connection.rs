//! A connection handed to a serving thread.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::busy_poll::Warmth;

/// A TCP connection served by one thread: counts itself closed when dropped (the acceptor
/// hands new connections to the thread with the fewest open), and tells the thread's
/// busy-poll task, if any, when it reads or writes.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    open: Arc<AtomicUsize>,
    warmth: Option<Arc<Warmth>>,
}

impl Connection {
    pub(crate) fn new(
        stream: TcpStream,
        open: Arc<AtomicUsize>,
        warmth: Option<Arc<Warmth>>,
    ) -> Connection {
        Connection {
            stream,
            open,
            warmth,
        }
    }

    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(&mut self.stream)
    }

    fn touch(&self) {
        if let Some(warmth) = &self.warmth {
            warmth.touch();
        }
    }

    /// An answer went out: its client's next request is due about one round trip from now.
    fn touch_if_sent(&self, written: &Poll<io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.touch();
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Connection {
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

impl AsyncWrite for Connection {
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
