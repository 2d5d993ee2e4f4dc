//! Text-proto files read by their schema (TensorFlow's and TF Serving's messages, from the
//! .proto files `soma-grpc-proto` is built with), with protobuf's full text format: what
//! TensorFlow reads of the result must be read exactly as protobuf's own parser reads it
//! (floats, enum names, maps, `Any` written out as `[type.googleapis.com/...] { ... }`).

use std::sync::LazyLock;

use miette::Diagnostic;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

use super::ConfigFileError;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(soma_grpc_proto::FILE_DESCRIPTOR_SET)
        .expect("the build's own descriptors decode")
});

/// A message type soma is built with, by full name (`tensorflow.ConfigProto`).
pub(super) fn message_type(full_name: &str) -> MessageDescriptor {
    POOL.get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} is compiled into soma-grpc-proto"))
}

/// Parses `text` as a `descriptor` message; an error names its line and column.
pub(super) fn parse(
    text: &str,
    descriptor: &MessageDescriptor,
) -> Result<DynamicMessage, prost_reflect::text_format::ParseError> {
    DynamicMessage::parse_text_format(descriptor.clone(), text)
}

/// Where a parse error is in `text` (its first label; the end of the text for an
/// unexpected end), with its message.
pub(super) fn located(
    text: &str,
    error: &prost_reflect::text_format::ParseError,
    message: String,
) -> ConfigFileError {
    let offset = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map_or(text.len(), |label| label.offset());
    at_offset(text, offset, message)
}

/// An error about `field`, placed at its first appearance in `text` (the parsed message
/// keeps no positions), or at the start.
pub(super) fn at_field(text: &str, field: &str, message: String) -> ConfigFileError {
    at_offset(text, text.find(field).unwrap_or(0), message)
}

/// An error at byte `offset` of `text`, with its 1-based line and column.
fn at_offset(text: &str, offset: usize, message: String) -> ConfigFileError {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    ConfigFileError {
        line,
        column: before[line_start..].chars().count() + 1,
        message,
    }
}
