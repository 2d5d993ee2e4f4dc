//! Each model's inter-op thread-pool size is its own; the intra-op pool is the process's.
//!
//! A test binary of its own: it counts TensorFlow's pool threads in this process, so no other
//! test may load models here. Without `use_per_session_threads`, TensorFlow makes one inter-op
//! pool for the whole process, sized by the first session that asks for one: a second model
//! asking for 3 threads silently shared the first one's 2.

use std::path::PathBuf;
use std::sync::Arc;

use soma_tensorflow::{SavedModel, SessionOptions, TensorFlow};
use soma_testkit::fixtures;

/// Threads of this process whose name starts with `prefix` (Linux truncates names to 15
/// bytes; TensorFlow names its inter-op pool's threads `tf_Compute`).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

fn iris() -> PathBuf {
    let base = fixtures().join("iris");
    let mut versions: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .collect();
    versions.sort();
    base.join(versions.last().expect("iris has versions").to_string())
}

#[test]
fn each_model_gets_the_inter_op_pool_it_asks_for() {
    let tf = TensorFlow::global(None).unwrap();
    let load_over = |inter: Option<u32>, base_config: Option<Arc<[u8]>>| {
        let options = SessionOptions {
            inter_op_threads: inter,
            base_config,
            ..SessionOptions::default()
        };
        SavedModel::load(&tf, &iris(), &["serve"], &options).unwrap()
    };
    let load = |inter: Option<u32>| load_over(inter, None);
    let before = threads_named("tf_Compute");
    // soma's default runs ops in the calling thread: no pool of the session's own.
    let _caller = load(None);
    let after_default = threads_named("tf_Compute");
    let _two = load(Some(2));
    let after_two = threads_named("tf_Compute");
    let _three = load(Some(3));
    let after_three = threads_named("tf_Compute");
    assert_eq!(
        after_three - after_two,
        3,
        "the second model's own 3 threads (before: {before}, after the default-pool model: \
         {after_default}, after the 2-thread one: {after_two}, after the 3-thread one: {after_three})"
    );
    assert!(
        after_two - after_default >= 2,
        "{after_default} -> {after_two}"
    );

    // A session config (TF Serving's --tensorflow_session_config_file) sizes the pool when
    // soma is not told a size, and a size soma is told overrides it.
    // inter_op_parallelism_threads: 4, use_per_session_threads: true.
    let four: Arc<[u8]> = [0x28, 4, 0x48, 1].into();
    let _from_config = load_over(None, Some(Arc::clone(&four)));
    let after_config = threads_named("tf_Compute");
    assert_eq!(
        after_config - after_three,
        4,
        "the session config's 4 threads"
    );
    let _overridden = load_over(Some(1), Some(four));
    assert_eq!(
        threads_named("tf_Compute") - after_config,
        1,
        "the size soma was told, not the session config's"
    );

    // The intra-op pool is made once per process by the first session, and the C API has no
    // switch for one per session: a later model asking for 3 threads starts none. (Its
    // threads cannot be told by name: TensorFlow's name for them is longer than Linux
    // allows, so they keep their creator's.) README says so ("cortex.yaml"); if TensorFlow
    // changes this, this assertion fails and the README should change with it.
    let threads = threads_named("");
    let _intra = SavedModel::load(
        &tf,
        &iris(),
        &["serve"],
        &SessionOptions {
            intra_op_threads: Some(3),
            ..SessionOptions::default()
        },
    )
    .unwrap();
    assert_eq!(threads_named(""), threads, "one intra-op pool per process");
}
