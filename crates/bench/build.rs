//! Gives the `soma-bench` binary an rpath to libpython (it embeds Python for the async floor).
//! Same as crates/cli/build.rs.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    let python = std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))",
        ])
        .output();
    if let Ok(out) = output {
        let libdir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !libdir.is_empty() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
        }
    }
}
