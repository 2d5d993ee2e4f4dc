//! Damaged copies of valid TF Serving config files (seeded: bytes changed, runs cut,
//! repeated or inserted, tails cut, as the servers' damaged-input tests do) never panic
//! soma's readers, and every refusal points at a line and column inside the text.

use soma_serving::{
    ConfigFileError, parse_batching_parameters, parse_model_config_file, parse_monitoring_config,
    parse_platform_config, parse_session_config, parse_ssl_config,
};

const MODEL_CONFIG: &str = r#"# two models
model_config_list {
  config {
    name: "iris"
    base_path: "s3://bucket/models/iris"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config: { name: 'mlp' base_path: "/models/mlp" model_version_policy: { latest { num_versions: 2 } } }
}
"#;

const BATCHING: &str = "max_batch_size { value: 64 }
batch_timeout_micros { value: 1000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 4 }
allowed_batch_sizes: 8
allowed_batch_sizes: [16, 64]
pad_variable_length_inputs: true
";

const SESSION: &str = r#"intra_op_parallelism_threads: 2
inter_op_parallelism_threads: 3
device_count { key: "CPU" value: 1 }
graph_options {
  optimizer_options { opt_level: L0 global_jit_level: OFF }
  rewrite_options { remapping: OFF optimizers: "constfold" }
}
experimental { disable_thread_spinning: true }
"#;

const MONITORING: &str =
    "prometheus_config {\n  enable: true\n  path: \"/monitoring/prometheus/metrics\"\n}\n";

const SSL: &str =
    "server_key: \"-----BEGIN PRIVATE KEY-----\\nMIIB\\n-----END PRIVATE KEY-----\\n\"
server_cert: '-----BEGIN CERTIFICATE-----\\n'
             'MIIB\\r\\n'
             '-----END CERTIFICATE-----\\n'
custom_ca: \"ca\"
client_verify: true
";

const PLATFORM: &str = r#"platform_configs {
  key: "tensorflow"
  value {
    source_adapter_config {
      [type.googleapis.com/tensorflow.serving.SavedModelBundleSourceAdapterConfig] {
        legacy_config {
          session_config { intra_op_parallelism_threads: 2 log_device_placement: true }
          batching_parameters { max_batch_size { value: 32 } allowed_batch_sizes: [8, 32] }
          saved_model_tags: "serve"
          enable_model_warmup: true
          model_warmup_options { num_request_iterations { value: 3 } }
        }
      }
    }
  }
}
"#;

/// Each reader with a valid file for it: whether the reader took the text, or its error.
type Reader = fn(&str) -> Result<(), ConfigFileError>;

fn readers() -> [(&'static str, &'static str, Reader); 6] {
    [
        ("--model_config_file", MODEL_CONFIG, |t| {
            parse_model_config_file(t).map(drop)
        }),
        ("--batching_parameters_file", BATCHING, |t| {
            parse_batching_parameters(t).map(drop)
        }),
        ("--tensorflow_session_config_file", SESSION, |t| {
            parse_session_config(t).map(drop)
        }),
        ("--monitoring_config_file", MONITORING, |t| {
            parse_monitoring_config(t).map(drop)
        }),
        ("--ssl_config_file", SSL, |t| parse_ssl_config(t).map(drop)),
        ("--platform_config_file", PLATFORM, |t| {
            parse_platform_config(t).map(drop)
        }),
    ]
}

#[test]
fn damaged_config_files_are_refused_at_a_place_in_the_text_and_never_panic() {
    let seed = 0x5eed_2026_1207;
    let mut mutator = soma_testkit::Mutator::new(seed);
    for (flag, valid, read) in readers() {
        read(valid).unwrap_or_else(|e| panic!("{flag}, undamaged: {e:?}"));
        let (mut accepted, mut refused) = (0, 0);
        for case in 0..2000 {
            let damaged = mutator.mutate(valid.as_bytes());
            let text = String::from_utf8_lossy(&damaged);
            let context = format!("{flag}, seed {seed:#x}, case {case}:\n{text}");
            match std::panic::catch_unwind(|| read(&text)) {
                Err(_) => panic!("the reader panicked; {context}"),
                Ok(Ok(())) => accepted += 1,
                Ok(Err(error)) => {
                    refused += 1;
                    // A place in the text: a line that exists (or the one after the last,
                    // for an unexpected end), a column from 1.
                    let lines = text.lines().count().max(1);
                    assert!(
                        (1..=lines + 1).contains(&error.line) && error.column >= 1,
                        "{error:?} in {lines} lines; {context}"
                    );
                    assert!(!error.message.trim().is_empty(), "{error:?}; {context}");
                }
            }
        }
        eprintln!("{flag}: accepted {accepted}, refused {refused}");
        assert!(refused > 0, "{flag}: nothing refused");
    }
}
