//! Compressed requests (`grpc-encoding: gzip | deflate`) inflated by the lane before its
//! direct Predict or tonic's router (and its codec) sees them, with the inflated bytes counted against the
//! listener's request byte budget ([`crate::held`]) as they come out of the decoder, or
//! up front where gzip's trailer states the size (the buffer is then taken at once).
//!
//! tonic inflates a compressed message up to the message size limit (2 GiB by default, as
//! TF Serving's) and counts none of it, so the budget saw only the compressed bytes: an
//! audit's 1 MiB message of gzip (1 GiB of zeros) took a server to 2.4 GB, three at once to
//! 4.9 GB. Here a message whose inflated bytes would go past the budget fails at once with
//! RESOURCE_EXHAUSTED, as an uncompressed one does, and the message reaches tonic
//! uncompressed (its flag cleared, `grpc-encoding` removed). Errors are worded as tonic's
//! codec words them.

use std::io::Read;

use bytes::Bytes;
use tonic::Status;
use tonic::codegen::http::HeaderMap;

use crate::held::Held;

/// Above this many compressed bytes, a body is inflated on tokio's blocking pool.
const INLINE_BYTES: usize = 64 << 10;

/// How the decoder reads each chunk; the budget grows by as much at a time.
const CHUNK: usize = 64 << 10;

/// A compression of gRPC requests that tonic's services accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Gzip,
    Deflate,
}

impl Coding {
    /// From the request's `grpc-encoding`; `None` for none, `identity`, or a coding the
    /// services refuse themselves (UNIMPLEMENTED, with the ones they accept).
    pub(crate) fn of(headers: &HeaderMap) -> Option<Coding> {
        match headers.get("grpc-encoding")?.as_bytes() {
            b"gzip" => Some(Coding::Gzip),
            b"deflate" => Some(Coding::Deflate),
            _ => None,
        }
    }
}

/// `body`'s gRPC messages with each compressed one inflated; what is not a whole message
/// (a truncated one) is left as it is, for tonic to answer.
pub(crate) fn inflate_body(
    body: &[u8],
    coding: Coding,
    held: &mut Held,
    limit: usize,
) -> Result<Bytes, Status> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some((&[flag, a, b, c, d], after)) = rest.split_first_chunk::<5>() {
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        if flag != 1 || after.len() < len {
            break;
        }
        // The message is inflated in place behind its prefix, whose length is filled in
        // after: no copy of what may be gigabytes.
        let prefix = out.len();
        out.extend_from_slice(&[0; 5]);
        let inflated = inflate_message(&after[..len], coding, held, limit, &mut out)?;
        // At most `limit`, which is below 4 GiB (the codec's own bound).
        let inflated = u32::try_from(inflated).unwrap_or(u32::MAX);
        out[prefix + 1..prefix + 5].copy_from_slice(&inflated.to_be_bytes());
        rest = &after[len..];
    }
    out.extend_from_slice(rest);
    Ok(Bytes::from(out))
}

/// Appends the inflated `compressed` to `out`, counting it in `held`; its length.
fn inflate_message(
    compressed: &[u8],
    coding: Coding,
    held: &mut Held,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<usize, Status> {
    let mut decoder: Box<dyn Read + '_> = match coding {
        Coding::Gzip => Box::new(flate2::read::GzDecoder::new(compressed)),
        Coding::Deflate => Box::new(flate2::read::ZlibDecoder::new(compressed)),
    };
    // Room for the whole message at once where gzip's trailer says its size, counted before
    // it is taken: growing as it fills, the buffer would hold up to twice the message, and
    // copy it at each doubling. A size claimed past the budget fails as the message would.
    let claimed = match coding {
        Coding::Gzip => gzip_size(compressed).filter(|&size| size <= limit),
        Coding::Deflate => None,
    };
    let mut counted = 0;
    if let Some(size) = claimed {
        if !held.grow(size) {
            return Err(held.exhausted());
        }
        out.reserve_exact(size);
        counted = size;
    }
    let mut inflated = 0;
    let mut chunk = vec![0; CHUNK];
    loop {
        let n = decoder.read(&mut chunk).map_err(|e| {
            Status::internal(format!("Error decompressing: {e}, while sending request"))
        })?;
        if n == 0 {
            // A claim larger than the message gives its excess back.
            held.shrink(counted - inflated);
            return Ok(inflated);
        }
        if inflated + n > limit {
            return Err(Status::resource_exhausted(format!(
                "Error decompressing: size limit, of {limit} bytes, exceeded while \
                 decompressing message"
            )));
        }
        let uncounted = (inflated + n).saturating_sub(counted);
        if !held.grow(uncounted) {
            return Err(held.exhausted());
        }
        counted += uncounted;
        out.extend_from_slice(&chunk[..n]);
        inflated += n;
    }
}

