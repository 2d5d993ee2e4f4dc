//! One HTTP/2 connection of the lane: frames in, requests out to [`answer`], answers back
//! as frames, with flow control both ways.
//!
//! Everything happens in one task's poll ([`Connection::poll`]): read the frames that have
//! arrived, take the answers that are ready, write. Each request whose body is complete
//! runs as a task of its own (as under hyper), and its [`Reply`] comes back here.

use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::{Aborted, FutureExt as _};
use futures::stream::{FuturesUnordered, Stream as _, StreamExt as _};
use h2::frame::{self, Frame, Pseudo, StreamId};
use h2::proto::Error as FrameError;
use h2::{Codec, Reason};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, Sleep};
use tonic::Status;
use tonic::codegen::Body as _;
use tonic::codegen::http::uri::{Authority, PathAndQuery, Scheme};
use tonic::codegen::http::{HeaderMap, StatusCode, Uri};

use super::Lane;
use super::answer::{self, Head, Reply, ReplyBody};
use crate::held::Held;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a new connection may take to send the HTTP/2 preface and its SETTINGS frame,
/// which clients send as soon as they connect (over TLS: once the handshake, which has a
/// deadline of its own, is done). gRPC's C++ server allows 120 s for its whole handshake.
/// Without a deadline a client that connects and sends nothing would hold a file
/// descriptor as long as it liked; enough of them would shut every other client out.
const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// Each stream's receive window and the connection's: hyper's defaults, which tonic's
/// server uses.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 1 << 20;

/// HTTP/2's window before SETTINGS change it, and its largest.
const DEFAULT_WINDOW: i64 = 65_535;
const MAX_WINDOW: i64 = (1 << 31) - 1;

/// Requests at once on one connection; more are refused (REFUSED_STREAM, which clients
/// retry).
const MAX_STREAMS: u32 = 1024;

/// The largest request head (hyper's limit): larger ones get HTTP 431.
const MAX_HEADER_LIST: u32 = 16 << 10;

/// Frames waiting to be written beyond which the connection stops reading: a client that
/// sends without reading its answers cannot grow the server's memory without bound.
const OUTBOX_LIMIT: usize = 1024;

/// Requests a client may cancel (RST_STREAM) while their work runs, per [`RESET_WINDOW`];
/// past it the connection gets GOAWAY(ENHANCE_YOUR_CALM) and closes. A cancelled request's
/// task is aborted, but a prediction already on a blocking thread runs to its end: without
/// a bound, a client that opens and cancels requests in a loop ("rapid reset") would queue
/// unbounded work while holding none of the connection's 1,024 streams.
const MAX_RESETS: u32 = 1024;
const RESET_WINDOW: Duration = Duration::from_secs(10);

/// The payload of the lane's keepalive PINGs.
const KEEPALIVE_PING: [u8; 8] = *b"soma-kap";

/// Serves one connection until it closes, or, after `stop`, until its open requests are
/// answered. Bytes that are not an HTTP/2 connection preface, or no preface within
/// [`PREFACE_TIMEOUT`], close it.
pub(crate) async fn serve_connection<T>(mut io: T, lane: Arc<Lane>, stop: soma_net::Stop)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut preface = [0; PREFACE.len()];
    // The client's SETTINGS, which end its preface, must come by the same deadline.
    let handshake = Instant::now() + PREFACE_TIMEOUT;
    tokio::select! {
        read = tokio::time::timeout_at(handshake, io.read_exact(&mut preface)) => {
            if !matches!(read, Ok(Ok(_))) || &preface != PREFACE {
                return;
            }
        }
        () = stop.clone().requested() => return,
    }
    let mut connection = Connection::new(io, lane, stop, handshake);
    poll_fn(|cx| connection.poll(cx)).await;
}

