// Shared by the build scripts of the crates whose binaries embed CPython (soma-python's
// tests, soma, soma-bench), each of which `include!`s this file: cargo passes link arguments
// from a build script only to its own package's targets.
//
// It gives those binaries an rpath to the libpython of the interpreter PyO3 builds against
// (PYO3_PYTHON, set in .cargo/config.toml to the project's venv): pyenv's lib folder is not
// on the system search path, and the binaries must run without LD_LIBRARY_PATH.

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    let python = std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = std::process::Command::new(&python)
        .args(["-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"])
        .output();
    if let Ok(out) = output {
        let libdir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !libdir.is_empty() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
        }
    }
}