/// The inflated size a gzip member's trailer states (ISIZE: the size modulo 4 GiB, so
/// exact for every message the size limit allows); `None` if `compressed` is too short to
/// be gzip. Only a hint: a client may state anything.
fn gzip_size(compressed: &[u8]) -> Option<usize> {
    // A 10-byte header and an 8-byte trailer at least.
    if compressed.len() < 18 {
        return None;
    }
    let (_, trailer) = compressed.split_last_chunk::<4>()?;
    usize::try_from(u32::from_le_bytes(*trailer)).ok()
}

/// [`inflate_body`] on tokio's blocking pool when the body is large (inflating megabytes
/// takes milliseconds); `held` comes back with the inflated bytes counted.
pub(crate) async fn inflate_off_thread(
    body: Bytes,
    coding: Coding,
    mut held: Held,
    limit: usize,
) -> Result<(Bytes, Held), Status> {
    if body.len() <= INLINE_BYTES {
        return inflate_body(&body, coding, &mut held, limit).map(|body| (body, held));
    }
    tokio::task::spawn_blocking(move || {
        inflate_body(&body, coding, &mut held, limit).map(|body| (body, held))
    })
    .await
    .map_err(|join| Status::internal(format!("the decompression task failed: {join}")))?
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::held::RequestBytes;

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut frame = vec![flag];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(message);
        frame
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn compressed_messages_are_inflated_and_counted() {
        let budget = RequestBytes::new(1 << 20);
        let mut held = budget.hold();
        let body = framed(1, &gzip(b"hello"));
        let inflated = inflate_body(&body, Coding::Gzip, &mut held, 100).unwrap();
        assert_eq!(&inflated[..], &framed(0, b"hello")[..]);
        // An uncompressed message, or a truncated one, passes as it is.
        let plain = framed(0, b"as is");
        assert_eq!(
            &inflate_body(&plain, Coding::Gzip, &mut held, 100).unwrap()[..],
            &plain[..]
        );
        let truncated = &body[..body.len() - 1];
        assert_eq!(
            &inflate_body(truncated, Coding::Gzip, &mut held, 100).unwrap()[..],
            truncated
        );
    }

    #[test]
    fn a_bomb_stops_at_the_limit_or_the_budget() {
        let bomb = framed(1, &gzip(&vec![0; 4 << 20]));
        let budget = RequestBytes::new(64 << 20);
        let over = inflate_body(&bomb, Coding::Gzip, &mut budget.hold(), 1 << 20).unwrap_err();
        assert_eq!(over.code(), tonic::Code::ResourceExhausted);
        assert!(over.message().contains("size limit"), "{over:?}");
        let small = RequestBytes::new(1 << 20);
        let mut held = small.hold();
        let over = inflate_body(&bomb, Coding::Gzip, &mut held, 64 << 20).unwrap_err();
        assert_eq!(over.code(), tonic::Code::ResourceExhausted);
        assert!(over.message().contains("receiving"), "{over:?}");
        drop(held);
        assert!(small.hold().grow(1 << 20), "the budget is given back");
    }

    #[test]
    fn gzip_stated_size_is_taken_and_counted_up_front() {
        let message = vec![7; 100_000];
        let budget = RequestBytes::new(1 << 20);
        let mut held = budget.hold();
        let body = framed(1, &gzip(&message));
        let inflated = inflate_body(&body, Coding::Gzip, &mut held, 1 << 20).unwrap();
        assert_eq!(&inflated[5..], &message[..]);
        assert_eq!(held.bytes(), message.len());
        // Taken at once: not grown by doubling (to 128 KiB), nor copied on the way.
        let mut out = Vec::new();
        inflate_message(
            &gzip(&message),
            Coding::Gzip,
            &mut budget.hold(),
            1 << 20,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.capacity(), message.len());

        // A trailer that claims more than the budget fails before inflating anything.
        let mut lying = gzip(b"small");
        let at = lying.len() - 4;
        lying[at..].copy_from_slice(&(2u32 << 20).to_le_bytes());
        let mut held = budget.hold();
        let over = inflate_body(&framed(1, &lying), Coding::Gzip, &mut held, 4 << 20);
        assert_eq!(over.unwrap_err().code(), tonic::Code::ResourceExhausted);
        // One within the budget but not the message's size is found out by the decoder.
        for claim in [512u32 << 10, 1] {
            lying[at..].copy_from_slice(&claim.to_le_bytes());
            let wrong = inflate_body(
                &framed(1, &lying),
                Coding::Gzip,
                &mut budget.hold(),
                4 << 20,
            );
            assert_eq!(wrong.unwrap_err().code(), tonic::Code::Internal);
        }
    }

    #[test]
    fn junk_is_an_internal_error_as_tonic_says() {
        let budget = RequestBytes::new(1 << 20);
        let junk = framed(1, b"not gzip at all");
        let error = inflate_body(&junk, Coding::Gzip, &mut budget.hold(), 100).unwrap_err();
        assert_eq!(error.code(), tonic::Code::Internal);
        assert!(
            error.message().starts_with("Error decompressing: "),
            "{error:?}"
        );
    }
}
