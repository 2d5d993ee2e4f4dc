//! The quick lane: small HTTP/1.1 POSTs answered without hyper.
//!
//! Why: on iris, a request's whole prediction costs a few microseconds, and hyper with
//! axum's router costs ~1.5–2.5 µs of CPU per request more than a loop that parses the head
//! with `httparse` and writes the answer in one piece (BENCHMARKS.md §4, "The quick lane").
//! So a serving thread reads each connection itself, and answers in place the requests
//! whose meaning is plain: `POST`, HTTP/1.1, a `Content-Length` body of at most
//! [`QUICK_BODY_LIMIT`] bytes, no `Transfer-Encoding`, `Expect`, `Upgrade` or
//! `Content-Encoding`, no `Connection` other than `keep-alive`, on a path the
//! [`QuickLane`] takes. The first request that is anything else (another method or path,
//! chunked, `Expect: 100-continue`, HTTP/1.0, an HTTP/2 preface, a malformed or large
//! head) hands the connection, with every byte already read, to hyper and the router for
//! the rest of its life: the lane never answers what hyper would answer differently, with
//! one exception: a request whose `Transfer-Encoding` does not end with `chunked` gets a
//! JSON 400 before the connection closes, where hyper sends an empty one.
//!
//! The lane writes the head hyper writes for the same answer (status line, `content-type`,
//! `content-length`, `date`); tests compare the lane's answers with hyper's for every
//! request form of the REST suite.

use std::future::Future;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::http::StatusCode;
use axum::http::uri::PathAndQuery;
use bytes::{Buf, Bytes, BytesMut};

use crate::deadline;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Requests answered in the quick lane ([`crate::serve_on_threads`]).
pub trait QuickLane: Send + Sync + 'static {
    /// What [`take`](QuickLane::take) learnt from the path, for [`answer`](QuickLane::answer).
    type Route: Send;

    /// `Some` if a `POST` to `path` (without its query) with a body of `body_len` bytes is
    /// answered here; `None` leaves the request, and the rest of its connection, to the
    /// router.
    fn take(&self, path: &str, body_len: usize) -> Option<Self::Route>;

    /// The status and JSON body that answer `body`.
    fn answer(
        &self,
        route: Self::Route,
        body: Vec<u8>,
    ) -> impl Future<Output = (StatusCode, String)> + Send;
}

/// A lane that takes no request: every connection goes to the router at its first request
/// (after the check every lane makes, that the request's body can be delimited).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoQuickLane;

impl QuickLane for NoQuickLane {
    type Route = std::convert::Infallible;

    fn take(&self, _: &str, _: usize) -> Option<Self::Route> {
        None
    }

    async fn answer(&self, route: Self::Route, _: Vec<u8>) -> (StatusCode, String) {
        match route {}
    }
}

/// The largest body the lane reads itself; larger ones go to the router (and, past its
/// limit, get its 413). Requests this small are also the ones predicted in place.
pub const QUICK_BODY_LIMIT: usize = 16 * 1024;

/// A head still incomplete after this many bytes goes to hyper, which has its own limits.
const HEAD_LIMIT: usize = 8 * 1024;

/// Headers beyond this many go to hyper (browsers send ~15).
const MAX_HEADERS: usize = 32;

/// Serves one connection: requests in the lane, then, from the first that is not, hyper
/// with `app`. Returns when the connection closes, once it is idle after `stopping`, or
/// when it sends nothing for `idle_timeout` while a request is awaited (between requests
/// or inside one).
pub(crate) async fn serve_connection<L, S>(
    mut io: S,
    app: Router,
    lane: Arc<L>,
    stop: soma_net::Stop,
    idle_timeout: Option<Duration>,
) where
    L: QuickLane,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buffer = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(512);
    let stopping = stop.clone().requested();
    tokio::pin!(stopping);
    let mut stopped = false;
    loop {
        // Every whole request already read, in order.
        loop {
            let (route, head_len, body_len) = match parse(&buffer, &*lane) {
                Head::Quick {
                    route,
                    head_len,
                    body_len,
                } => (route, head_len, body_len),
                Head::Partial => break,
                Head::Unframed(message) => {
                    out.clear();
                    let json = crate::error::error_body(&message);
                    write_head_closing(&mut out, StatusCode::BAD_REQUEST, json.len());
                    out.extend_from_slice(json.as_bytes());
                    let _ = io.write_all(&out).await;
                    let _ = io.shutdown().await;
                    return;
                }
                Head::Other => {
                    let prefix = buffer.freeze();
                    return hand_over(Rewound { prefix, io }, app, stop, idle_timeout).await;
                }
            };
            if buffer.len() < head_len + body_len {
                break;
            }
            let body = buffer[head_len..head_len + body_len].to_vec();
            buffer.advance(head_len + body_len);
            let (status, json) = lane.answer(route, body).await;
            out.clear();
            write_head(&mut out, status, json.len());
            out.extend_from_slice(json.as_bytes());
            if io.write_all(&out).await.is_err() {
                return;
            }
        }
        if stopped && buffer.is_empty() {
            return;
        }
        if buffer.capacity() - buffer.len() < 1024 {
            buffer.reserve(4096);
        }
        let read = deadline::within(idle_timeout, io.read_buf(&mut buffer));
        let read = if stopped {
            read.await
        } else {
            tokio::select! {
                biased;
                read = read => read,
                () = &mut stopping => {
                    stopped = true;
                    continue;
                }
            }
        };
        match read {
            Some(Ok(0) | Err(_)) | None => return,
            Some(Ok(_)) => {}
        }
    }
}

