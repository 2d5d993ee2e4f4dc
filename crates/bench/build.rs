//! Gives this package's binaries an rpath to libpython; see the included file.
include!("../../build-support/libpython_rpath.rs");
