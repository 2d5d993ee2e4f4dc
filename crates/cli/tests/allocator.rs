//! The `soma` binary must export the C allocation functions (mimalloc's `override` feature):
//! that is what makes TensorFlow and libpython allocate from mimalloc instead of glibc's
//! malloc, which cost ~17% of the REST server's CPU (BENCHMARKS.md §4). Dropping the feature
//! still builds and runs, only slower, so this checks the dynamic symbol table directly.

use std::process::Command;

#[test]
fn soma_exports_mimalloc_as_the_c_allocator() {
    let out = Command::new("nm")
        .args(["-D", "--defined-only", env!("CARGO_BIN_EXE_soma")])
        .output()
        .expect("run nm (binutils, installed with gcc)");
    assert!(out.status.success(), "nm failed: {out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    let exported: Vec<&str> = table
        .lines()
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [_, "T", name] => Some(name),
                _ => None,
            },
        )
        .collect();
    for name in [
        "malloc",
        "free",
        "calloc",
        "realloc",
        "posix_memalign",
        "aligned_alloc",
        "malloc_usable_size",
    ] {
        assert!(
            exported.contains(&name),
            "soma does not export {name}: TensorFlow would use glibc's malloc"
        );
    }
}
