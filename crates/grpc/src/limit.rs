//! tonic rejects a request over the size limit with OUT_OF_RANGE; C++ gRPC servers (and so
//! TF Serving) say RESOURCE_EXHAUSTED, which is what TF Serving clients check for. This
//! layer rewrites that one status; everything else passes through untouched.

use tonic::codegen::http::{HeaderValue, Response};
use tower::util::MapResponseLayer;

const OUT_OF_RANGE: &[u8] = b"11";
const RESOURCE_EXHAUSTED: &str = "8";
const TOO_LARGE: &str = "decoded message length too large";

pub(crate) fn layer<B>() -> MapResponseLayer<fn(Response<B>) -> Response<B>> {
    MapResponseLayer::new(rewrite::<B>)
}

/// What a request of `found` bytes over `limit` gets: tonic's message, C++ gRPC's code (for
/// a server that checks the length before tonic sees the message, the gRPC lane).
pub(crate) fn too_large(found: usize, limit: usize) -> tonic::Status {
    tonic::Status::resource_exhausted(format!(
        "Error, {TOO_LARGE}: found {found} bytes, the limit is: {limit} bytes"
    ))
}

fn rewrite<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    let too_large = headers
        .get("grpc-message")
        .map(|m| String::from_utf8_lossy(m.as_bytes()).replace("%20", " "))
        .is_some_and(|m| m.contains(TOO_LARGE));
    if too_large && headers.get("grpc-status").map(HeaderValue::as_bytes) == Some(OUT_OF_RANGE) {
        headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_size_error_is_rewritten() {
        let response = |status: &'static str, message: &'static str| {
            let mut r = Response::new(());
            r.headers_mut()
                .insert("grpc-status", HeaderValue::from_static(status));
            r.headers_mut()
                .insert("grpc-message", HeaderValue::from_static(message));
            r
        };
        let big = "Error,%20decoded%20message%20length%20too%20large:%20found%2010%20bytes";
        assert_eq!(rewrite(response("11", big)).headers()["grpc-status"], "8");
        assert_eq!(
            rewrite(response("11", "other")).headers()["grpc-status"],
            "11"
        );
        assert_eq!(rewrite(response("3", big)).headers()["grpc-status"], "3");
    }
}
