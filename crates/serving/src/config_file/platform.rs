//! `--platform_config_file`: TF Serving's `PlatformConfigMap`, the older way to configure
//! how TensorFlow models are loaded (session config, batching, tags, warm-up) in one file.
//!
//! ```text
//! platform_configs {
//!   key: "tensorflow"
//!   value {
//!     source_adapter_config {
//!       [type.googleapis.com/tensorflow.serving.SavedModelBundleSourceAdapterConfig] {
//!         legacy_config {
//!           session_config { intra_op_parallelism_threads: 2 }
//!           batching_parameters { max_batch_size { value: 32 } }
//!           enable_model_warmup: true
//!         }
//!       }
//!     }
//!   }
//! }
//! ```
//!
//! Read by its schema (see [`schema`]). soma applies the `SessionBundleConfig` fields
//! declared in its `session_bundle_config.proto`; any other field is refused by name.

use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage};
use soma_grpc_proto::tensorflow::serving::{
    BatchingParameters, PlatformConfigMap, SavedModelBundleSourceAdapterConfig,
};
use soma_runtime::batching::BatchOptions;

use super::{ConfigFileError, parse_batching_parameters, schema};

static PLATFORM_CONFIG_MAP: LazyLock<MessageDescriptor> =
    LazyLock::new(|| schema::message_type("tensorflow.serving.PlatformConfigMap"));

static ADAPTER_CONFIG: LazyLock<MessageDescriptor> = LazyLock::new(|| {
    schema::message_type("tensorflow.serving.SavedModelBundleSourceAdapterConfig")
});

static BATCHING_PARAMETERS: LazyLock<MessageDescriptor> =
    LazyLock::new(|| schema::message_type("tensorflow.serving.BatchingParameters"));

/// The one source adapter config of the `tensorflow` platform soma reads.
const SAVED_MODEL_ADAPTER: &str =
    "type.googleapis.com/tensorflow.serving.SavedModelBundleSourceAdapterConfig";

/// What a platform config file sets for every model (TF Serving then ignores the flags
/// that set the same things: the thread pools, batching, tags and warm-up).
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformConfig {
    /// `session_config`, encoded for TensorFlow (empty: none).
    pub session_config: Vec<u8>,
    /// `batching_parameters`: requests are batched when it is set.
    pub batching: Option<BatchOptions>,
    /// `saved_model_tags`; `serve` when the file gives none.
    pub saved_model_tags: Vec<String>,
    /// Recorded warm-up requests are replayed this many times each (`enable_model_warmup`,
    /// `model_warmup_options.num_request_iterations`); `None`: not replayed.
    pub warmup_iterations: Option<u32>,
}

/// Parses a platform config file. It must configure the `tensorflow` platform (the only
/// one soma serves) with a `SavedModelBundleSourceAdapterConfig`.
pub fn parse_platform_config(text: &str) -> Result<PlatformConfig, ConfigFileError> {
    let parsed = schema::parse(text, &PLATFORM_CONFIG_MAP).map_err(|e| {
        let mut message = e.to_string();
        if message.contains("not found for message 'tensorflow.serving.") {
            // A real TF Serving field soma's copy leaves out: say what soma does apply.
            message.push_str(
                " (of legacy_config soma applies session_config, batching_parameters, \
                 saved_model_tags, enable_model_warmup and \
                 model_warmup_options.num_request_iterations)",
            );
        }
        schema::located(text, &e, message)
    })?;
    let mut map: PlatformConfigMap = parsed
        .transcode_to()
        .expect("the same message type, from the same descriptors");
    if let Some(other) = map.platform_configs.keys().find(|k| *k != "tensorflow") {
        return Err(schema::at_field(
            text,
            &format!("\"{other}\""),
            format!("platform '{other}': soma serves the \"tensorflow\" platform only"),
        ));
    }
    let Some(platform) = map.platform_configs.remove("tensorflow") else {
        return Err(schema::at_field(
            text,
            "",
            "no config for the \"tensorflow\" platform: platform_configs { key: \"tensorflow\" \
             value { source_adapter_config { [type.googleapis.com/tensorflow.serving.\
             SavedModelBundleSourceAdapterConfig] { legacy_config { ... } } } } }"
                .into(),
        ));
    };
    let any = platform.source_adapter_config.unwrap_or_default();
    if any.type_url != SAVED_MODEL_ADAPTER {
        let found = match any.type_url.as_str() {
            "" => "none".to_string(),
            url => format!("'{url}'"),
        };
        return Err(schema::at_field(
            text,
            "source_adapter_config",
            format!(
                "the \"tensorflow\" platform's source_adapter_config must be a \
                 [{SAVED_MODEL_ADAPTER}], found {found}"
            ),
        ));
    }
    // The config may be written out (`[type.googleapis.com/...] { ... }`, which the text
    // parser checked field by field) or given as `type_url` and serialized `value` bytes,
    // which may hold fields soma's copy of the messages does not declare: refuse those
    // rather than drop them.
    let adapter =
        DynamicMessage::decode(ADAPTER_CONFIG.clone(), any.value.as_slice()).map_err(|e| {
            schema::at_field(
                text,
                "source_adapter_config",
                format!("the source_adapter_config's value is not a {SAVED_MODEL_ADAPTER}: {e}"),
            )
        })?;
    if let Some((message, number)) = first_unknown_field(&adapter) {
        return Err(schema::at_field(
            text,
            "source_adapter_config",
            format!(
                "the source_adapter_config's value sets field {number} of {message}, which soma \
                 does not apply; write legacy_config out as text to see which fields it takes"
            ),
        ));
    }
    let adapter: SavedModelBundleSourceAdapterConfig = adapter
        .transcode_to()
        .expect("the same message type, from the same descriptors");
    let bundle = adapter.legacy_config.unwrap_or_default();
    if !bundle.session_target.is_empty() {
        return Err(schema::at_field(
            text,
            "session_target",
            format!(
                "session_target '{}': soma runs TensorFlow in its own process; leave \
                 session_target empty",
                bundle.session_target
            ),
        ));
    }
    let batching = bundle
        .batching_parameters
        .map(|parameters| batch_options(&parameters))
        .transpose()
        .map_err(|message| schema::at_field(text, "batching_parameters", message))?;
    let saved_model_tags = match bundle.saved_model_tags {
        tags if tags.is_empty() => vec!["serve".to_string()],
        tags => tags,
    };
    let iterations = bundle
        .model_warmup_options
        .and_then(|options| options.num_request_iterations)
        .map_or(1, |n| u32::try_from(n).unwrap_or(0).max(1));
    Ok(PlatformConfig {
        session_config: bundle
            .session_config
            .map(|config| config.encode_to_vec())
            .unwrap_or_default(),
        batching,
        saved_model_tags,
        warmup_iterations: bundle.enable_model_warmup.then_some(iterations),
    })
}

