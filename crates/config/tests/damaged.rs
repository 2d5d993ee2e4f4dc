//! Damaged copies of valid cortex.yaml files (seeded: bytes changed, runs cut, repeated or
//! inserted, tails cut, as the servers' damaged-input tests do) never panic the reader, and
//! every refusal names the file, as Cortex's messages do.

use soma_config::parse;

/// A Python API with most fields set, and a TensorFlow API with two models and batching.
const CORTEX_YAML: &str = "\
- name: echo
  kind: AsyncAPI
  handler:
    type: python
    path: handler.py
    python_path: lib/inner/
    env:
      A: b
    config:
      k: [1, {x: y}]
      n: ~
    log_level: debug
    shm_size: 64Mi
    processes_per_replica: 1
    threads_per_process: 1
  compute:
    cpu: 1.5
    mem: 1G
  autoscaling:
    min_replicas: 0
    max_replicas: 4
    target_replica_concurrency: 2.5
    window: 1m30s
    max_upscale_factor: 3
  update_strategy:
    max_surge: 0
    max_unavailable: 100%
  networking:
    endpoint: team/echo/
- name: iris
  kind: AsyncAPI
  handler:
    type: tensorflow
    path: handler.py
    models:
      signature_key: serving_default
      intra_op_threads: 2
      paths:
        - name: a
          path: s3://bucket/a
        - name: b
          path: models/b
          server_side_batching: {max_batch_size: 64, batch_interval: auto}
    server_side_batching:
      max_batch_size: 8
      batch_interval: 2ms
";

#[test]
fn damaged_cortex_yaml_is_refused_with_the_file_named_and_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("handler.py"), "class Handler: pass\n").unwrap();
    std::fs::create_dir_all(dir.path().join("lib/inner")).unwrap();
    let file = dir.path().join("cortex.yaml");
    parse(CORTEX_YAML, &file).unwrap_or_else(|e| panic!("the undamaged file: {e}"));
    let seed = 0x5eed_2026_1207;
    let mut mutator = soma_testkit::Mutator::new(seed);
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..3000 {
        let damaged = mutator.mutate(CORTEX_YAML.as_bytes());
        let text = String::from_utf8_lossy(&damaged);
        let context = format!("seed {seed:#x}, case {case}:\n{text}");
        match std::panic::catch_unwind(|| parse(&text, &file)) {
            Err(_) => panic!("the reader panicked; {context}"),
            Ok(Ok(_)) => accepted += 1,
            Ok(Err(errors)) => {
                refused += 1;
                assert!(!errors.0.is_empty(), "{context}");
                for error in &errors.0 {
                    assert_eq!(error.file, file, "{error}; {context}");
                    assert!(!error.message.trim().is_empty(), "{error:?}; {context}");
                }
            }
        }
    }
    eprintln!("accepted {accepted}, refused {refused}");
    assert!(accepted > 0 && refused > 0, "{accepted} / {refused}");
}
