"""The server a Python user would write instead of soma: FastAPI + uvicorn + TensorFlow.

The peer of BENCHMARKS.md §4 and §5. Same contract as TF Serving's REST predict for
single-input models, so `soma-bench rest` drives it unchanged:

    POST /v1/models/<model>:predict  {"instances": [...]}  ->  {"predictions": [...]}

Each model is loaded with `tf.saved_model.load` and called through its `serving_default`
signature, as the TensorFlow guide does; every uvicorn worker process loads its own copy.

    .venv/bin/python scripts/bench_fastapi.py --port 8601 --workers 2 \\
        iris=fixtures/models/iris mlp1024=fixtures/models/mlp1024

A model path is a SavedModel folder or a base path with numbered versions (the highest is
served). `--endpoint async` declares the endpoint `async def` (runs on the event loop)
instead of `def` (FastAPI runs it in its thread pool).
"""

import argparse
import os
import sys
from pathlib import Path

MODELS_ENV = "BENCH_FASTAPI_MODELS"
ENDPOINT_ENV = "BENCH_FASTAPI_ENDPOINT"


def version_dir(path: Path) -> Path:
    if (path / "saved_model.pb").is_file():
        return path
    versions = [p for p in path.iterdir() if p.name.isdigit()]
    if not versions:
        sys.exit(f"{path}: no saved_model.pb and no version folder")
    return max(versions, key=lambda p: int(p.name))


def build_app():
    """The FastAPI app, for the models named in BENCH_FASTAPI_MODELS (name=path;...)."""
    import tensorflow as tf
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel

    models = {}
    for item in os.environ[MODELS_ENV].split(";"):
        name, path = item.split("=", 1)
        loaded = tf.saved_model.load(str(version_dir(Path(path))))
        signature = loaded.signatures["serving_default"]
        _, kwargs = signature.structured_input_signature
        ((input_name, spec),) = kwargs.items()
        # Keep `loaded` alive: the signature function uses its variables.
        models[name] = (loaded, signature, input_name, spec.dtype)

    app = FastAPI()

    class PredictRequest(BaseModel):
        instances: list

    def predict(model: str, request: PredictRequest) -> dict:
        if model not in models:
            raise HTTPException(404, f"Servable not found for request: Latest({model})")
        _, signature, input_name, dtype = models[model]
        outputs = signature(**{input_name: tf.constant(request.instances, dtype=dtype)})
        (output,) = outputs.values()
        return {"predictions": output.numpy().tolist()}

    if os.environ.get(ENDPOINT_ENV, "sync") == "async":

        @app.post("/v1/models/{model}:predict")
        async def predict_async(model: str, request: PredictRequest) -> dict:
            return predict(model, request)

    else:

        @app.post("/v1/models/{model}:predict")
        def predict_sync(model: str, request: PredictRequest) -> dict:
            return predict(model, request)

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8601)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--endpoint", choices=["sync", "async"], default="sync")
    parser.add_argument("models", nargs="+", metavar="NAME=PATH")
    args = parser.parse_args()
    os.environ[MODELS_ENV] = ";".join(args.models)
    os.environ[ENDPOINT_ENV] = args.endpoint

    import uvicorn

    uvicorn.run(
        "bench_fastapi:build_app",
        factory=True,
        app_dir=str(Path(__file__).resolve().parent),
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )
