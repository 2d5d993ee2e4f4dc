//! The gRPC lane (soma's HTTP/2 server, on serving threads, on the caller's runtime and on
//! the Unix socket) against tonic's server as the reference, over a raw HTTP/2 client (the
//! `h2` crate) and the real iris model: the same requests get the same status, headers,
//! body and trailers; flow control holds both ways for messages larger than the windows; a
//! reset stream, many streams at once and protocol errors leave the server serving; byte
//! budgets, stalled clients and compressed requests are handled by both ways of serving a
//! TCP port.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use soma_core::Tensor;
use soma_grpc::GrpcOptions;
use soma_grpc::codec::{tensor_into_content_proto, tensor_into_proto};
use soma_grpc_proto::tensorflow::serving::{
    GetModelMetadataRequest, GetModelStatusRequest, ModelSpec, PredictRequest,
};
use soma_runtime::ModelSet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tonic::codegen::http::{self, HeaderMap};

const PREDICT: &str = "/tensorflow.serving.PredictionService/Predict";
const METADATA: &str = "/tensorflow.serving.PredictionService/GetModelMetadata";
const STATUS: &str = "/tensorflow.serving.ModelService/GetModelStatus";

/// A request of the comparison: its name, path, extra headers and body.
type Case = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    Bytes,
);

/// An answer as the client saw it; headers sorted, without `date` (a clock reading).
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Bytes,
    trailers: Vec<(String, Vec<u8>)>,
}

fn sorted(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut fields: Vec<_> = headers
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    fields.sort();
    fields
}

/// A gRPC-framed message: no compression, 4-byte length, the bytes.
fn framed(message: &impl Message) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_u32(u32::try_from(message.encoded_len()).unwrap());
    message.encode(&mut body).unwrap();
    body.freeze()
}

fn spec(name: &str) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: name.into(),
        ..ModelSpec::default()
    })
}

/// A Predict of `rows` iris rows (input `x`), as `tensor_content` or in the typed field.
fn iris_request(model: &str, rows: usize, content: bool) -> PredictRequest {
    let values: Vec<f32> = (0..rows * 4).map(|i| (i % 7) as f32 * 0.5).collect();
    let x = Tensor::from_slice(vec![rows, 4], &values).unwrap();
    let x = if content {
        tensor_into_content_proto(x)
    } else {
        tensor_into_proto(x)
    };
    PredictRequest {
        model_spec: spec(model),
        inputs: [("x".to_string(), x)].into(),
        output_filter: vec![],
    }
}

/// Opens an HTTP/2 connection with the given receive windows.
async fn connect(addr: &str, stream_window: u32) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(stream_window)
        .handshake(tcp)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Sends one request on `client` and reads its whole answer.
async fn call(
    client: &mut h2::client::SendRequest<Bytes>,
    path: &str,
    extra: &[(&str, &str)],
    body: Bytes,
) -> Answer {
    let mut request = http::Request::post(format!("http://soma{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let client = client.clone().ready().await.unwrap();
    let mut client = client;
    let (response, mut stream) = client
        .send_request(request.body(()).unwrap(), body.is_empty())
        .unwrap();
    // A server may answer from the head alone (tonic's router answers an unknown method
    // without reading the body): if its answer has closed the stream by now, the body
    // cannot be sent, and the answer is what is compared.
    let unsent = match body.is_empty() {
        true => None,
        false => stream.send_data(body, true).err(),
    };
    if let Some(e) = &unsent {
        eprintln!("{path}: body not sent: {e:?}");
    }
    let response = response
        .await
        .unwrap_or_else(|e| panic!("{path} {extra:?}: {e:?} (body not sent: {unsent:?})"));
    let (parts, mut body) = response.into_parts();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap();
    Answer {
        status: parts.status.as_u16(),
        headers: sorted(&parts.headers),
        body: data.freeze(),
        trailers: trailers.as_ref().map(sorted).unwrap_or_default(),
    }
}

/// How [`compressed`] compresses.
enum Compression {
    Gzip,
    Deflate,
}

/// `message` as one gRPC message compressed with `how` (its flag set).
fn compressed(how: Compression, message: &impl Message) -> Bytes {
    use std::io::Write as _;
    let level = flate2::Compression::fast();
    let bytes = match how {
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
            encoder.write_all(&message.encode_to_vec()).unwrap();
            encoder.finish().unwrap()
        }
        Compression::Deflate => {
            let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), level);
            encoder.write_all(&message.encode_to_vec()).unwrap();
            encoder.finish().unwrap()
        }
    };
    let mut body = BytesMut::with_capacity(5 + bytes.len());
    body.put_u8(1);
    body.put_u32(u32::try_from(bytes.len()).unwrap());
    body.put_slice(&bytes);
    body.freeze()
}

/// The iris model (every version), loaded in TensorFlow.
async fn iris_set() -> Arc<ModelSet> {
    let cache = tempfile::tempdir().unwrap();
    let set = Arc::new(ModelSet::new("lane", false));
    common::load_iris(&set, cache.path()).await;
    set
}

