//! Answering one request of the lane: a [`Reply`] from the PredictionService (a Predict
//! in one message, inflated first if compressed) or from tonic's router (everything else),
//! within the client's deadline.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::Full;
use prost::Message;
use soma_grpc_proto::tensorflow::serving::PredictRequest;
use tonic::codegen::Body as _;
use tonic::codegen::http::{self, HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use tonic::metadata::MetadataMap;
use tonic::{Extensions, Status};
use tower::ServiceExt;

use super::Lane;
use crate::service::Deadline;

/// The path of the one RPC the lane answers without tonic's router.
const PREDICT_PATH: &str = "/tensorflow.serving.PredictionService/Predict";

/// A request's head, as the client sent it.
pub(crate) struct Head {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
}

/// An RPC's answer: the response head and its body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: ReplyBody,
}

#[derive(Debug)]
pub(crate) enum ReplyBody {
    /// The whole body (gRPC-framed messages) and trailers. Neither: a trailers-only answer
    /// (the status is in the head).
    Full {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// A body still being produced (a server-streaming RPC, such as Health/Watch).
    Streaming(tonic::body::Body),
}

impl Reply {
    /// A trailers-only answer with `status`, as tonic sends an RPC's error.
    pub(crate) fn status(status: Status) -> Reply {
        let (parts, ()) = status.into_http::<()>().into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: ReplyBody::Full {
                data: Bytes::new(),
                trailers: None,
            },
        }
    }
}

/// Answers a request whose body has been read, within its `grpc-timeout` if it has one
/// (DEADLINE_EXCEEDED after it, as a C++ gRPC server answers).
pub(crate) async fn answer(lane: &Lane, head: Head, body: Bytes) -> Reply {
    let deadline = head
        .headers
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(crate::service::parse_timeout)
        .and_then(|timeout| Instant::now().checked_add(timeout));
    // Pinned here, so that this future holds the work once, not once per `await` below; the
    // router's future, ~2 KB, is boxed. A request's future is moved whole several times on
    // its way into its task: for a plain Predict, this keeps those copies small.
    let work = std::pin::pin!(async {
        let mut head = head;
        // A compressed message is inflated here, under the byte budget, and the inflated
        // bytes held until the answer (see `inflate`); then a Predict is answered directly,
        // as a plain one: tonic's codec would copy the inflated message once more.
        let (body, _inflated) = match crate::inflate::Coding::of(&head.headers) {
            None => (body, None),
            Some(coding) => match Box::pin(inflate(lane, &mut head, coding, body)).await {
                Ok((body, held)) => (body, Some(held)),
                Err(status) => return Reply::status(status),
            },
        };
        match plain_predict(&head, &body) {
            Some(request) => {
                // Decoded: the message's bytes go as soon as its tensors are made from the
                // slices the request holds, before the prediction, which may take as much
                // again (its counted bytes are held until the answer).
                drop(body);
                predict(lane, head.headers, request, deadline).await
            }
            None => Box::pin(through_router(lane, head, body)).await,
        }
    });
    match deadline {
        None => work.await,
        Some(deadline) => tokio::time::timeout_at(deadline.into(), work)
            .await
            .unwrap_or_else(|_| Reply::status(Status::deadline_exceeded("Deadline Exceeded"))),
    }
}

/// `body` with its compressed messages inflated, the inflated bytes counted against the
/// request byte budget; `grpc-encoding` is taken off `head`, as the body no longer has it.
async fn inflate(
    lane: &Lane,
    head: &mut Head,
    coding: crate::inflate::Coding,
    body: Bytes,
) -> Result<(Bytes, crate::held::Held), Status> {
    head.headers.remove("grpc-encoding");
    let held = lane.request_bytes.hold();
    crate::inflate::inflate_off_thread(body, coding, held, lane.max_message_bytes).await
}

/// The PredictRequest of a Predict call in one uncompressed message (or one inflated
/// already); `None` for anything else, including a message that does not decode (the
/// router answers it as tonic does).
fn plain_predict(head: &Head, body: &Bytes) -> Option<PredictRequest> {
    if head.method != Method::POST
        || head.uri.path() != PREDICT_PATH
        || head.headers.contains_key("grpc-encoding")
    {
        return None;
    }
    let (&[0, a, b, c, d], message) = body.split_first_chunk::<5>()? else {
        return None;
    };
    if u32::from_be_bytes([a, b, c, d]) as usize != message.len() {
        return None;
    }
    // From `Bytes`: a `tensor_content` is a slice of the body, not a copy.
    PredictRequest::decode(body.slice(5..)).ok()
}

async fn predict(
    lane: &Lane,
    headers: HeaderMap,
    message: PredictRequest,
    deadline: Option<Instant>,
) -> Reply {
    let mut extensions = Extensions::default();
    if let Some(deadline) = deadline {
        extensions.insert(Deadline(deadline));
    }
    let request =
        tonic::Request::from_parts(MetadataMap::from_headers(headers), extensions, message);
    let response = match lane.predictions.predict(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Reply::status(status),
    };
    let len = response.encoded_len();
    // The service has held the response to the size limit, which is below 4 GiB.
    let Ok(prefix) = u32::try_from(len) else {
        return Reply::status(Status::resource_exhausted(format!(
            "response of {len} bytes is too large"
        )));
    };
    let mut data = BytesMut::with_capacity(5 + len);
    data.put_u8(0);
    data.put_u32(prefix);
    response
        .encode(&mut data)
        .expect("the buffer holds the encoded length");
    let mut headers = HeaderMap::with_capacity(1);
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    Reply {
        status: StatusCode::OK,
        headers,
        body: ReplyBody::Full {
            data: data.freeze(),
            trailers: Some(trailers),
        },
    }
}

/// Serves the request with tonic's router (behind `limit`'s rewrite of size-limit
/// statuses), as a tonic server would; the body is read as the connection sends it.
async fn through_router(lane: &Lane, head: Head, body: Bytes) -> Reply {
    let mut request = http::Request::new(Full::new(body));
    *request.method_mut() = head.method;
    *request.uri_mut() = head.uri;
    *request.headers_mut() = head.headers;
    *request.version_mut() = Version::HTTP_2;
    let response = match lane.router.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    // An RPC's error comes as a head with no body: trailers-only.
    let body = if body.is_end_stream() {
        ReplyBody::Full {
            data: Bytes::new(),
            trailers: None,
        }
    } else {
        ReplyBody::Streaming(body)
    };
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}
