"""Peak memory of `soma tfserving` under many large gRPC Predicts at once.

Each request carries a tensor of `--mib` MiB of zeros (gzip-compressed by the client unless
`--plain`: then a few hundred KiB on the wire). `--fails-at model` names a model that does not
exist, so the server inflates and decodes the message and answers NOT_FOUND; `--fails-at shape`
sends the served model's input `x` with one dimension, so the server also decodes the tensor
and TensorFlow's shape check answers INVALID_ARGUMENT. Either way what is measured is what
requests cost to receive, not the prediction. `--clients` threads send at once, `--rounds`
times; the server's peak resident memory (VmHWM) is printed with the answers' codes.

    python scripts/bench_request_memory.py --soma target/release/soma --model iris=fixtures/models/iris
"""
import argparse
import collections
import os
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--soma", required=True)
    parser.add_argument("--model", required=True, help="NAME=BASE_PATH of a model to serve")
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--extra", default="", help="more soma tfserving flags")
    parser.add_argument("--plain", action="store_true", help="send the requests uncompressed")
    parser.add_argument("--fails-at", choices=["model", "shape"], default="model")
    args = parser.parse_args()

    name, base = args.model.split("=", 1)
    port = free_port()
    server = subprocess.Popen(
        [args.soma, "tfserving", f"--port={port}", f"--model_name={name}",
         f"--model_base_path={base}", *args.extra.split()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
        grpc.channel_ready_future(channel).result(timeout=60)
        time.sleep(1)
        idle = peak_rss_mib(server.pid)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "no-such-model" if args.fails_at == "model" else name
        floats = args.mib * (1 << 20) // 4
        request.inputs["x"].dtype = 1  # DT_FLOAT
        request.inputs["x"].tensor_shape.dim.add().size = floats
        request.inputs["x"].tensor_content = np.zeros(floats, np.float32).tobytes()
        codes = collections.Counter()
        lock = threading.Lock()

        def client():
            # A channel each: gRPC sends one channel's messages over one connection.
            own = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
                ("grpc.max_send_message_length", -1)])
            stub = prediction_service_pb2_grpc.PredictionServiceStub(own)
            for _ in range(args.rounds):
                try:
                    compression = grpc.Compression.NoCompression if args.plain else grpc.Compression.Gzip
                    stub.Predict(request, timeout=300, compression=compression)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                with lock:
                    codes[code] += 1

        started = time.time()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        how = "plain" if args.plain else "gzip"
        print(f"{args.soma}: {args.clients} clients x {args.rounds} of {args.mib} MiB ({how}, "
              f"fails at {args.fails_at}): "
              f"peak RSS {peak_rss_mib(server.pid):.0f} MiB (idle {idle:.0f}), "
              f"{time.time() - started:.1f} s, answers {dict(codes)}", flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
