"""The iris example as a Celery task on a Redis broker, for BENCHMARKS.md section 4.

The task does what examples/iris/handler.py does through soma (payload -> the iris SavedModel,
latest version -> label and probabilities), with the same delivery guarantees as soma's
workers: acknowledged after the task ran (acks_late) and one task prefetched per process.

    CELERY_BROKER=redis://127.0.0.1:6379/0 celery -A celery_iris worker -c 2 ...
    CELERY_BROKER=redis://127.0.0.1:6379/0 python celery_iris.py <payload.json> [workloads] [clients]
"""

import json
import os
import queue
import sys
import threading
import time
from pathlib import Path

from celery import Celery

BROKER = os.environ.get("CELERY_BROKER", "redis://127.0.0.1:6379/0")
MODEL_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "models" / "iris"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
LABELS = ["setosa", "versicolor", "virginica"]

app = Celery("celery_iris", broker=BROKER, backend=BROKER)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    result_expires=3600,
    task_serializer="json",
    result_serializer="json",
)

_signature = None


def _model():
    global _signature
    if _signature is None:
        import tensorflow as tf

        latest = max((p for p in MODEL_DIR.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        _signature = tf.saved_model.load(str(latest)).signatures["serving_default"]
    return _signature


@app.task
def predict(payload):
    import tensorflow as tf

    rows = payload["x"] if "x" in payload else [[float(payload[n]) for n in FEATURES]]
    probabilities = _model()(x=tf.constant(rows, tf.float32))["output_0"].numpy()[0].tolist()
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return {"label": LABELS[best], "probabilities": probabilities}


def _percentile(samples, q):
    samples = sorted(samples)
    return samples[min(len(samples) - 1, int(q * len(samples)))]


def bench(payload, workloads, clients):
    light = []
    for _ in range(300):
        started = time.perf_counter()
        predict.delay(payload).get(timeout=60)
        light.append(time.perf_counter() - started)
    print(
        f"light load (1 at a time, 300 workloads): p50 {_percentile(light, 0.5) * 1000:.2f} ms, "
        f"p99 {_percentile(light, 0.99) * 1000:.2f} ms submit→completed"
    )

    # Submitters hand each result handle to one poller as they get it; the poller follows them
    # in submission order and polls the result backend every 2 ms, as soma-bench polls soma, so
    # the run ends at the last completion. (`AsyncResult.get` with the Redis backend listens on
    # a pub/sub subscription; called from a thread other than the submitting ones it returned
    # about once per 0.1 s here: 1,000 results took 115 s.)
    handles = queue.Queue()
    completed = []

    def submit(count):
        for _ in range(count):
            handles.put(predict.delay(payload))

    errors = []

    def poll():
        while (r := handles.get()) is not None:
            try:
                deadline = time.monotonic() + 300
                while not r.ready():
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"workload {r.id} not done after 300 s")
                    time.sleep(0.002)
                r.get(timeout=1)
            except Exception as error:  # noqa: BLE001 - reported after the run
                errors.append(error)
            completed.append(r)

    started = time.perf_counter()
    poller = threading.Thread(target=poll)
    poller.start()
    threads = [threading.Thread(target=submit, args=(workloads // clients,)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    submitted = time.perf_counter() - started
    handles.put(None)
    poller.join()
    total = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} workloads failed, first: {errors[0]!r}")
    print(
        f"sustained ({len(completed)} workloads, {clients} submitting clients): submitted in "
        f"{submitted:.2f} s ({len(completed) / submitted:.0f}/s), all completed in {total:.2f} s: "
        f"{len(completed) / total:.0f} workloads/s"
    )


if __name__ == "__main__":
    sample = json.loads(Path(sys.argv[1]).read_text())
    bench(
        sample,
        int(sys.argv[2]) if len(sys.argv) > 2 else 2000,
        int(sys.argv[3]) if len(sys.argv) > 3 else 8,
    )
