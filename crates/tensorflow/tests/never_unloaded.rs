//! TensorFlow's libraries stay loaded once opened, even when opening fails.
//!
//! A test binary of its own: the check needs a process in which nothing has opened
//! TensorFlow yet. Before the libraries were opened with RTLD_NODELETE, a failed open of
//! `libtensorflow_framework.so.2` unloaded it, the next open ran its initialisers a second
//! time, and the process crashed at exit with a double free.

use std::path::Path;

use soma_tensorflow::{SavedModel, SessionOptions, TensorFlow, TfError, locate};
use soma_testkit::fixtures;

/// Whether `file` is mapped into this process (the kernel's list, so no `dlopen` of ours
/// can change the answer).
fn is_loaded(file: &Path) -> bool {
    let file = file.canonicalize().unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .any(|line| line.ends_with(&*file.to_string_lossy()))
}

#[test]
fn a_failed_open_keeps_the_library_and_models_still_load() {
    let cc = locate(None).expect("TensorFlow from .venv (run scripts/setup.sh)");
    let framework = cc.with_file_name("libtensorflow_framework.so.2");
    assert!(!is_loaded(&framework), "nothing has opened TensorFlow yet");

    let err = TensorFlow::load(&framework).unwrap_err();
    assert!(matches!(err, TfError::MissingSymbol { .. }), "{err:?}");
    assert!(
        is_loaded(&framework),
        "a failed open must not unload TensorFlow"
    );

    let tf = TensorFlow::global(None).unwrap();
    let dir = fixtures().join("iris").join("1");
    let dir = if dir.exists() {
        dir
    } else {
        fixtures().join("iris")
    };
    let model = SavedModel::load(&tf, &dir, &["serve"], &SessionOptions::default()).unwrap();
    assert!(!model.signatures().is_empty());
    drop(model);
    drop(tf);
    assert!(
        is_loaded(&cc),
        "dropping every handle must not unload TensorFlow"
    );
}