struct Connection<T> {
    codec: Codec<T, Bytes>,
    lane: Arc<Lane>,
    streams: HashMap<u32, Stream>,
    /// The highest stream id the client has opened, and the highest the server has taken
    /// (what a GOAWAY names: refused streams are not taken).
    highest_stream_id: u32,
    last_stream_id: u32,
    /// The last stream the codec reset before it was opened (a malformed request head): it
    /// counts as opened and closed, and the frames the client sent behind it are dropped.
    reset_unopened: Option<u32>,
    answering: FuturesUnordered<Answering>,
    outbox: VecDeque<Frame<Bytes>>,
    /// Streams with body left to send when the windows allow.
    blocked: VecDeque<u32>,
    /// Streams whose body is still being produced.
    streaming: Vec<u32>,
    /// What the client lets the server send on the connection, and on a new stream.
    send_window: i64,
    initial_send_window: i64,
    /// Bytes received on the connection and not yet given back in a WINDOW_UPDATE.
    unacked: u32,
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    too_old: Option<Pin<Box<Sleep>>>,
    /// Set when the connection went away for its age, if its requests have only so long:
    /// when it fires the connection closes, with whatever is still running.
    grace: Option<Pin<Box<Sleep>>>,
    /// Armed while answers wait to be sent and none of their bytes move; when it fires the
    /// connection is dropped (see [`Lane::stalled_send_timeout`]).
    stall: Option<Pin<Box<Sleep>>>,
    keepalive: Option<Keepalive>,
    /// GOAWAY sent or received: no new streams, and the connection closes once the open
    /// ones are answered.
    closing: bool,
    goaway_sent: bool,
    /// A connection error: close as soon as the GOAWAY is written.
    failed: bool,
    /// The client's first SETTINGS, which must follow its preface, has come.
    settings_seen: bool,
    /// Until then, the deadline for it ([`PREFACE_TIMEOUT`] after the connection opened).
    handshake: Option<Pin<Box<Sleep>>>,
    /// Requests the client cancelled while their work ran, since `resets_since`.
    resets: u32,
    resets_since: Instant,
}

struct Stream {
    state: State,
    /// Bytes received on the stream and not yet given back in a WINDOW_UPDATE.
    unacked: u32,
    send_window: i64,
}

enum State {
    Receiving {
        head: Head,
        body: Body,
        /// `body`'s bytes, counted against the lane's budget until the request's work ends.
        held: Held,
    },
    /// The request is being answered; aborted if the client resets the stream.
    Answering(Abort),
    /// Answered; `data` waits for window, `more` (a streaming body) for its next frame.
    Sending {
        data: Bytes,
        trailers: Option<HeaderMap>,
        more: Option<Pin<Box<tonic::body::Body>>>,
    },
    /// Reset while its answer was being worked out: the task is aborted, and whatever it
    /// ends with is dropped.
    Cancelled,
}

/// A request body: most are one DATA frame, kept as the frame's bytes.
enum Body {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(bytes) => bytes.len(),
            Body::Many(bytes) => bytes.len(),
        }
    }

    /// The bytes the body holds once `more` is appended ([`Body::append`]): its length, or
    /// the room its buffer takes for the whole message when frames are joined.
    fn held_after(&self, more: &Bytes, limit: usize) -> usize {
        let len = self.len() + more.len();
        match self {
            Body::Empty => len,
            Body::One(_) => len.max(self.room(limit)),
            Body::Many(joined) => len.max(joined.capacity()),
        }
    }

    /// Room for the message the prefix declares with its prefix, taken at once when a
    /// second frame comes: a buffer that grows as it fills holds up to twice the message,
    /// and copies it at each doubling. None for a message over `limit`, which is refused.
    fn room(&self, limit: usize) -> usize {
        self.declared_len()
            .filter(|&declared| declared <= limit)
            .map_or(0, |declared| declared + 5)
    }

    /// Appends `more`; see [`Body::held_after`] for the buffer it takes.
    fn append(&mut self, more: Bytes, limit: usize) {
        let room = self.room(limit);
        *self = match std::mem::replace(self, Body::Empty) {
            Body::Empty => Body::One(more),
            Body::One(first) => {
                let len = first.len() + more.len();
                let mut joined = BytesMut::with_capacity(len.max(room));
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&more);
                Body::Many(joined)
            }
            Body::Many(mut joined) => {
                joined.extend_from_slice(&more);
                Body::Many(joined)
            }
        }
    }

    /// The length the gRPC message prefix declares, once the body has it.
    fn declared_len(&self) -> Option<usize> {
        let bytes: &[u8] = match self {
            Body::Empty => return None,
            Body::One(bytes) => bytes,
            Body::Many(bytes) => bytes,
        };
        let prefix: [u8; 4] = bytes.get(1..5)?.try_into().ok()?;
        Some(u32::from_be_bytes(prefix) as usize)
    }

    fn freeze(self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::One(bytes) => bytes,
            Body::Many(bytes) => bytes.freeze(),
        }
    }
}

/// A request's answer being worked out, and the stream it answers.
struct Answering {
    id: u32,
    work: Work,
}

