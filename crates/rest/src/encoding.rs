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
}

fn unsupported(encoding: &str) -> RestError {
    let mut error = RestError::invalid(format!(
        "Content-Encoding '{encoding}' is not supported: send the body as is, or \
         compressed with gzip"
    ));
    error.http = Some(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    error
}

/// What the last gzip member's trailer says the body inflates to (its ISIZE: the size modulo
/// 2^32, so a hint, not a promise); 0 if the body is too short to be gzip.
pub(crate) fn gzip_announced_len(body: &[u8]) -> usize {
    match body.len().checked_sub(4).filter(|_| body.len() >= 18) {
        Some(at) => {
            u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]) as usize
        }
        None => 0,
    }
}

/// `body` inflated, or `None` if it inflates to more than `cap` bytes (without inflating
/// the rest of what may be a bomb).
pub(crate) fn inflate_gzip(body: &[u8], cap: usize) -> Result<Option<Vec<u8>>, RestError> {
    let mut inflated = Vec::new();
    // One byte past the cap tells "exactly at the cap" from "over it".
    let read = flate2::read::MultiGzDecoder::new(body)
        .take(cap as u64 + 1)
        .read_to_end(&mut inflated);
    if let Err(e) = read {
        return Err(RestError::invalid(format!(
            "cannot decompress the gzip request body: {e}"
        )));
    }
    Ok((inflated.len() <= cap).then_some(inflated))
}

/// A gzip body that inflates to more than the body limit (413).
pub(crate) fn too_large_inflated(limit: usize) -> RestError {
    let mut error = RestError::invalid(format!(
        "the request body is larger than the limit of {limit} bytes once decompressed"
    ));
    error.http = Some(StatusCode::PAYLOAD_TOO_LARGE);
    error
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
    fn gzip_bodies_are_inflated_within_a_cap() {
        let body = br#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#;
        let inflated = inflate_gzip(&gzip(body), body.len()).unwrap();
        assert_eq!(inflated.as_deref(), Some(&body[..]));
        // Two gzip members one after the other are one body (as `cat a.gz b.gz`).
        let twice = [gzip(b"ab"), gzip(b"cd")].concat();
        assert_eq!(
            inflate_gzip(&twice, 4).unwrap().as_deref(),
            Some(&b"abcd"[..])
        );

        assert_eq!(inflate_gzip(&gzip(body), body.len() - 1).unwrap(), None);
        // A bomb stops at the cap instead of filling memory.
        let bomb = gzip(&vec![b' '; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        assert_eq!(inflate_gzip(&bomb, 1 << 20).unwrap(), None);

        let junk = inflate_gzip(body, 1 << 20).unwrap_err();
        assert_eq!(junk.status(), StatusCode::BAD_REQUEST);
        assert!(
            junk.message
                .starts_with("cannot decompress the gzip request body: "),
            "{junk:?}"
        );
        assert_eq!(
            too_large_inflated(1).status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn the_announced_size_is_the_last_members_trailer() {
        assert_eq!(gzip_announced_len(&gzip(&[7; 1000])), 1000);
        let twice = [gzip(b"ab"), gzip(b"cde")].concat();
        assert_eq!(
            gzip_announced_len(&twice),
            3,
            "a hint: the last member only"
        );
        assert_eq!(gzip_announced_len(b"short"), 0);
    }
}
