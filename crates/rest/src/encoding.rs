//! Compressed request bodies. TF Serving's REST server inflates a body sent with
//! `Content-Encoding: gzip` before parsing it (its HTTP layer's `auto_uncompress_input`,
//! on by default), so clients that compress large tensors work unchanged. Any other
//! encoding is refused by name, where parsing the compressed bytes as JSON would only say
//! that the document is malformed.

use std::io::Read as _;

use axum::http::{HeaderMap, StatusCode, header};

use crate::error::RestError;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyEncoding {
    Identity,
    Gzip,
}

impl BodyEncoding {
    /// From the `Content-Encoding` header: absent or `identity` is the body as sent;
    /// `gzip` (or its old alias `x-gzip`) is inflated; anything else is a 415.
    pub(crate) fn of(headers: &HeaderMap) -> Result<BodyEncoding, RestError> {
        let mut encoding = BodyEncoding::Identity;
        for value in headers.get_all(header::CONTENT_ENCODING) {
            let text = value.to_str().unwrap_or("");
            for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if coding.eq_ignore_ascii_case("identity") {
                    continue;
                }
                let gzip =
                    coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip");
                if !gzip || encoding == BodyEncoding::Gzip {
                    return Err(unsupported(text));
                }
                encoding = BodyEncoding::Gzip;
            }
        }
        Ok(encoding)
    }

    /// The body as JSON text expects it; at most `limit` bytes once inflated (413 beyond).
    pub(crate) fn decode(self, body: Vec<u8>, limit: usize) -> Result<Vec<u8>, RestError> {
        match self {
            BodyEncoding::Identity => Ok(body),
            BodyEncoding::Gzip => inflate_gzip(&body, limit),
        }
    }
}

fn unsupported(encoding: &str) -> RestError {
    let mut error = RestError::invalid(format!(
        "Content-Encoding '{encoding}' is not supported: send the body as is, or \
         compressed with gzip"
    ));
    error.http = Some(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    error
}

fn inflate_gzip(body: &[u8], limit: usize) -> Result<Vec<u8>, RestError> {
    let mut inflated = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "over it" without inflating
    // the rest of a body that may be a bomb.
    let read = flate2::read::MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut inflated);
    if let Err(e) = read {
        return Err(RestError::invalid(format!(
            "cannot decompress the gzip request body: {e}"
        )));
    }
    if inflated.len() > limit {
        let mut error = RestError::invalid(format!(
            "the request body is larger than the limit of {limit} bytes once decompressed"
        ));
        error.http = Some(StatusCode::PAYLOAD_TOO_LARGE);
        return Err(error);
    }
    Ok(inflated)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use axum::http::HeaderValue;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn encoding(values: &[&'static str]) -> Result<BodyEncoding, RestError> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::CONTENT_ENCODING, HeaderValue::from_static(value));
        }
        BodyEncoding::of(&headers)
    }

    #[test]
    fn gzip_and_identity_are_known_other_encodings_are_415() {
        assert_eq!(encoding(&[]), Ok(BodyEncoding::Identity));
        assert_eq!(encoding(&["identity"]), Ok(BodyEncoding::Identity));
        assert_eq!(encoding(&["GZIP"]), Ok(BodyEncoding::Gzip));
        assert_eq!(encoding(&["x-gzip"]), Ok(BodyEncoding::Gzip));
        assert_eq!(encoding(&["identity, gzip"]), Ok(BodyEncoding::Gzip));
        for bad in [&["br"][..], &["gzip, br"], &["gzip", "gzip"], &["deflate"]] {
            let error = encoding(bad).unwrap_err();
            assert_eq!(
                error.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{bad:?}"
            );
            assert!(error.message.starts_with("Content-Encoding '"), "{error:?}");
        }
    }

    #[test]
    fn gzip_bodies_are_inflated_within_the_limit() {
        let body = br#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#;
        assert_eq!(
            BodyEncoding::Gzip.decode(gzip(body), body.len()).unwrap(),
            body
        );
        // Two gzip members one after the other are one body (as `cat a.gz b.gz`).
        let twice = [gzip(b"ab"), gzip(b"cd")].concat();
        assert_eq!(BodyEncoding::Gzip.decode(twice, 4).unwrap(), b"abcd");

        let over = BodyEncoding::Gzip
            .decode(gzip(body), body.len() - 1)
            .unwrap_err();
        assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // A bomb stops at the limit instead of filling memory.
        let bomb = gzip(&vec![b' '; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let over = BodyEncoding::Gzip.decode(bomb, 1 << 20).unwrap_err();
        assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);

        let junk = BodyEncoding::Gzip
            .decode(body.to_vec(), 1 << 20)
            .unwrap_err();
        assert_eq!(junk.status(), StatusCode::BAD_REQUEST);
        assert!(
            junk.message
                .starts_with("cannot decompress the gzip request body: "),
            "{junk:?}"
        );
        assert_eq!(
            BodyEncoding::Identity.decode(body.to_vec(), 1).unwrap(),
            body,
            "an identity body was already held to the limit when read"
        );
    }
}
