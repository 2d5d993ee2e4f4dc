"""Per-call latency of Python TensorFlow's signatures["serving_default"] (the comparison in
BENCHMARKS.md): numpy -> tf.constant -> signature call -> .numpy(), one row of ones.

usage: .venv/bin/python scripts/bench_python_predict.py <model version dir> [iterations] [rounds]
"""

import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main():
    path = sys.argv[1]
    iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    fn = tf.saved_model.load(path).signatures["serving_default"]
    name, spec = next(iter(fn.structured_input_signature[1].items()))
    row = np.ones((1, spec.shape[-1]), dtype=np.float32)

    def call():
        out = fn(**{name: tf.constant(row)})
        next(iter(out.values())).numpy()

    rows = []
    for _ in range(rounds):
        for _ in range(max(1, iterations // 10)):
            call()
        latencies = []
        for _ in range(iterations):
            started = time.perf_counter()
            call()
            latencies.append((time.perf_counter() - started) * 1e6)
        latencies.sort()
        rows.append((statistics.fmean(latencies), latencies[len(latencies) // 2], latencies[len(latencies) * 99 // 100]))
    median = lambda i: sorted(r[i] for r in rows)[len(rows) // 2]  # noqa: E731
    print(f"{'python-tf':<14} {median(0):>10.2f} {median(1):>10.2f} {median(2):>10.2f}")


if __name__ == "__main__":
    main()