/// The iris model served by tonic's server and by the lane (on serving threads): their
/// addresses.
async fn serve_iris() -> [(&'static str, String); 2] {
    let set = iris_set().await;
    let [_, (_, lane)] = common::both_servers(GrpcOptions::default());
    let tonic = common::serve_with_tonic(Arc::clone(&set), GrpcOptions::default()).await;
    let lane = common::serve_set_at(set, lane).await;
    [
        ("tonic", tonic),
        ("lane", lane.trim_start_matches("http://").to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lane_answers_as_tonic_does() {
    let [(_, tonic), (_, lane)] = serve_iris().await;
    let garbage = Bytes::from_static(&[0, 0, 0, 0, 3, 0xff, 0xff, 0xff]);
    let cases: Vec<Case> = vec![
        (
            "predict",
            PREDICT,
            vec![],
            framed(&iris_request("iris", 3, false)),
        ),
        (
            "tensor_content",
            PREDICT,
            vec![],
            framed(&iris_request("iris", 2, true)),
        ),
        (
            "unknown model",
            PREDICT,
            vec![],
            framed(&iris_request("nope", 1, false)),
        ),
        ("wrong shape", PREDICT, vec![], {
            let mut request = iris_request("iris", 1, false);
            request.inputs.get_mut("x").unwrap().tensor_shape = None;
            framed(&request)
        }),
        ("undecodable message", PREDICT, vec![], garbage),
        ("no body", PREDICT, vec![], Bytes::new()),
        (
            "identity encoding",
            PREDICT,
            vec![("grpc-encoding", "identity")],
            { framed(&iris_request("iris", 1, false)) },
        ),
        (
            "gzip",
            PREDICT,
            vec![("grpc-encoding", "gzip")],
            compressed(Compression::Gzip, &iris_request("iris", 3, false)),
        ),
        (
            "deflate",
            PREDICT,
            vec![("grpc-encoding", "deflate")],
            compressed(Compression::Deflate, &iris_request("iris", 2, true)),
        ),
        (
            "gzip, unknown model",
            PREDICT,
            vec![("grpc-encoding", "gzip")],
            compressed(Compression::Gzip, &iris_request("nope", 1, false)),
        ),
        (
            "gzip declared, message not compressed",
            PREDICT,
            vec![("grpc-encoding", "gzip")],
            framed(&iris_request("iris", 1, false)),
        ),
        (
            "gzip declared, message not gzip",
            PREDICT,
            vec![("grpc-encoding", "gzip")],
            {
                let mut body = framed(&iris_request("iris", 1, false)).to_vec();
                body[0] = 1;
                Bytes::from(body)
            },
        ),
        (
            "compressed message, no encoding",
            PREDICT,
            vec![],
            compressed(Compression::Gzip, &iris_request("iris", 1, false)),
        ),
        ("long deadline", PREDICT, vec![("grpc-timeout", "10S")], {
            framed(&iris_request("iris", 1, false))
        }),
        ("metadata", METADATA, vec![], {
            framed(&GetModelMetadataRequest {
                model_spec: spec("iris"),
                metadata_field: vec!["signature_def".into()],
            })
        }),
        ("model status", STATUS, vec![], {
            framed(&GetModelStatusRequest {
                model_spec: spec("iris"),
            })
        }),
        (
            "unknown method",
            "/tensorflow.serving.PredictionService/Nope",
            vec![],
            { framed(&iris_request("iris", 1, false)) },
        ),
    ];
    let mut on_tonic = connect(&tonic, 65_535).await;
    let mut on_lane = connect(&lane, 65_535).await;
    for (case, path, extra, body) in cases {
        let expected = call(&mut on_tonic, path, &extra, body.clone()).await;
        let mut answer = call(&mut on_lane, path, &extra, body).await;
        if case == "metadata" {
            // A protobuf map (the SignatureDefMap) is written in a hash map's order.
            assert_eq!(answer.body.len(), expected.body.len());
            answer.body = expected.body.clone();
        }
        assert_eq!(answer, expected, "{case}");
        if ["predict", "gzip", "deflate"].contains(&case) {
            assert_eq!(expected.status, 200);
            assert_eq!(
                expected.trailers,
                vec![("grpc-status".into(), b"0".to_vec())]
            );
            assert!(expected.body.len() > 5, "{expected:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_larger_than_the_windows_flow_both_ways() {
    let [(_, tonic), (_, lane)] = serve_iris().await;
    // 40,000 rows: 640 KB in, more than half of the lane's 1 MiB stream window (so it sends
    // WINDOW_UPDATEs), and 480 KB out to a client whose streams take 1 KiB at a time.
    let body = framed(&iris_request("iris", 40_000, true));
    let expected = call(
        &mut connect(&tonic, 1 << 20).await,
        PREDICT,
        &[],
        body.clone(),
    )
    .await;
    assert_eq!(expected.status, 200);
    assert!(expected.body.len() > 400_000, "{}", expected.body.len());
    let mut client = connect(&lane, 1024).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let mut client = client.clone();
        let body = body.clone();
        answers.push(tokio::spawn(async move {
            call(&mut client, PREDICT, &[], body).await
        }));
    }
    for answer in answers {
        assert_eq!(answer.await.unwrap(), expected);
    }
    // The connection window (given back as bytes arrive) still lets small requests through.
    let small = framed(&iris_request("iris", 1, false));
    assert_eq!(call(&mut client, PREDICT, &[], small).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn many_streams_at_once_on_one_connection() {
    let [_, (_, lane)] = serve_iris().await;
    let client = connect(&lane, 65_535).await;
    let body = framed(&iris_request("iris", 1, false));
    let mut calls = Vec::new();
    // Fewer than 100: the h2 client gives up on a connection (ENHANCE_YOUR_CALM) that has
    // more than ~100 small DATA frames its application has not read yet.
    for _ in 0..90 {
        let (mut client, body) = (client.clone(), body.clone());
        calls.push(tokio::spawn(async move {
            call(&mut client, PREDICT, &[], body).await
        }));
    }
    let mut first = None;
    for answer in calls {
        let answer = answer.await.unwrap();
        assert_eq!(answer.trailers, vec![("grpc-status".into(), b"0".to_vec())]);
        assert_eq!(
            first.get_or_insert_with(|| answer.body.clone()),
            &answer.body
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_stream_leaves_the_connection_serving() {
    let [_, (_, lane)] = serve_iris().await;
    let mut client = connect(&lane, 65_535).await;
    let body = framed(&iris_request("iris", 1, false));
    // A request whose body never ends, reset by the client.
    let request = http::Request::post(format!("http://soma{PREDICT}"))
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let mut ready = client.clone().ready().await.unwrap();
    let (response, mut stream) = ready.send_request(request, false).unwrap();
    stream.send_data(body.slice(..4), false).unwrap();
    stream.send_reset(h2::Reason::CANCEL);
    assert!(response.await.is_err(), "a reset stream has no answer");
    let answer = call(&mut client, PREDICT, &[], body).await;
    assert_eq!(answer.trailers, vec![("grpc-status".into(), b"0".to_vec())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_errors_close_only_their_connection() {
    let [_, (_, lane)] = serve_iris().await;
    // Not HTTP/2 at all: closed without an answer.
    let mut tcp = TcpStream::connect(&lane).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let read = read_to_close(&mut tcp).await;
    assert!(read.is_empty(), "{read:?}");

    // DATA on a stream never opened: GOAWAY with PROTOCOL_ERROR (1), then closed.
    let mut tcp = raw_connection(&lane).await;
    tcp.write_all(&raw_frame(0, 0, 1, &[42])).await.unwrap();
    let read = read_to_close(&mut tcp).await;
    let goaway = find_frame(&read, 7).expect("a GOAWAY");
    assert_eq!(&goaway[4..8], &[0, 0, 0, 1], "PROTOCOL_ERROR: {goaway:?}");

    // The server still serves new connections.
    let body = framed(&iris_request("iris", 1, false));
    let answer = call(&mut connect(&lane, 65_535).await, PREDICT, &[], body).await;
    assert_eq!(answer.status, 200);
}

/// A raw HTTP/2 connection to `addr`, past the preface and an empty SETTINGS frame.
async fn raw_connection(addr: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    tcp
}

/// A frame: 24-bit length, type, flags, stream id, payload.
fn raw_frame(kind: u8, flags: u8, id: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A gRPC request's header block, HPACK by hand: `:method POST` and `:scheme http` from the
/// static table, the rest as literals without indexing.
fn request_block(path: &str) -> Vec<u8> {
    let mut block = vec![0x83, 0x86];
    for (name, value) in [
        (":path", path),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        push_literal(&mut block, name, value);
    }
    block
}

/// A header field as an HPACK literal without indexing, with a new name.
fn push_literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0);
    block.push(u8::try_from(name.len()).unwrap());
    block.extend_from_slice(name.as_bytes());
    block.push(u8::try_from(value.len()).unwrap());
    block.extend_from_slice(value.as_bytes());
}

/// Everything the server sends until it closes the connection.
async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let mut read = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut read))
        .await
        .expect("closed")
        .ok();
    read
}

/// Reads from `tcp` until `found` finds something in what was read.
async fn read_until<T>(
    tcp: &mut (impl AsyncRead + Unpin),
    found: impl Fn(&[u8]) -> Option<T>,
) -> T {
    let mut read = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed: {read:?}");
        read.extend_from_slice(&buf[..n]);
        if let Some(value) = found(&read) {
            return value;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_from_the_router_is_trailers_only() {
    let [_, (_, lane)] = serve_iris().await;
    let mut tcp = raw_connection(&lane).await;
    let body = framed(&GetModelStatusRequest {
        model_spec: spec("nope"),
    });
    // HEADERS (type 1, END_HEADERS) and DATA (type 0, END_STREAM) on stream 1.
    tcp.write_all(&raw_frame(1, 4, 1, &request_block(STATUS)))
        .await
        .unwrap();
    tcp.write_all(&raw_frame(0, 1, 1, &body)).await.unwrap();
    // The answer to stream 1 is one HEADERS frame that ends the stream (NOT_FOUND's
    // grpc-status is in it), as gRPC clients require of an error without a body.
    let answer = read_until(&mut tcp, |read| first_on_stream(read, 1)).await;
    assert_eq!(answer.0, 1, "HEADERS: {answer:?}");
    assert_eq!(answer.1 & 1, 1, "END_STREAM: {answer:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_over_the_limit_are_refused_and_the_connection_serves_on() {
    let [_, (_, lane)] = serve_iris().await;
    let mut tcp = raw_connection(&lane).await;
    // 1,024 requests whose bodies have not come yet fill the connection.
    let block = request_block(PREDICT);
    let mut opening = Vec::new();
    for i in 0..1024 {
        opening.extend(raw_frame(1, 4, 2 * i + 1, &block));
    }
    tcp.write_all(&opening).await.unwrap();
    // The next is refused (RST_STREAM, REFUSED_STREAM = 7); its body arriving anyway is no
    // protocol error.
    let refused = 2049;
    let body = framed(&iris_request("iris", 1, false));
    tcp.write_all(&raw_frame(1, 4, refused, &block))
        .await
        .unwrap();
    tcp.write_all(&raw_frame(0, 1, refused, &body))
        .await
        .unwrap();
    // Ending one of the open requests gets it answered on the same connection.
    tcp.write_all(&raw_frame(0, 1, 1, &body)).await.unwrap();
    let (reset, answer) = read_until(&mut tcp, |read| {
        assert!(find_frame(read, 7).is_none(), "GOAWAY: {read:?}");
        Some((first_on_stream(read, refused)?, first_on_stream(read, 1)?))
    })
    .await;
    assert_eq!(reset.0, 3, "RST_STREAM: {reset:?}");
    assert_eq!(answer, (1, 4), "HEADERS without END_STREAM: {answer:?}");
}

/// The type and flags of the first complete frame of stream `id` in `bytes`.
fn first_on_stream(mut bytes: &[u8], id: u32) -> Option<(u8, u8)> {
    while bytes.len() >= 9 {
        let length =
            usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes.len() < 9 + length {
            return None;
        }
        if bytes[5..9] == id.to_be_bytes() {
            return Some((bytes[3], bytes[4]));
        }
        bytes = &bytes[9 + length..];
    }
    None
}

/// The payload of the first frame of type `kind` in `bytes`.
fn find_frame(mut bytes: &[u8], kind: u8) -> Option<&[u8]> {
    while bytes.len() >= 9 {
        let length =
            usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let end = (9 + length).min(bytes.len());
        if bytes[3] == kind {
            return Some(&bytes[9..end]);
        }
        bytes = &bytes[end..];
    }
    None
}

/// Room for one 30,000-byte message and a little more, not for two.
fn budget_for_one_message() -> GrpcOptions {
    GrpcOptions {
        max_message_bytes: 30_000,
        max_request_bytes_in_flight: 40_000,
        ..GrpcOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_past_the_byte_budget_are_refused_and_the_rest_served() {
    let set = iris_set().await;
    let options = budget_for_one_message();
    for (server, options) in common::both_servers(options) {
        let url = common::serve_set_at(Arc::clone(&set), options).await;
        refuses_past_the_budget(url.trim_start_matches("http://"))
            .await
            .unwrap_or_else(|e| panic!("{server}: {e}"));
    }
}

async fn refuses_past_the_budget(addr: &str) -> Result<(), String> {
    let body = framed(&iris_request("iris", 1800, true));
    assert!((25_000..30_000).contains(&body.len()), "{}", body.len());
    let client = connect(addr, 1 << 20).await;
    // Two requests each send 25,000 bytes and wait: the second to arrive goes past the
    // budget.
    let request = || {
        http::Request::post(format!("http://soma{PREDICT}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap()
    };
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut client = client.clone().ready().await.unwrap();
        let (response, mut stream) = client.send_request(request(), false).unwrap();
        stream.send_data(body.slice(..25_000), false).unwrap();
        open.push((Box::pin(response), stream));
    }
    let [first, second] = open.as_mut_slice() else {
        unreachable!()
    };
    let (refused, waiting) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            r = &mut first.0 => (r, 1),
            r = &mut second.0 => (r, 0),
        }
    })
    .await
    .map_err(|_| "no request refused".to_string())?;
    let refused = refused.unwrap();
    let status = |name: &str| refused.headers().get(name).map(|v| v.to_str().unwrap());
    if status("grpc-status") != Some("8") || !status("grpc-message").unwrap().contains("at%20once")
    {
        return Err(format!("refused with {refused:?}"));
    }
    // The other, which took room for its whole message first, is answered when its body
    // completes.
    let (response, mut stream) = open.swap_remove(waiting);
    let _ = stream.send_data(body.slice(25_000..), true);
    let (parts, mut answer) = response.await.unwrap().into_parts();
    assert_eq!(parts.status, 200);
    if let Some(status) = parts.headers.get("grpc-status") {
        return Err(format!("the first request failed too: {status:?}"));
    }
    while let Some(chunk) = answer.data().await {
        let chunk = chunk.unwrap();
        answer.flow_control().release_capacity(chunk.len()).unwrap();
    }
    let trailers = answer.trailers().await.unwrap().unwrap();
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    // Every byte was given back: one at a time, whole messages are served.
    for _ in 0..3 {
        let answer = call(&mut client.clone(), PREDICT, &[], body.clone()).await;
        assert_eq!(answer.trailers[0], ("grpc-status".into(), b"0".to_vec()));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_gives_no_window_for_its_answers_is_dropped() {
    let set = iris_set().await;
    let options = GrpcOptions {
        stalled_send_timeout: Some(Duration::from_millis(300)),
        ..GrpcOptions::default()
    };
    for (_, options) in common::both_servers(options.clone()) {
        let url = common::serve_set_at(Arc::clone(&set), options).await;
        let tcp = TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .unwrap();
        is_dropped_without_window(tcp).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = common::serve_set_on_socket(set, options, dir.path());
    is_dropped_without_window(UnixStream::connect(&socket).await.unwrap()).await;
}

/// Asks for a prediction over `io`, giving no flow-control window for answers: the answer's
/// HEADERS go out, its DATA waits for window that never comes, and the connection is
/// dropped once the answer has waited for the server's stall timeout (300 ms), though the
/// client keeps sending PINGs (their acks are not the answer's bytes moving).
async fn is_dropped_without_window<S>(mut io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    io.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // SETTINGS_INITIAL_WINDOW_SIZE (4) = 0: the server may send no DATA on any stream.
    io.write_all(&raw_frame(4, 0, 0, &[0, 4, 0, 0, 0, 0]))
        .await
        .unwrap();
    io.write_all(&raw_frame(1, 4, 1, &request_block(PREDICT)))
        .await
        .unwrap();
    let body = framed(&iris_request("iris", 1, false));
    io.write_all(&raw_frame(0, 1, 1, &body)).await.unwrap();
    let started = std::time::Instant::now();
    let (mut reading, mut writing) = tokio::io::split(io);
    let pings = tokio::spawn(async move {
        let ping = raw_frame(6, 0, 0, b"stallpng");
        while writing.write_all(&ping).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut read = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), reading.read_to_end(&mut read))
        .await
        .expect("closed")
        .ok();
    pings.abort();
    let waited = started.elapsed();
    assert_eq!(first_on_stream(&read, 1).map(|f| f.0), Some(1), "{read:?}");
    assert!(
        (Duration::from_millis(250)..Duration::from_secs(4)).contains(&waited),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_unix_socket_path_as_authority_is_answered() {
    // gRPC's Python and Java clients send a Unix socket's path as `:authority`, which is not
    // a host and port (hyper's HTTP/2 server refuses such requests).
    let dir = tempfile::tempdir().unwrap();
    let socket = common::serve_set_on_socket(iris_set().await, GrpcOptions::default(), dir.path());
    let mut unix = UnixStream::connect(&socket).await.unwrap();
    unix.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    unix.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut block = vec![0x83, 0x86];
    push_literal(&mut block, ":authority", socket.to_str().unwrap());
    block.extend_from_slice(&request_block(PREDICT)[2..]);
    let mut bytes = raw_frame(1, 4, 1, &block);
    bytes.extend(raw_frame(0, 1, 1, &framed(&iris_request("iris", 1, false))));
    unix.write_all(&bytes).await.unwrap();
    // HEADERS, then the answer's message in DATA, then trailers: not RST_STREAM.
    let (first, data) = read_until(&mut unix, |read| {
        ends_stream(read, 1).then(|| (first_on_stream(read, 1), find_frame(read, 0).is_some()))
    })
    .await;
    assert_eq!((first.map(|f| f.0), data), (Some(1), true));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_its_socket_is_dropped() {
    // 1,000 floats in, 4 MB out: five answers are more than the socket buffers take.
    let set = Arc::new(ModelSet::new("stall", false));
    set.insert(Arc::new(common::repeat_model(1000)));
    let options = GrpcOptions {
        stalled_send_timeout: Some(Duration::from_millis(300)),
        ..GrpcOptions::default()
    };
    let x = Tensor::from_slice(vec![1000], &[1.5f32; 1000]).unwrap();
    let body = framed(&PredictRequest {
        model_spec: spec("repeat"),
        inputs: [("x".to_string(), tensor_into_content_proto(x))].into(),
        output_filter: vec![],
    });
    for (server, options) in common::both_servers(options) {
        let url = common::serve_set_at(Arc::clone(&set), options).await;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let address = url.trim_start_matches("http://").parse().unwrap();
        let mut tcp = socket.connect(address).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        // Window for every answer, so nothing but the unread socket holds them back.
        let window = (64u32 << 20).to_be_bytes();
        let settings = [&[0, 4][..], &window].concat();
        tcp.write_all(&raw_frame(4, 0, 0, &settings)).await.unwrap();
        let more = ((64u32 << 20) - 65_535).to_be_bytes();
        tcp.write_all(&raw_frame(8, 0, 0, &more)).await.unwrap();
        // The server's SETTINGS are acknowledged, the last thing this client reads until
        // the end.
        let mut head = [0u8; 9];
        tcp.read_exact(&mut head).await.unwrap();
        let length = usize::from(head[1]) << 8 | usize::from(head[2]);
        tcp.read_exact(&mut vec![0; length]).await.unwrap();
        assert_eq!(head[3], 4, "{server}: {head:?}");
        tcp.write_all(&raw_frame(4, 1, 0, &[])).await.unwrap();
        for id in [1u32, 3, 5, 7, 9] {
            tcp.write_all(&raw_frame(1, 4, id, &request_block(PREDICT)))
                .await
                .unwrap();
            tcp.write_all(&raw_frame(0, 1, id, &body)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Reading now drains what the kernel holds; the connection must be closed already.
        let mut read = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut read)).await;
        assert!(
            closed.is_ok(),
            "{server}: still open after {} bytes",
            read.len()
        );
        assert!(
            read.len() < 20_000_000,
            "{server}: every answer came: {}",
            read.len()
        );
    }
}

/// `request_block(path)` with `extra` fields after it, or without `:scheme`.
fn request_block_with(path: &str, extra: &[(&str, &str)], scheme: bool) -> Vec<u8> {
    let mut block = request_block(path);
    if !scheme {
        block.remove(1);
    }
    for (name, value) in extra {
        push_literal(&mut block, name, value);
    }
    block
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_request_is_reset_alone_and_the_others_are_answered() {
    let body = framed(&iris_request("iris", 1, false));
    let (half, rest) = body.split_at(10);
    for (server, url) in serve_iris().await {
        // Each a stream error (RFC 9113 §8.1.1): a connection-specific field, `te` other
        // than "trailers" (both refused by h2's codec before the lane sees the request),
        // no `:scheme`, a content-length that is not the body's.
        let malformed = [
            request_block_with(PREDICT, &[("connection", "keep-alive")], true),
            request_block_with(PREDICT, &[("te", "gzip")], true),
            request_block_with(PREDICT, &[], false),
            // Not the body's length.
            request_block_with(PREDICT, &[("content-length", "3")], true),
        ];
        for block in malformed {
            let mut tcp = raw_connection(url.trim_start_matches("http://")).await;
            // Stream 1 is under way when stream 3 comes, with its body right behind its
            // head as clients send it; then stream 1 ends and stream 5 opens.
            let mut bytes = raw_frame(1, 4, 1, &request_block(PREDICT));
            bytes.extend(raw_frame(0, 0, 1, half));
            bytes.extend(raw_frame(1, 4, 3, &block));
            bytes.extend(raw_frame(0, 1, 3, &body));
            bytes.extend(raw_frame(0, 1, 1, rest));
            bytes.extend(raw_frame(1, 4, 5, &request_block(PREDICT)));
            bytes.extend(raw_frame(0, 1, 5, &body));
            tcp.write_all(&bytes).await.unwrap();
            let (reset, first, fifth) = read_until(&mut tcp, |read| {
                assert!(find_frame(read, 7).is_none(), "{server}: GOAWAY: {read:?}");
                let ended = |id| ends_stream(read, id).then_some(());
                Some((first_on_stream(read, 3)?, ended(1)?, ended(5)?))
            })
            .await;
            assert_eq!(reset.0, 3, "{server}: RST_STREAM on 3: {reset:?}");
            assert_eq!((first, fifth), ((), ()));
        }
    }
}

/// Whether a frame of stream `id` in `bytes` ends it (END_STREAM on HEADERS or DATA).
fn ends_stream(mut bytes: &[u8], id: u32) -> bool {
    while bytes.len() >= 9 {
        let length =
            usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes.len() < 9 + length {
            return false;
        }
        if bytes[5..9] == id.to_be_bytes() && bytes[3] <= 1 && bytes[4] & 1 == 1 {
            return true;
        }
        bytes = &bytes[9 + length..];
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_requests_count_what_they_inflate_to() {
    let set = iris_set().await;
    let options = budget_for_one_message();
    let message = iris_request("iris", 1700, true);
    assert!(
        (25_000..30_000).contains(&message.encoded_len()),
        "{}",
        message.encoded_len()
    );
    let body = compressed(Compression::Gzip, &message);
    assert!(body.len() < 10_000, "{}", body.len());
    let held_back = framed(&iris_request("iris", 1800, true));
    for (server, options) in common::both_servers(options) {
        let url = common::serve_set_at(Arc::clone(&set), options).await;
        let client = connect(url.trim_start_matches("http://"), 1 << 20).await;
        let request = |compressed: bool| {
            let request = http::Request::post(format!("http://soma{PREDICT}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers");
            let request = if compressed {
                request.header("grpc-encoding", "gzip")
            } else {
                request
            };
            request.body(()).unwrap()
        };
        // An uncompressed request holds 25,000 bytes of the budget while it waits for the
        // rest of its body.
        let mut first = client.clone().ready().await.unwrap();
        let (_waiting, mut stream) = first.send_request(request(false), false).unwrap();
        stream.send_data(held_back.slice(..25_000), false).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Under 10,000 bytes sent, ~28,000 once inflated: past the budget.
        let mut second = client.clone().ready().await.unwrap();
        let (response, mut compressed_stream) = second.send_request(request(true), false).unwrap();
        compressed_stream.send_data(body.clone(), true).unwrap();
        let (parts, mut answer) = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .unwrap()
            .unwrap()
            .into_parts();
        let status = match parts.headers.get("grpc-status") {
            Some(status) => status.clone(),
            None => {
                while answer.data().await.is_some() {}
                answer.trailers().await.unwrap().unwrap()["grpc-status"].clone()
            }
        };
        assert_eq!(status, "8", "{server}: RESOURCE_EXHAUSTED: {parts:?}");
        // Once the budget is free the same request is answered.
        drop(stream);
        drop(_waiting);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let answer = call(
            &mut client.clone(),
            PREDICT,
            &[("grpc-encoding", "gzip")],
            body.clone(),
        )
        .await;
        assert_eq!(
            answer.trailers[0],
            ("grpc-status".into(), b"0".to_vec()),
            "{server}: {answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_cancels_requests_in_a_loop_is_told_to_calm_down() {
    let set = Arc::new(ModelSet::new("resets", false));
    set.insert(Arc::new(common::slow_model(Duration::from_millis(20))));
    let [_, (_, options)] = common::both_servers(GrpcOptions::default());
    let lane = common::serve_set_at(set, options).await;
    let x = Tensor::from_slice(vec![4], &[1.0f32; 4]).unwrap();
    let body = framed(&PredictRequest {
        model_spec: spec("slow"),
        inputs: [("x".to_string(), tensor_into_content_proto(x))].into(),
        output_filter: vec![],
    });
    let mut tcp = raw_connection(lane.trim_start_matches("http://")).await;
    // Each request is sent whole, so its work starts, and cancelled (RST_STREAM, CANCEL).
    let mut bytes = Vec::new();
    for i in 0..1100u32 {
        let id = 2 * i + 1;
        bytes.extend(raw_frame(1, 4, id, &request_block(PREDICT)));
        bytes.extend(raw_frame(0, 1, id, &body));
        bytes.extend(raw_frame(3, 0, id, &8u32.to_be_bytes()));
    }
    tcp.write_all(&bytes).await.unwrap();
    let goaway = read_until(&mut tcp, |read| {
        find_frame(read, 7)
            .filter(|payload| payload.len() >= 8)
            .map(<[u8]>::to_vec)
    })
    .await;
    // GOAWAY's error code follows the last stream id: ENHANCE_YOUR_CALM is 0xb.
    assert_eq!(goaway[4..8], 11u32.to_be_bytes(), "{goaway:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_errors_of_rfc_9113_close_the_connection() {
    let [_, (_, lane)] = serve_iris().await;
    let addr = lane.trim_start_matches("http://");
    // RST_STREAM on a stream never opened (§6.4).
    let mut tcp = raw_connection(addr).await;
    tcp.write_all(&raw_frame(3, 0, 5, &8u32.to_be_bytes()))
        .await
        .unwrap();
    let read = read_to_close(&mut tcp).await;
    let goaway = find_frame(&read, 7).expect("GOAWAY");
    assert_eq!(goaway[4..8], 1u32.to_be_bytes(), "PROTOCOL_ERROR: {read:?}");
    // A first frame after the preface that is not SETTINGS (§3.4).
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&raw_frame(6, 0, 0, b"12345678"))
        .await
        .unwrap();
    let read = read_to_close(&mut tcp).await;
    let goaway = find_frame(&read, 7).expect("GOAWAY");
    assert_eq!(goaway[4..8], 1u32.to_be_bytes(), "PROTOCOL_ERROR: {read:?}");
}

/// Damaged copies of a valid connection's bytes (the preface, SETTINGS, a Predict's HEADERS
/// and DATA; seeded changes, cuts, repeats and noise, mostly after the preface so that the
/// frames are what is damaged) never hang or crash the lane: once the client's side ends,
/// the server closes every connection within seconds, having sent whole frames only, and
/// afterwards answers as before.
#[tokio::test(flavor = "multi_thread")]
async fn damaged_connections_are_closed_and_the_lane_serves_on() {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let [_, (_, lane)] = serve_iris().await;
    let body = framed(&iris_request("iris", 1, false));
    let mut frames = raw_frame(4, 0, 0, &[]);
    frames.extend(raw_frame(1, 4, 1, &request_block(PREDICT)));
    frames.extend(raw_frame(0, 1, 1, &body));
    let valid = [PREFACE, &frames].concat();
    // Undamaged, the bytes are a request that is answered. (An HTTP/2 client does not end
    // its side of the connection while it waits for answers: at the end of its side the
    // server closes the connection, and drops what it had not answered.)
    let mut tcp = TcpStream::connect(&lane).await.unwrap();
    tcp.write_all(&valid).await.unwrap();
    read_until(&mut tcp, |read| ends_stream(read, 1).then_some(())).await;

    let seed = 0x5eed_2026_1207;
    let mut mutator = soma_testkit::Mutator::new(seed);
    for case in 0..1000 {
        let bytes = match mutator.below(4) {
            0 => mutator.mutate(&valid),
            _ => [PREFACE, &mutator.mutate(&frames)].concat(),
        };
        let read = exchange_h2(&lane, &bytes)
            .await
            .unwrap_or_else(|| panic!("not closed within 10 s; seed {seed:#x}, case {case}"));
        assert!(
            whole_frames(&read),
            "seed {seed:#x}, case {case}: {bytes:?} -> {read:?}"
        );
    }
    let answer = call(&mut connect(&lane, 65_535).await, PREDICT, &[], body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.trailers,
        [("grpc-status".to_string(), b"0".to_vec())]
    );
}

/// Sends `bytes` on a new connection to `addr`, ends the client's side, and reads until
/// the server closes: `None` if it has not closed within 10 s.
async fn exchange_h2(addr: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The server may close first (a preface it refuses): then the rest cannot be sent.
    let _ = tcp.write_all(bytes).await;
    let _ = tcp.shutdown().await;
    let mut read = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut read)).await {
        Ok(_) => Some(read),
        Err(_) => None,
    }
}

/// Whether `bytes` is a sequence of whole HTTP/2 frames.
fn whole_frames(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        if bytes.len() < 9 {
            return false;
        }
        let length =
            usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes.len() < 9 + length {
            return false;
        }
        bytes = &bytes[9 + length..];
    }
    true
}

/// Damaged Predict messages, in well-formed gRPC framing on one connection (seeded changes
/// to the protobuf bytes: tags, lengths, values, model name, tensor shapes and contents), are
/// each answered with a prediction or a status of the request's fault (INTERNAL only for a
/// message that does not decode, as gRPC has it), never another INTERNAL or UNKNOWN, and
/// the connection serves on.
#[tokio::test(flavor = "multi_thread")]
async fn damaged_messages_get_a_status_of_the_request_and_the_connection_serves_on() {
    let [_, (_, lane)] = serve_iris().await;
    let message = [
        iris_request("iris", 2, false).encode_to_vec(),
        iris_request("iris", 2, true).encode_to_vec(),
    ];
    let mut client = connect(&lane, 65_535).await;
    let seed = 0x5eed_2026_1207;
    let mut mutator = soma_testkit::Mutator::new(seed);
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for case in 0..1000 {
        let original = mutator.below(message.len());
        let damaged = mutator.mutate(&message[original]);
        let mut body = BytesMut::new();
        body.put_u8(0);
        body.put_u32(u32::try_from(damaged.len()).unwrap());
        body.put_slice(&damaged);
        let answer = call(&mut client, PREDICT, &[], body.freeze()).await;
        let field = |wanted: &str| {
            answer
                .trailers
                .iter()
                .chain(&answer.headers)
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        };
        let status = field("grpc-status")
            .unwrap_or_else(|| panic!("seed {seed:#x}, case {case}: no grpc-status: {answer:?}"));
        // gRPC answers a message that does not decode with INTERNAL (tonic and gRPC's C++
        // server, TF Serving's, alike); any other INTERNAL or UNKNOWN is soma's fault.
        let undecodable = status == "13"
            && field("grpc-message")
                .is_some_and(|m| m.starts_with("failed%20to%20decode%20Protobuf%20message"));
        assert!(
            undecodable || (status != "13" && status != "2"),
            "seed {seed:#x}, case {case}: {damaged:?} -> {answer:?}"
        );
        *seen.entry(status).or_default() += 1;
    }
    eprintln!("grpc-status of the damaged messages' answers: {seen:?}");
    assert!(seen.contains_key("3"), "{seen:?}");
}