/// The first field in `message` or the messages in it that its descriptor does not declare:
/// the message's full name and the field's number.
fn first_unknown_field(message: &DynamicMessage) -> Option<(String, u32)> {
    if let Some(field) = message.unknown_fields().next() {
        return Some((message.descriptor().full_name().to_string(), field.number()));
    }
    let nested = |value: &prost_reflect::Value| -> Option<(String, u32)> {
        match value {
            prost_reflect::Value::Message(inner) => first_unknown_field(inner),
            prost_reflect::Value::List(items) => items
                .iter()
                .filter_map(prost_reflect::Value::as_message)
                .find_map(first_unknown_field),
            prost_reflect::Value::Map(entries) => entries
                .values()
                .filter_map(prost_reflect::Value::as_message)
                .find_map(first_unknown_field),
            _ => None,
        }
    };
    message.fields().find_map(|(_, value)| nested(value))
}

/// The batching parameters, read and checked as a `--batching_parameters_file` is (the
/// same fields, limits and messages).
fn batch_options(parameters: &BatchingParameters) -> Result<BatchOptions, String> {
    let mut message = DynamicMessage::new(BATCHING_PARAMETERS.clone());
    message
        .transcode_from(parameters)
        .expect("the same message type, from the same descriptors");
    parse_batching_parameters(&message.to_text_format())
        .map_err(|e| format!("batching_parameters: {}", e.message))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use soma_runtime::batching::BatchWindow;

    use super::*;

    /// A platform config whose `legacy_config` holds `fields`.
    fn with_legacy_config(fields: &str) -> String {
        format!(
            "platform_configs {{\n  key: \"tensorflow\"\n  value {{\n    source_adapter_config {{\n\
             \x20     [{SAVED_MODEL_ADAPTER}] {{\n        legacy_config {{\n{fields}\n\
             \x20       }}\n      }}\n    }}\n  }}\n}}\n"
        )
    }

    #[test]
    fn the_fields_soma_applies() {
        let config = parse_platform_config(&with_legacy_config(
            "session_config { intra_op_parallelism_threads: 2 log_device_placement: true }\n\
             batching_parameters {\n\
               max_batch_size { value: 32 } batch_timeout_micros { value: 500 }\n\
               num_batch_threads { value: 2 } allowed_batch_sizes: [8, 32]\n\
               pad_variable_length_inputs: true thread_pool_name { value: \"pool\" }\n\
             }\n\
             saved_model_tags: \"serve\" saved_model_tags: \"gpu\"\n\
             enable_model_warmup: true model_warmup_options { num_request_iterations { value: 3 } }",
        ))
        .unwrap();
        // intra_op_parallelism_threads (2) = 2, log_device_placement (8) = true.
        assert_eq!(config.session_config, [0x10, 2, 0x40, 1]);
        let batching = config.batching.unwrap();
        assert_eq!(batching.max_batch_size, 32);
        assert_eq!(
            batching.window,
            BatchWindow::Fixed(Duration::from_micros(500))
        );
        assert_eq!(batching.num_batch_threads, 2);
        assert_eq!(batching.allowed_batch_sizes, [8, 32]);
        assert!(batching.pad_variable_length_inputs);
        assert_eq!(config.saved_model_tags, ["serve", "gpu"]);
        assert_eq!(config.warmup_iterations, Some(3));
    }

    #[test]
    fn unset_fields_take_the_config_messages_defaults() {
        // As in TF Serving: no batching, no warm-up replay (the proto's `false`), `serve`.
        let config = parse_platform_config(&with_legacy_config("")).unwrap();
        assert_eq!(
            config,
            PlatformConfig {
                session_config: Vec::new(),
                batching: None,
                saved_model_tags: vec!["serve".into()],
                warmup_iterations: None,
            }
        );
        let warmup = parse_platform_config(&with_legacy_config("enable_model_warmup: true"));
        assert_eq!(warmup.unwrap().warmup_iterations, Some(1));
    }

    /// `source_adapter_config { type_url: "..." value: "<bytes>" }`, as TF Serving users
    /// write it with bytes from Python's `SerializeToString()`.
    fn with_adapter_bytes(bytes: &[u8]) -> String {
        let escaped: String = bytes.iter().map(|b| format!("\\{b:03o}")).collect();
        format!(
            "platform_configs {{ key: \"tensorflow\" value {{ source_adapter_config {{\n\
             type_url: \"{SAVED_MODEL_ADAPTER}\"\nvalue: \"{escaped}\" }} }} }}"
        )
    }

    #[test]
    fn the_config_as_serialized_bytes() {
        // legacy_config (1000) { session_config (2) { intra_op_parallelism_threads (2): 3 } }
        let config =
            parse_platform_config(&with_adapter_bytes(&[0xc2, 0x3e, 4, 0x12, 2, 0x10, 3])).unwrap();
        assert_eq!(config.session_config, [0x10, 3]);
        // ... and a field soma does not declare: number 99 of ConfigProto (varint 1).
        let unknown = parse_platform_config(&with_adapter_bytes(&[
            0xc2, 0x3e, 7, 0x12, 5, 0x10, 3, 0x98, 0x06, 1,
        ]))
        .unwrap_err();
        assert!(
            unknown
                .message
                .contains("sets field 99 of tensorflow.ConfigProto, which soma does not apply"),
            "{unknown}"
        );
        let junk = parse_platform_config(&with_adapter_bytes(&[0xc2, 0x3e, 9])).unwrap_err();
        assert!(
            junk.message.contains("is not a type.googleapis.com"),
            "{junk}"
        );
    }

    #[test]
    fn errors_say_what_is_wrong_and_where() {
        let legacy = |fields: &str| parse_platform_config(&with_legacy_config(fields));
        let cases = [
            (
                legacy("session_target: \"grpc://tf:2222\""),
                (7, 1),
                "session_target 'grpc://tf:2222': soma runs TensorFlow in its own process",
            ),
            (
                legacy("batching_parameters { num_batch_threads { value: 0 } }"),
                (7, 1),
                "batching_parameters: num_batch_threads must be positive",
            ),
            (
                legacy("enable_session_metadata: true"),
                (7, 1),
                "field 'enable_session_metadata' not found for message \
                 'tensorflow.serving.SessionBundleConfig' (of legacy_config soma applies \
                 session_config, batching_parameters,",
            ),
            (
                legacy("session_config { intra_op_threads: 2 }"),
                (7, 18),
                "field 'intra_op_threads' not found for message 'tensorflow.ConfigProto'",
            ),
            (
                parse_platform_config("platform_configs { key: \"tflite\" value { } }"),
                (1, 25),
                "platform 'tflite': soma serves the \"tensorflow\" platform only",
            ),
            (
                parse_platform_config(""),
                (1, 1),
                "no config for the \"tensorflow\" platform",
            ),
            (
                parse_platform_config(
                    "platform_configs { key: \"tensorflow\" value { source_adapter_config { \
                     [type.googleapis.com/tensorflow.serving.PlatformConfig] { } } } }",
                ),
                (1, 46),
                "must be a [type.googleapis.com/tensorflow.serving.\
                 SavedModelBundleSourceAdapterConfig], found 'type.googleapis.com/tensorflow.\
                 serving.PlatformConfig'",
            ),
        ];
        for (result, (line, column), message) in cases {
            let e = result.unwrap_err();
            assert_eq!((e.line, e.column), (line, column), "{e}");
            assert!(e.message.contains(message), "{e}");
        }
    }
}