/// What the bytes read so far start with.
enum Head<R> {
    /// A request for the lane: its head is `head_len` bytes, its body `body_len`.
    Quick {
        route: R,
        head_len: usize,
        body_len: usize,
    },
    /// Not a whole head yet.
    Partial,
    /// A request whose body cannot be delimited: answered 400 with this message, and the
    /// connection closed (hyper would close it with an empty 400).
    Unframed(String),
    /// Anything else: the router's.
    Other,
}

fn parse<L: QuickLane>(buffer: &[u8], lane: &L) -> Head<L::Route> {
    if buffer.is_empty() {
        return Head::Partial;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buffer) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buffer.len() <= HEAD_LIMIT => return Head::Partial,
        _ => return Head::Other,
    };
    let framing = framing(request.headers);
    if let Framing::Unframed(message) = framing {
        return Head::Unframed(message);
    }
    if request.method != Some("POST") || request.version != Some(1) {
        return Head::Other;
    }
    let Framing::Plain(body_len) = framing else {
        return Head::Other;
    };
    if body_len > QUICK_BODY_LIMIT {
        return Head::Other;
    }
    // As hyper reads the target (origin form only: `/path?query`), so that a target hyper
    // would refuse is refused by hyper.
    let target = request.path.filter(|t| t.starts_with('/'));
    let Some(target) = target.and_then(|t| PathAndQuery::try_from(t).ok()) else {
        return Head::Other;
    };
    match lane.take(target.path(), body_len) {
        Some(route) => Head::Quick {
            route,
            head_len,
            body_len,
        },
        None => Head::Other,
    }
}

/// Why a request's body cannot be delimited, if it cannot: a `Transfer-Encoding` whose last
/// coding is not `chunked` (RFC 9112 §6.3: the server must answer 400 and close, as the next
/// request's start is unknown).
fn unframed(headers: &[httparse::Header<'_>]) -> Option<String> {
    let codings = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let last = codings.rsplit(',').next()?.trim();
    if codings.is_empty() || last.eq_ignore_ascii_case("chunked") {
        return None;
    }
    Some(format!(
        "Transfer-Encoding '{codings}' does not end with chunked, so the body's length cannot \
         be known: send the body chunked or with a Content-Length (compressed: \
         Content-Encoding: gzip)"
    ))
}

/// How a request's body is read, as its headers say.
enum Framing {
    /// Its length, and nothing else about how to read it (absent: an empty body, as
    /// HTTP/1.1 reads a request without one), with one `Host`.
    Plain(usize),
    /// It cannot be delimited: the message says why (see [`unframed`]).
    Unframed(String),
    /// Anything else (another `Host` count included: hyper's path refuses it).
    Other,
}

/// [`Framing`] from one pass over the headers (the codings are gathered again only for a
/// request that has a `Transfer-Encoding`).
fn framing(headers: &[httparse::Header<'_>]) -> Framing {
    let mut length = None;
    let mut hosts = 0;
    let mut plain = true;
    let mut encoded = false;
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            let digits = header.value;
            let valid =
                !digits.is_empty() && digits.len() <= 9 && digits.iter().all(u8::is_ascii_digit);
            if length.is_some() || !valid {
                plain = false;
            }
            length = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok());
        } else if name.eq_ignore_ascii_case("connection") {
            plain &= header.value.eq_ignore_ascii_case(b"keep-alive");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            encoded = true;
        } else if ["expect", "upgrade", "content-encoding"]
            .iter()
            .any(|special| name.eq_ignore_ascii_case(special))
        {
            plain = false;
        }
    }
    if let Some(message) = encoded.then(|| unframed(headers)).flatten() {
        return Framing::Unframed(message);
    }
    if plain && !encoded && hosts == 1 {
        Framing::Plain(length.unwrap_or(0))
    } else {
        Framing::Other
    }
}

/// The head hyper writes for a JSON answer of `len` bytes.
fn write_head(out: &mut Vec<u8>, status: StatusCode, len: usize) {
    write_head_with(out, status, len, "");
}

/// [`write_head`], for the last answer on the connection.
fn write_head_closing(out: &mut Vec<u8>, status: StatusCode, len: usize) {
    write_head_with(out, status, len, "connection: close\r\n");
}