enum Work {
    /// In a task of its own.
    Task(JoinHandle<Reply>),
    /// In the connection's own task (the connection's only request, see
    /// [`Connection::dispatch`]); a panic in it fails the request alone, as in a task.
    Here(Pin<Box<dyn Future<Output = Result<Reply, Aborted>> + Send>>),
}

/// How a stream's request is stopped when the client resets the stream.
enum Abort {
    Task(AbortHandle),
    Here(futures::future::AbortHandle),
}

impl Abort {
    fn abort(&self) {
        match self {
            Abort::Task(task) => task.abort(),
            Abort::Here(work) => work.abort(),
        }
    }
}

impl Future for Answering {
    /// The reply; `None` if the request was aborted.
    type Output = (u32, Option<Reply>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let id = self.id;
        let reply = match &mut self.work {
            Work::Task(task) => ready!(Pin::new(task).poll(cx))
                .map_or_else(|e| (!e.is_cancelled()).then(|| failed(&e)), Some),
            Work::Here(work) => ready!(work.as_mut().poll(cx)).ok(),
        };
        Poll::Ready((id, reply))
    }
}

impl Drop for Answering {
    // A connection that closes stops the work of its requests.
    fn drop(&mut self) {
        if let Work::Task(task) = &self.work {
            task.abort();
        }
    }
}

/// The reply to a request whose work panicked.
fn failed(e: &dyn std::fmt::Display) -> Reply {
    Reply::status(Status::internal(format!("the request's task failed: {e}")))
}

struct Keepalive {
    interval: Duration,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    /// A PING is out and its answer not in.
    waiting: bool,
}

