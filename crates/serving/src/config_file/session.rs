//! `--tensorflow_session_config_file`: TensorFlow's session `ConfigProto` in protobuf text
//! format, read by its schema (soma's copy of TensorFlow's `config.proto`, in
//! `soma-grpc-proto`) and encoded for TensorFlow, which applies it to every session.
//!
//! ```text
//! intra_op_parallelism_threads: 2
//! graph_options { rewrite_options { remapping: OFF } }
//! experimental { disable_thread_spinning: true }
//! ```
//!
//! Read by its schema (see [`schema`]): TensorFlow reads every field of the result.

use std::sync::LazyLock;

use prost::Message;
use prost_reflect::MessageDescriptor;

use super::ConfigFileError;
use super::schema;

static CONFIG_PROTO: LazyLock<MessageDescriptor> =
    LazyLock::new(|| schema::message_type("tensorflow.ConfigProto"));

/// Parses a session config file into the encoded `ConfigProto` TensorFlow takes. A field
/// TensorFlow does not have, a value of the wrong type or an unknown enum name is an error
/// at its line and column; so are the distributed runtime's fields (`cluster_def`,
/// `rpc_options`), which a model server never uses.
pub fn parse_session_config(text: &str) -> Result<Vec<u8>, ConfigFileError> {
    let message = schema::parse(text, &CONFIG_PROTO).map_err(|e| {
        let mut message = e.to_string();
        if let Some(field) = LEFT_OUT
            .iter()
            .find(|f| message.contains(&format!("'{f}'")))
        {
            message.push_str(&format!(
                " (soma reads TensorFlow's session config without {field}: it configures \
                 distributed TensorFlow or custom Grappler optimizers, which soma does not run)"
            ));
        }
        schema::located(text, &e, message)
    })?;
    Ok(message.encode_to_vec())
}

/// TensorFlow's session config fields that soma's copy of `config.proto` leaves out.
const LEFT_OUT: [&str; 6] = [
    "cluster_def",
    "rpc_options",
    "coordination_config",
    "custom_optimizers",
    "inter_optimizer_verifier_config",
    "post_optimization_verifier_config",
];

#[cfg(test)]
mod tests {
    use prost_reflect::DynamicMessage;

    use super::*;

    /// Decodes `bytes` as a `ConfigProto` and prints it back, to compare with the input's
    /// meaning rather than its bytes.
    fn text_of(bytes: &[u8]) -> String {
        DynamicMessage::decode(CONFIG_PROTO.clone(), bytes)
            .unwrap()
            .to_text_format()
    }

    #[test]
    fn reads_the_fields_users_set() {
        let bytes = parse_session_config(
            "# a comment\n\
             intra_op_parallelism_threads: 2\n\
             inter_op_parallelism_threads: 3\n\
             device_count { key: \"CPU\" value: 1 }\n\
             gpu_options { per_process_gpu_memory_fraction: 0.25 allow_growth: true }\n\
             graph_options {\n\
               optimizer_options { opt_level: L0 global_jit_level: OFF }\n\
               rewrite_options { remapping: OFF optimizers: \"constfold\" }\n\
             }\n\
             experimental { disable_thread_spinning: true session_metadata < name: 'm' > }\n",
        )
        .unwrap();
        let text = text_of(&bytes);
        for part in [
            "device_count:[{key:\"CPU\",value:1}]",
            "intra_op_parallelism_threads:2",
            "inter_op_parallelism_threads:3",
            "per_process_gpu_memory_fraction:0.25",
            "allow_growth:true",
            "opt_level:L0",
            "global_jit_level:OFF",
            "remapping:OFF",
            "optimizers:[\"constfold\"]",
            "disable_thread_spinning:true",
            "session_metadata{name:\"m\"}",
        ] {
            assert!(text.contains(part), "{part} not in {text}");
        }
        // TensorFlow's field numbers, as TensorFlow decodes them.
        assert_eq!(
            bytes[..2],
            [0x0a, 7],
            "device_count is field 1, a map entry"
        );
    }

    #[test]
    fn an_empty_file_is_an_empty_config() {
        assert_eq!(parse_session_config("").unwrap(), Vec::<u8>::new());
        assert_eq!(
            parse_session_config("  # nothing\n").unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn errors_name_the_field_and_where_it_is() {
        let cases = [
            (
                "intra_op_parallelism_threads: 2\nintra_op_threads: 2\n",
                2,
                1,
                "intra_op_threads",
            ),
            (
                "graph_options {\n  rewrite_options { remapping: MAYBE }\n}\n",
                2,
                32,
                "MAYBE",
            ),
            ("intra_op_parallelism_threads: \"two\"\n", 1, 31, "\"two\""),
            (
                "cluster_def { }\n",
                1,
                1,
                "without cluster_def: it configures distributed",
            ),
            ("gpu_options {\n", 2, 1, "end of input"),
        ];
        for (text, line, column, names) in cases {
            let e = parse_session_config(text).unwrap_err();
            assert_eq!((e.line, e.column), (line, column), "{text:?}: {e}");
            assert!(e.message.contains(names), "{text:?}: {e}");
        }
    }
}
