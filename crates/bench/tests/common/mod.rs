//! Running `soma-bench` and reading its result line, shared by the generator tests.

use std::process::{Command, Output};

/// Runs `soma-bench` with `args` to completion.
pub(crate) fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_soma-bench"))
        .args(args)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .expect("soma-bench runs")
}

/// Checks that the run succeeded and that its first line is a measurement
/// (`<prefix>: <rate> req/s ... errors 0 of <n>`) with no failed call, and returns the rate.
pub(crate) fn measured_rate(out: &Output, prefix: &str) -> f64 {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().next().unwrap_or_default();
    let rate = line
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix(": "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|rate| rate.parse::<f64>().ok());
    assert!(line.contains(" errors 0 of "), "{line}");
    match rate {
        Some(rate) if rate > 0.0 => rate,
        _ => panic!("not a measurement of '{prefix}' with a positive rate: {line}"),
    }
}