fn write_head_with(out: &mut Vec<u8>, status: StatusCode, len: usize, extra: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(b"content-type: application/json\r\ncontent-length: ");
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{len}");
    out.extend_from_slice(b"\r\ndate: ");
    DATE.with(|date| date.append_to(out));
    out.extend_from_slice(b"\r\n\r\n");
}

thread_local! {
    static DATE: CachedDate = CachedDate::default();
}

/// The `date` header's value, formatted once a second per thread (as hyper does).
#[derive(Default)]
struct CachedDate(std::cell::RefCell<(u64, String)>);

impl CachedDate {
    /// Appends the current second's date.
    fn append_to(&self, out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let mut cached = self.0.borrow_mut();
        // The cache starts at second 0, which is never now.
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(cached.1.as_bytes());
    }
}

/// Serves the rest of a connection with hyper, HTTP/1.1 only (as TF Serving's REST server:
/// hyper's HTTP/2 has no timer for an idle or half-sent connection, so a client could hold
/// connections open for ever with a 24-byte preface), until it closes; after `stop`,
/// gracefully.
async fn hand_over<S>(io: S, app: Router, stop: soma_net::Stop, idle_timeout: Option<Duration>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt as _;
    let service = app.map_request(|request: axum::http::Request<hyper::body::Incoming>| {
        request.map(axum::body::Body::new)
    });
    let service = hyper_util::service::TowerToHyperService::new(service);
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    // hyper's header timer runs from when it starts waiting for a request's head, idle
    // keep-alive included: the lane's rule for HTTP/1.1. (A body that stalls is the
    // router's: `read_body`.)
    // A client may end its side of the connection once its request is sent and wait for the
    // answer (as the quick lane serves it): without `half_close` hyper would take that end
    // for the client leaving and drop the request unanswered.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .half_close(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let stopping = stop.requested();
    tokio::pin!(stopping);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = &mut stopping => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

/// A connection whose first bytes were already read: they are read again first.
struct Rewound<S> {
    prefix: Bytes,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Everything;

    impl QuickLane for Everything {
        type Route = String;

        fn take(&self, path: &str, _: usize) -> Option<String> {
            Some(path.to_owned())
        }

        async fn answer(&self, path: String, _: Vec<u8>) -> (StatusCode, String) {
            (StatusCode::OK, path)
        }
    }

    fn head(request: &str) -> Head<String> {
        parse(request.as_bytes(), &Everything)
    }

    fn is_quick(request: &str) -> Option<(String, usize, usize)> {
        match head(request) {
            Head::Quick {
                route,
                head_len,
                body_len,
            } => Some((route, head_len, body_len)),
            _ => None,
        }
    }

    #[test]
    fn a_plain_post_is_quick() {
        let request = "POST /v1/models/m:predict?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nConnection: Keep-Alive\r\n\r\n";
        let (path, head_len, body_len) = is_quick(request).unwrap();
        assert_eq!(path, "/v1/models/m:predict");
        assert_eq!((head_len, body_len), (request.len(), 12));
        let empty = "POST / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(is_quick(empty).is_some_and(|(_, _, len)| len == 0));
    }

    #[test]
    fn a_body_that_does_not_end_chunked_cannot_be_delimited() {
        for request in [
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: gzip\r\n\r\n",
        ] {
            let Head::Unframed(message) = head(request) else {
                panic!("{request:?}");
            };
            assert!(message.contains("does not end with chunked"), "{message}");
        }
        // Ending with chunked, the body can be read: hyper's path takes it (and refuses the
        // other codings itself, with 501).
        for request in [
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n",
        ] {
            assert!(matches!(head(request), Head::Other), "{request:?}");
        }
    }

    #[test]
    fn anything_hyper_reads_differently_is_handed_over() {
        for request in [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "post / HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 16385\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
            // No Host, or two: hyper's path refuses them (RFC 9112 §3.2).
            "POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 1\r\n\r\n",
        ] {
            assert!(
                matches!(head(request), Head::Other),
                "{request:?} was not handed over"
            );
        }
        let many = format!(
            "POST / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(head(&many), Head::Other));
        let long = format!("POST /{} HTTP/1.1\r\n", "a".repeat(HEAD_LIMIT));
        assert!(matches!(head(&long), Head::Other));
    }

    #[test]
    fn an_unfinished_head_waits_for_more() {
        assert!(matches!(head(""), Head::Partial));
        assert!(matches!(head("POST /v1/models/m:pre"), Head::Partial));
        assert!(matches!(
            head("POST / HTTP/1.1\r\nContent-Length: 3\r\n"),
            Head::Partial
        ));
    }

    #[test]
    fn the_head_is_hypers() {
        let mut out = Vec::new();
        write_head(&mut out, StatusCode::NOT_FOUND, 59);
        let text = String::from_utf8(out).unwrap();
        let (start, date) = text.split_once("date: ").unwrap();
        assert_eq!(
            start,
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 59\r\n"
        );
        let date = date.strip_suffix("\r\n\r\n").unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    }
}