impl<T> Connection<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    /// A connection whose client sent its preface; its SETTINGS are due by `handshake`.
    fn new(io: T, lane: Arc<Lane>, stop: soma_net::Stop, handshake: Instant) -> Connection<T> {
        let mut codec = Codec::new(io);
        codec.set_max_recv_header_list_size(MAX_HEADER_LIST as usize);
        let mut settings = frame::Settings::default();
        settings.set_initial_window_size(Some(STREAM_WINDOW));
        settings.set_max_concurrent_streams(Some(MAX_STREAMS));
        settings.set_max_header_list_size(Some(MAX_HEADER_LIST));
        let mut outbox = VecDeque::new();
        outbox.push_back(settings.into());
        outbox.push_back(
            frame::WindowUpdate::new(StreamId::zero(), CONNECTION_WINDOW - DEFAULT_WINDOW as u32)
                .into(),
        );
        let too_old = lane
            .max_connection_age
            .map(|age| Box::pin(tokio::time::sleep(age)));
        let keepalive = lane.keepalive.map(|(interval, timeout)| Keepalive {
            interval,
            timeout,
            timer: Box::pin(tokio::time::sleep(interval)),
            waiting: false,
        });
        Connection {
            codec,
            lane,
            streams: HashMap::new(),
            highest_stream_id: 0,
            reset_unopened: None,
            last_stream_id: 0,
            answering: FuturesUnordered::new(),
            outbox,
            blocked: VecDeque::new(),
            streaming: Vec::new(),
            send_window: DEFAULT_WINDOW,
            initial_send_window: DEFAULT_WINDOW,
            unacked: 0,
            stopping: Box::pin(stop.requested()),
            too_old,
            grace: None,
            stall: None,
            keepalive,
            closing: false,
            goaway_sent: false,
            failed: false,
            settings_seen: false,
            handshake: Some(Box::pin(tokio::time::sleep_until(handshake))),
            resets: 0,
            resets_since: Instant::now(),
        }
    }

    /// Ready when the connection is done.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut progress = false;
            if let Some(handshake) = &mut self.handshake {
                if self.settings_seen {
                    self.handshake = None;
                } else if handshake.as_mut().poll(cx).is_ready() {
                    // A preface without SETTINGS: the connection is not HTTP/2 yet.
                    return Poll::Ready(());
                }
            }
            if !self.closing && self.should_go_away(cx) {
                self.go_away(Reason::NO_ERROR);
                progress = true;
            }
            match self.poll_keepalive(cx) {
                Poll::Ready(Ok(())) => progress = true,
                Poll::Ready(Err(())) => return Poll::Ready(()),
                Poll::Pending => {}
            }
            while !self.failed && self.outbox.len() < OUTBOX_LIMIT {
                match Pin::new(&mut self.codec).poll_next(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        progress = true;
                        if let Err(reason) = self.on_frame(frame) {
                            self.fail(reason);
                        }
                    }
                    Poll::Ready(Some(Err(FrameError::Reset(id, reason, _)))) => {
                        progress = true;
                        let id = u32::from(id);
                        if id > self.highest_stream_id && id % 2 == 1 {
                            // Else its DATA, right behind, would be DATA on an idle stream:
                            // a connection error, failing every other request on it.
                            self.highest_stream_id = id;
                            self.reset_unopened = Some(id);
                        }
                        self.reset(id, reason);
                    }
                    Poll::Ready(Some(Err(FrameError::GoAway(_, reason, _)))) => {
                        progress = true;
                        self.fail(reason);
                    }
                    Poll::Ready(Some(Err(FrameError::Io(..))) | None) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            progress |= self.poll_streaming(cx);
            while let Poll::Ready(Some((id, reply))) = self.answering.poll_next_unpin(cx) {
                progress = true;
                match reply {
                    Some(reply) => self.on_reply(id, reply),
                    // Aborted: its stream was reset.
                    None => {
                        self.streams.remove(&id);
                    }
                }
            }
            let Ok(flushed) = self.write(cx) else {
                return Poll::Ready(());
            };
            // Checked once the GOAWAY has been written (as far as the socket takes it).
            if self
                .grace
                .as_mut()
                .is_some_and(|grace| grace.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(());
            }
            if flushed && (self.failed || (self.closing && self.streams.is_empty())) {
                return Poll::Ready(());
            }
            if !progress {
                if self.send_stalled(flushed, cx) {
                    return Poll::Ready(());
                }
                return Poll::Pending;
            }
        }
    }

    /// Whether answers have waited to be sent, with none of their bytes moving, for the
    /// lane's `stalled_send_timeout`: a client that asks and never reads (or never gives
    /// window) would otherwise hold its answers, up to 1,024 streams' worth, for as long as
    /// it keeps the connection open. The timer is armed only while something waits, so a
    /// connection whose answers go out at once sets none.
    fn send_stalled(&mut self, flushed: bool, cx: &mut Context<'_>) -> bool {
        let Some(timeout) = self.lane.stalled_send_timeout else {
            return false;
        };
        if flushed && self.blocked.is_empty() {
            self.stall = None;
            return false;
        }
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        stall.as_mut().poll(cx).is_ready()
    }

    /// Whether the server is stopping or the connection has reached its maximum age (which
    /// starts its grace period, if it has one).
    fn should_go_away(&mut self, cx: &mut Context<'_>) -> bool {
        let too_old = self
            .too_old
            .as_mut()
            .is_some_and(|age| age.as_mut().poll(cx).is_ready());
        if too_old {
            self.grace = self
                .lane
                .max_connection_age_grace
                .map(|grace| Box::pin(tokio::time::sleep(grace)));
            return true;
        }
        self.stopping.as_mut().poll(cx).is_ready()
    }

    /// Ready(Ok) when a PING was queued, Ready(Err) when the last one went unanswered.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        let Some(keepalive) = &mut self.keepalive else {
            return Poll::Pending;
        };
        if keepalive.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if keepalive.waiting {
            return Poll::Ready(Err(()));
        }
        keepalive.waiting = true;
        let deadline = Instant::now() + keepalive.timeout;
        keepalive.timer.as_mut().reset(deadline);
        self.outbox
            .push_back(frame::Ping::new(KEEPALIVE_PING).into());
        Poll::Ready(Ok(()))
    }

    /// Writes what the outbox holds; true once everything is written out.
    fn write(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        while !self.outbox.is_empty() {
            match self.codec.poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(false),
            }
            let frame = self.outbox.pop_front().expect("the outbox is not empty");
            // An answer's bytes go out: answers are moving. (Not PINGs or their acks: a
            // client that pings but gives no window must not keep its answers for ever.)
            if matches!(frame, Frame::Data(_)) {
                self.stall = None;
            }
            self.codec
                .buffer(frame)
                .map_err(|e| io::Error::other(format!("HTTP/2 frame not written: {e:?}")))?;
        }
        match self.codec.flush(cx) {
            Poll::Ready(Ok(())) => Ok(true),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Ok(false),
        }
    }

    /// Handles one frame from the client; `Err` is a connection error.
    fn on_frame(&mut self, frame: Frame) -> Result<(), Reason> {
        if !self.settings_seen {
            // The preface ends with the client's SETTINGS (RFC 9113 §3.4).
            if !matches!(&frame, Frame::Settings(s) if !s.is_ack()) {
                return Err(Reason::PROTOCOL_ERROR);
            }
            self.settings_seen = true;
        }
        match frame {
            Frame::Headers(headers) => self.on_headers(headers),
            Frame::Data(data) => self.on_data(data),
            Frame::Settings(settings) => self.on_settings(&settings),
            Frame::WindowUpdate(update) => self.on_window_update(&update),
            Frame::Ping(ping) => {
                if !ping.is_ack() {
                    self.outbox
                        .push_back(frame::Ping::pong(ping.into_payload()).into());
                } else if let Some(keepalive) = &mut self.keepalive
                    && *ping.payload() == KEEPALIVE_PING
                {
                    keepalive.waiting = false;
                    let next = Instant::now() + keepalive.interval;
                    keepalive.timer.as_mut().reset(next);
                }
                Ok(())
            }
            Frame::Reset(reset) => {
                let id = u32::from(reset.stream_id());
                if id > self.highest_stream_id {
                    // RST_STREAM on an idle stream is a connection error (RFC 9113 §6.4).
                    return Err(Reason::PROTOCOL_ERROR);
                }
                let working = self
                    .streams
                    .get(&id)
                    .is_some_and(|stream| matches!(stream.state, State::Answering(_)));
                self.forget(id);
                if working && !self.count_reset() {
                    return Err(Reason::ENHANCE_YOUR_CALM);
                }
                Ok(())
            }
            Frame::GoAway(_) => {
                // The client opens no more streams; answer the open ones, then close.
                self.closing = true;
                Ok(())
            }
            Frame::Priority(_) => Ok(()),
            Frame::PushPromise(_) => Err(Reason::PROTOCOL_ERROR),
        }
    }

    fn on_headers(&mut self, headers: frame::Headers) -> Result<(), Reason> {
        let id = u32::from(headers.stream_id());
        let end = headers.is_end_stream();
        if let Some(stream) = self.streams.get_mut(&id) {
            // Trailers of a request: they end its body (gRPC requests carry none).
            if matches!(stream.state, State::Receiving { .. }) && end {
                self.dispatch(id);
            } else {
                self.reset(id, Reason::PROTOCOL_ERROR);
            }
            return Ok(());
        }
        if self.reset_unopened == Some(id) {
            // Its RST_STREAM is sent; frames on a stream the server reset are ignored.
            return Ok(());
        }
        if id <= self.highest_stream_id || id % 2 == 0 {
            return Err(Reason::PROTOCOL_ERROR);
        }
        self.highest_stream_id = id;
        if self.closing || self.streams.len() >= MAX_STREAMS as usize {
            self.outbox
                .push_back(frame::Reset::new(headers.stream_id(), Reason::REFUSED_STREAM).into());
            return Ok(());
        }
        self.last_stream_id = id;
        let over_size = headers.is_over_size();
        let (pseudo, fields) = headers.into_parts();
        let Some(head) = request_head(pseudo, fields) else {
            self.outbox
                .push_back(frame::Reset::new(id.into(), Reason::PROTOCOL_ERROR).into());
            return Ok(());
        };
        self.streams.insert(
            id,
            Stream {
                state: State::Receiving {
                    head,
                    body: Body::Empty,
                    held: self.lane.request_bytes.hold(),
                },
                unacked: 0,
                send_window: self.initial_send_window,
            },
        );
        if over_size {
            let reply = Reply {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                headers: HeaderMap::new(),
                body: ReplyBody::Full {
                    data: Bytes::new(),
                    trailers: None,
                },
            };
            self.answer_early(id, reply, end, Reason::REFUSED_STREAM);
        } else if end {
            self.dispatch(id);
        }
        Ok(())
    }

    fn on_data(&mut self, data: frame::Data) -> Result<(), Reason> {
        let id = u32::from(data.stream_id());
        let end = data.is_end_stream();
        // h2 does not say how long a padded frame's padding was (at most 256 bytes with its
        // length); giving back a little more window than was used is harmless, less would
        // stall the client. gRPC clients do not pad.
        let len = data.payload().len() as u32 + if data.is_padded() { 256 } else { 0 };
        self.unacked += len;
        if self.unacked >= CONNECTION_WINDOW / 2 {
            let update = frame::WindowUpdate::new(StreamId::zero(), self.unacked);
            self.outbox.push_back(update.into());
            self.unacked = 0;
        }
        let limit = self.lane.max_message_bytes;
        let Some(stream) = self.streams.get_mut(&id) else {
            // A stream already closed or refused (its late frames are dropped), or never
            // opened.
            return if id > self.highest_stream_id {
                Err(Reason::PROTOCOL_ERROR)
            } else {
                Ok(())
            };
        };
        let State::Receiving { body, held, .. } = &mut stream.state else {
            self.reset(id, Reason::STREAM_CLOSED);
            return Ok(());
        };
        let payload = data.into_payload();
        let more = body
            .held_after(&payload, limit)
            .saturating_sub(held.bytes());
        if !held.grow(more) {
            let reply = Reply::status(self.lane.request_bytes.exhausted());
            self.answer_early(id, reply, end, Reason::NO_ERROR);
            return Ok(());
        }
        body.append(payload, limit);
        let declared = body.declared_len().unwrap_or(0);
        if declared > limit || body.len() > limit.saturating_add(5) {
            let found = declared.max(body.len().saturating_sub(5));
            let reply = Reply::status(crate::limit::too_large(found, limit));
            self.answer_early(id, reply, end, Reason::NO_ERROR);
            return Ok(());
        }
        if end {
            self.dispatch(id);
            return Ok(());
        }
        stream.unacked += len;
        if stream.unacked >= STREAM_WINDOW / 2 {
            let update = frame::WindowUpdate::new(id.into(), stream.unacked);
            self.outbox.push_back(update.into());
            stream.unacked = 0;
        }
        Ok(())
    }

    fn on_settings(&mut self, settings: &frame::Settings) -> Result<(), Reason> {
        if settings.is_ack() {
            return Ok(());
        }
        if let Some(size) = settings.max_frame_size() {
            self.codec.set_max_send_frame_size(size as usize);
        }
        if let Some(size) = settings.header_table_size() {
            self.codec.set_send_header_table_size(size as usize);
        }
        if let Some(size) = settings.initial_window_size() {
            let change = i64::from(size) - self.initial_send_window;
            self.initial_send_window = i64::from(size);
            for stream in self.streams.values_mut() {
                stream.send_window += change;
                if stream.send_window > MAX_WINDOW {
                    return Err(Reason::FLOW_CONTROL_ERROR);
                }
            }
        }
        self.outbox.push_back(frame::Settings::ack().into());
        self.unblock();
        Ok(())
    }

    fn on_window_update(&mut self, update: &frame::WindowUpdate) -> Result<(), Reason> {
        let id = u32::from(update.stream_id());
        let increment = i64::from(update.size_increment());
        if id == 0 {
            if increment == 0 {
                return Err(Reason::PROTOCOL_ERROR);
            }
            self.send_window += increment;
            if self.send_window > MAX_WINDOW {
                return Err(Reason::FLOW_CONTROL_ERROR);
            }
        } else if let Some(stream) = self.streams.get_mut(&id) {
            stream.send_window += increment;
            if increment == 0 {
                self.reset(id, Reason::PROTOCOL_ERROR);
            } else if stream.send_window > MAX_WINDOW {
                self.reset(id, Reason::FLOW_CONTROL_ERROR);
            }
        }
        self.unblock();
        Ok(())
    }

    /// The stream's body is complete: its request starts. The connection's only request
    /// runs in the connection's task, as an HTTP/1.1 request does in soma's REST lane (no
    /// task to spawn, no wake-up to deliver its answer); with others in flight, it runs as a
    /// task of its own, so that requests of one connection run side by side (and, through
    /// `run_balanced`, on other threads).
    fn dispatch(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        // (Cancelled only until the task's handle is in.)
        let State::Receiving { head, body, held } =
            std::mem::replace(&mut stream.state, State::Cancelled)
        else {
            return;
        };
        // A content-length that is not the body's length makes the request malformed (RFC
        // 9113 §8.1.1): a stream error, as under tonic.
        if let Some(declared) = head
            .headers
            .get(tonic::codegen::http::header::CONTENT_LENGTH)
            && declared.to_str().ok().and_then(|v| v.parse::<usize>().ok()) != Some(body.len())
        {
            self.reset(id, Reason::PROTOCOL_ERROR);
            return;
        }
        let lane = Arc::clone(&self.lane);
        // Boxed: a future is moved whole on its way into a task, and `run_balanced`'s holds
        // its work twice: boxed, what is copied is a pointer (one allocation instead).
        let work = Box::pin(async move {
            let _held = held;
            answer::answer(&lane, head, body.freeze()).await
        });
        let work = soma_net::run_balanced(work);
        let (work, abort) = if self.answering.is_empty() {
            let (work, abort) = futures::future::abortable(AssertUnwindSafe(work).catch_unwind());
            let work = work.map(|done| {
                done.map(|reply| reply.unwrap_or_else(|e| failed(&panic_message(&*e))))
            });
            (Work::Here(Box::pin(work)), Abort::Here(abort))
        } else {
            let task = tokio::spawn(work);
            let abort = Abort::Task(task.abort_handle());
            (Work::Task(task), abort)
        };
        stream.state = State::Answering(abort);
        self.answering.push(Answering { id, work });
    }

    /// Answers a stream before its request is complete, then tells the client to stop
    /// sending it (with `reason`) unless it already has.
    fn answer_early(&mut self, id: u32, reply: Reply, client_done: bool, reason: Reason) {
        self.on_reply(id, reply);
        if !client_done {
            self.outbox
                .push_back(frame::Reset::new(id.into(), reason).into());
            self.streams.remove(&id);
        }
    }

    fn on_reply(&mut self, id: u32, reply: Reply) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if matches!(stream.state, State::Cancelled) {
            self.streams.remove(&id);
            return;
        }
        let mut headers =
            frame::Headers::new(id.into(), Pseudo::response(reply.status), reply.headers);
        let (data, trailers, more) = match reply.body {
            ReplyBody::Full {
                data,
                trailers: None,
            } if data.is_empty() => {
                headers.set_end_stream();
                self.outbox.push_back(headers.into());
                self.streams.remove(&id);
                return;
            }
            ReplyBody::Full { data, trailers } => (data, trailers, None),
            ReplyBody::Streaming(body) => (Bytes::new(), None, Some(Box::pin(body))),
        };
        self.outbox.push_back(headers.into());
        stream.state = State::Sending {
            data,
            trailers,
            more,
        };
        self.send_body(id);
    }

    /// Sends as much of the stream's answer as the windows allow (and, at the end, its
    /// trailers), and notes what it waits for: window (`blocked`) or body (`streaming`).
    fn send_body(&mut self, id: u32) {
        let max_frame = self.codec.max_send_frame_size();
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let State::Sending {
            data,
            trailers,
            more,
        } = &mut stream.state
        else {
            return;
        };
        let mut ended = false;
        while !data.is_empty() {
            let window = self.send_window.min(stream.send_window);
            if window <= 0 {
                if !self.blocked.contains(&id) {
                    self.blocked.push_back(id);
                }
                return;
            }
            let n = data.len().min(window as usize).min(max_frame);
            self.stall = None;
            let mut frame = frame::Data::new(id.into(), data.split_to(n));
            self.send_window -= n as i64;
            stream.send_window -= n as i64;
            if data.is_empty() && trailers.is_none() && more.is_none() {
                frame.set_end_stream(true);
                ended = true;
            }
            self.outbox.push_back(frame.into());
        }
        if more.is_some() {
            if !self.streaming.contains(&id) {
                self.streaming.push(id);
            }
            return;
        }
        if let Some(trailers) = trailers.take() {
            self.outbox
                .push_back(frame::Headers::trailers(id.into(), trailers).into());
        } else if !ended {
            // A streaming body that ended without trailers.
            let mut end = frame::Data::new(id.into(), Bytes::new());
            end.set_end_stream(true);
            self.outbox.push_back(end.into());
        }
        self.streams.remove(&id);
    }

    /// Gives the streams waiting for window what the windows now allow.
    fn unblock(&mut self) {
        for _ in 0..self.blocked.len() {
            let id = self.blocked.pop_front().expect("counted");
            self.send_body(id);
        }
    }

    /// Takes the frames that streaming bodies have ready (while their streams have window
    /// for them); true if any came.
    fn poll_streaming(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut i = 0;
        while i < self.streaming.len() {
            let id = self.streaming[i];
            let Some(State::Sending {
                data,
                trailers,
                more: more @ Some(_),
            }) = self.streams.get_mut(&id).map(|s| &mut s.state)
            else {
                self.streaming.swap_remove(i);
                continue;
            };
            if !data.is_empty() {
                // Waiting for window: the body is not read ahead.
                i += 1;
                continue;
            }
            let body = more.as_mut().expect("matched Some");
            match body.as_mut().poll_frame(cx) {
                Poll::Pending => {
                    i += 1;
                    continue;
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(bytes) => *data = bytes,
                    Err(frame) => {
                        *trailers = frame.into_trailers().ok();
                        *more = None;
                    }
                },
                Poll::Ready(None) => *more = None,
                Poll::Ready(Some(Err(_))) => {
                    self.streaming.swap_remove(i);
                    self.reset(id, Reason::INTERNAL_ERROR);
                    progress = true;
                    continue;
                }
            }
            progress = true;
            // Sends what came; the stream is looked at again in this same pass.
            self.send_body(id);
        }
        progress
    }

    /// A stream error: tell the client, and forget the stream.
    fn reset(&mut self, id: u32, reason: Reason) {
        self.outbox
            .push_back(frame::Reset::new(id.into(), reason).into());
        self.forget(id);
    }

    /// Drops a stream the client or the server has reset. One whose answer is being worked
    /// out has its task aborted (as a tonic server drops a reset call's future: a request
    /// still waiting for a permit or a batch never runs) and stays, cancelled, until the
    /// task ends.
    fn forget(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if let State::Answering(task) = &stream.state {
            task.abort();
            stream.state = State::Cancelled;
        } else {
            self.streams.remove(&id);
        }
    }

    /// Counts a request the client cancelled while it ran; false past [`MAX_RESETS`] in
    /// [`RESET_WINDOW`].
    fn count_reset(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.resets_since) > RESET_WINDOW {
            self.resets = 0;
            self.resets_since = now;
        }
        self.resets += 1;
        self.resets <= MAX_RESETS
    }

    /// No new streams: the client may send those above the last one again elsewhere.
    fn go_away(&mut self, reason: Reason) {
        self.closing = true;
        if !self.goaway_sent {
            self.goaway_sent = true;
            let frame = frame::GoAway::new(self.last_stream_id.into(), reason);
            self.outbox.push_back(frame.into());
        }
    }

    /// A connection error: GOAWAY with `reason`, then close.
    fn fail(&mut self, reason: Reason) {
        self.go_away(reason);
        self.failed = true;
    }
}

/// The request's method, URI and headers; `None` if its pseudo-headers are missing or
/// malformed (`:method`, `:scheme` and `:path` are required, RFC 9113 §8.3.1).
///
/// An `:authority` that is not a host and port is left out rather than refused: gRPC's
/// Python and Java clients send a Unix socket's path there, and TF Serving's C++ server
/// answers them (no service routes on the authority).
fn request_head(pseudo: Pseudo, headers: HeaderMap) -> Option<Head> {
    let method = pseudo.method?;
    let scheme = pseudo.scheme?;
    let mut parts = tonic::codegen::http::uri::Parts::default();
    parts.path_and_query = Some(PathAndQuery::try_from(&*pseudo.path?).ok()?);
    if let Some(Ok(authority)) = pseudo.authority.map(|a| Authority::try_from(&*a)) {
        parts.scheme = Some(Scheme::try_from(&*scheme).ok()?);
        parts.authority = Some(authority);
    }
    let uri = Uri::from_parts(parts).ok()?;
    Some(Head {
        method,
        uri,
        headers,
    })
}

/// What a panic's payload says, as a JoinError of a panicked task shows it.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
    match message {
        Some(message) => format!("panicked with message {message:?}"),
        None => "panicked".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of one gRPC message of `len` bytes, as `frames` DATA frames.
    fn frames(len: usize, frames: usize) -> Vec<Bytes> {
        let mut whole = vec![0];
        whole.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
        whole.resize(5 + len, 7);
        let whole = Bytes::from(whole);
        let size = whole.len().div_ceil(frames);
        (0..whole.len())
            .step_by(size)
            .map(|at| whole.slice(at..(at + size).min(whole.len())))
            .collect()
    }

    #[test]
    fn a_body_of_many_frames_takes_room_for_its_message_at_once() {
        let limit = 1 << 20;
        let mut body = Body::Empty;
        let mut held = Vec::new();
        for frame in frames(100_000, 7) {
            held.push(body.held_after(&frame, limit));
            body.append(frame, limit);
        }
        // The first frame as it came, then the whole message's room from the second on.
        assert_eq!(held[0], 14_287);
        assert!(held[1..].iter().all(|&h| h == 100_005), "{held:?}");
        let Body::Many(joined) = &body else {
            panic!("joined")
        };
        // Not grown by doubling (to 128 KiB), so not copied on the way.
        assert_eq!(joined.capacity(), 100_005);
        assert_eq!(body.len(), 100_005);
        // One frame is kept as it came; a declared length past the limit takes no room
        // (the request is refused).
        let mut one = Body::Empty;
        let frame = frames(10, 1).remove(0);
        assert_eq!(one.held_after(&frame, limit), 15);
        one.append(frame, limit);
        let mut huge = Body::Empty;
        huge.append(frames(100, 2).remove(0), 8);
        assert_eq!(huge.room(8), 0);
        assert_eq!(huge.room(100), 105);
    }
}
