"""Black-box test of soma's gRPC front end with TF Serving's official Python client.

Run by crates/grpc/tests/tfs_client.rs with the project's venv:

  tfs_client.py make-classifier DIR   writes a TF1-style SavedModel with classify, regress
                                      and predict signatures over tf.Example input to DIR/1,
                                      and DIR.expected.json with TensorFlow's own outputs
  tfs_client.py run PLAN.json         runs every check against the servers in the plan

Every comparison is against TensorFlow's outputs (the fixtures' expected.json, or the
classifier's expected file), never against values written here. Exits non-zero with the
list of failures; the last line of stdout is a JSON summary.
"""

import base64
import json
import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.example import example_pb2, feature_pb2  # noqa: E402
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_management_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

SIGNATURE_DEF_MAP_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
TIMEOUT = 60

# ---------------------------------------------------------------- classifier fixture

CLASS_NAMES = [b"setosa", b"versicolor", b"virginica"]
CLASSIFIER_EXAMPLES = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def float_example(values, name="x"):
    feature = feature_pb2.Feature(float_list=feature_pb2.FloatList(value=values))
    return example_pb2.Example(features=feature_pb2.Features(feature={name: feature}))


def make_classifier(folder):
    """A tf.Example model in the Estimator export style TF Serving's classify/regress need."""
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        serialized = tf1.placeholder(tf.string, [None], name="tf_example")
        spec = {"x": tf1.io.FixedLenFeature([4], tf.float32, default_value=[0.0] * 4)}
        x = tf1.io.parse_example(serialized, spec)["x"]
        weights = tf1.Variable(
            np.random.default_rng(7).normal(size=(4, 3)).astype(np.float32), name="w"
        )
        scores = tf.nn.softmax(tf.matmul(x, weights), name="scores")
        classes = tf.tile(tf.constant([CLASS_NAMES]), [tf.shape(x)[0], 1], name="classes")
        total = tf.reduce_sum(x * tf.constant([0.5, -1.0, 2.0, 0.25]), axis=1, name="total")
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            classify = tf1.saved_model.classification_signature_def(serialized, classes, scores)
            regress = tf1.saved_model.regression_signature_def(serialized, total)
            builder = tf1.saved_model.Builder(os.path.join(folder, "1"))
            builder.add_meta_graph_and_variables(
                session,
                ["serve"],
                signature_def_map={
                    "serving_default": classify,
                    "classify_x": classify,
                    "regress_x": regress,
                },
            )
            builder.save()
            feed = {
                serialized: [float_example(v).SerializeToString() for v in CLASSIFIER_EXAMPLES]
            }
            got_classes, got_scores, got_total = session.run([classes, scores, total], feed)
    expected = {
        "examples": CLASSIFIER_EXAMPLES,
        "classes": [[c.decode() for c in row] for row in got_classes],
        "scores": got_scores.tolist(),
        "regress": got_total.tolist(),
    }
    with open(folder.rstrip("/") + ".expected.json", "w") as f:
        json.dump(expected, f)


# ---------------------------------------------------------------- helpers

NP_DTYPES = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_HALF: np.float16,
    types_pb2.DT_BFLOAT16: tf.bfloat16.as_numpy_dtype,
    types_pb2.DT_INT8: np.int8,
    types_pb2.DT_INT16: np.int16,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_UINT16: np.uint16,
    types_pb2.DT_UINT32: np.uint32,
    types_pb2.DT_UINT64: np.uint64,
    types_pb2.DT_BOOL: np.bool_,
}

NAME_TO_DTYPE = {
    "float32": types_pb2.DT_FLOAT,
    "float64": types_pb2.DT_DOUBLE,
    "float16": types_pb2.DT_HALF,
    "bfloat16": types_pb2.DT_BFLOAT16,
    "int8": types_pb2.DT_INT8,
    "int16": types_pb2.DT_INT16,
    "int32": types_pb2.DT_INT32,
    "int64": types_pb2.DT_INT64,
    "uint8": types_pb2.DT_UINT8,
    "uint16": types_pb2.DT_UINT16,
    "uint32": types_pb2.DT_UINT32,
    "uint64": types_pb2.DT_UINT64,
    "bool": types_pb2.DT_BOOL,
    "string": types_pb2.DT_STRING,
}


def to_bytes(value):
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    return value.encode("utf-8")


def json_float(value):
    if isinstance(value, str):
        return {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}[value]
    return value


def as_array(values, dtype):
    """The expected.json values of one tensor as a NumPy array of the signature dtype."""
    if dtype == types_pb2.DT_STRING:
        flat = np.asarray(values, dtype=object).reshape(-1)
        shape = np.shape(np.asarray(values, dtype=object)) if flat.size else (0,)
        return np.asarray([to_bytes(v) for v in flat], dtype=object).reshape(shape)
    floats = dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16)
    if floats:
        values = np.vectorize(json_float, otypes=[np.float64])(np.asarray(values, dtype=object))
    return np.asarray(values, dtype=NP_DTYPES[dtype])


def shape_proto(shape):
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape]
    )


def content_proto(array, dtype):
    """tensor_content: raw little-endian bytes (strings have no such form and use string_val)."""
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape_proto(array.shape))
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(array.reshape(-1).tolist())
    else:
        proto.tensor_content = array.astype(array.dtype.newbyteorder("<")).tobytes()
    return proto


def typed_proto(array, dtype):
    """The typed value field TensorFlow uses for the dtype."""
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape_proto(array.shape))
    flat = array.reshape(-1)
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(flat.tolist())
    elif dtype in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
        proto.half_val.extend(flat.view(np.uint16).astype(np.int32).tolist())
    elif dtype == types_pb2.DT_FLOAT:
        proto.float_val.extend(flat.tolist())
    elif dtype == types_pb2.DT_DOUBLE:
        proto.double_val.extend(flat.tolist())
    elif dtype == types_pb2.DT_INT64:
        proto.int64_val.extend(flat.tolist())
    elif dtype == types_pb2.DT_UINT32:
        proto.uint32_val.extend(flat.tolist())
    elif dtype == types_pb2.DT_UINT64:
        proto.uint64_val.extend(flat.tolist())
    elif dtype == types_pb2.DT_BOOL:
        proto.bool_val.extend(flat.tolist())
    else:
        proto.int_val.extend(flat.astype(np.int64).tolist())
    return proto


def arrays_equal(actual, expected):
    if actual.shape != expected.shape:
        return False
    if expected.dtype == object:
        return actual.reshape(-1).tolist() == expected.reshape(-1).tolist()
    if expected.dtype.kind == "f" or str(expected.dtype) == "bfloat16":
        a = actual.astype(np.float64)
        e = expected.astype(np.float64)
        # Bitwise at the dtype's precision (NaN equal to NaN).
        return bool(np.array_equal(a, e, equal_nan=True)) and bool(
            np.array_equal(np.signbit(a), np.signbit(e))
        )
    return bool(np.array_equal(actual, expected))


class Checker:
    def __init__(self):
        self.failures = []
        self.counts = {}

    def count(self, what):
        self.counts[what] = self.counts.get(what, 0) + 1

    def fail(self, context, message):
        self.failures.append(f"{context}: {message}")

    def expect_error(self, context, call, code, message_part):
        try:
            call()
        except grpc.RpcError as e:
            if e.code() != code:
                self.fail(context, f"expected {code}, got {e.code()}: {e.details()}")
            elif message_part not in (e.details() or ""):
                self.fail(context, f"expected message containing {message_part!r}, got {e.details()!r}")
            else:
                self.count("error cases")
            return
        self.fail(context, f"expected {code}, but the call succeeded")


def spec(name, version=None, signature=None, label=None):
    from tensorflow_serving.apis import model_pb2

    s = model_pb2.ModelSpec(name=name)
    if version is not None:
        s.version.value = version
    if label is not None:
        s.version_label = label
    if signature:
        s.signature_name = signature
    return s


def metadata(stub, name, version):
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=spec(name, version), metadata_field=["signature_def"]
    )
    return stub.GetModelMetadata(request, timeout=TIMEOUT)


# ---------------------------------------------------------------- checks


def check_model(check, stub, model):
    """Metadata and every expected case of one fixture model, in three tensor forms."""
    name = model["name"]
    with open(model["expected"]) as f:
        expected = json.load(f)
    for version in model["versions"]:
        context = f"{name} v{version}"
        response = metadata(stub, name, version)
        any_ = response.metadata["signature_def"]
        if any_.type_url != SIGNATURE_DEF_MAP_URL:
            check.fail(context, f"metadata type_url {any_.type_url}")
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        if not any_.Unpack(sigmap):
            check.fail(context, "metadata does not unpack as SignatureDefMap")
        if response.model_spec.name != name or response.model_spec.version.value != version:
            check.fail(context, f"metadata model_spec {response.model_spec}")
        check_signatures(check, context, sigmap, model.get("signatures") or {})
        check_stored_signatures(check, context, sigmap, model, version)
        check.count("metadata calls")
        cases = expected.get(str(model.get("expected_version", version)), {})
        for signature, case_list in cases.items():
            sig = sigmap.signature_def[signature]
            for index, case in enumerate(case_list):
                for form in ("tensor_content", "typed", "make_tensor_proto"):
                    run_case(check, stub, name, version, signature, sig, case, form, f"{context} {signature}#{index} {form}")


def check_signatures(check, context, sigmap, manifest):
    """The SignatureDefMap against MANIFEST.json (written from TensorFlow's own loader)."""
    for key, want in manifest.items():
        if key not in sigmap.signature_def:
            check.fail(context, f"signature {key} missing from metadata")
            continue
        got = sigmap.signature_def[key]
        if got.method_name != want["method"]:
            check.fail(context, f"{key} method {got.method_name} != {want['method']}")
        for side in ("inputs", "outputs"):
            got_side = getattr(got, side)
            if set(got_side) != set(want[side]):
                check.fail(context, f"{key} {side} {sorted(got_side)} != {sorted(want[side])}")
                continue
            for alias, info in want[side].items():
                g = got_side[alias]
                dims = [d.size for d in g.tensor_shape.dim]
                if (
                    g.dtype != NAME_TO_DTYPE[info["dtype"]]
                    or dims != info["shape"]
                    or g.name != info["tensor"]
                ):
                    check.fail(context, f"{key} {side} {alias}: {g} != {info}")


def check_stored_signatures(check, context, sigmap, model, version):
    """The SignatureDefMap is the served MetaGraph's, every signature as stored (TF Serving
    copies the whole map: `__saved_model_init_op` and signatures soma cannot run too)."""
    model_dir = model["dir"]
    path = os.path.join(model_dir, str(version), "saved_model.pb")
    if not os.path.exists(path):
        path = os.path.join(model_dir, "saved_model.pb")
    stored = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        stored.ParseFromString(f.read())
    meta = next(m for m in stored.meta_graphs if "serve" in m.meta_info_def.tags)
    if set(sigmap.signature_def) != set(meta.signature_def):
        check.fail(context, f"signatures {sorted(sigmap.signature_def)} != stored {sorted(meta.signature_def)}")
        return
    for key, want in meta.signature_def.items():
        if sigmap.signature_def[key] != want:
            check.fail(context, f"signature {key}: {sigmap.signature_def[key]} != stored {want}")


def run_case(check, stub, name, version, signature, sig, case, form, context):
    request = predict_pb2.PredictRequest(model_spec=spec(name, version, signature))
    for alias, values in case["inputs"].items():
        dtype = sig.inputs[alias].dtype
        array = as_array(values, dtype)
        if form == "tensor_content":
            proto = content_proto(array, dtype)
        elif form == "typed":
            proto = typed_proto(array, dtype)
        else:
            proto = tf.make_tensor_proto(array, dtype=tf.dtypes.as_dtype(dtype))
        request.inputs[alias].CopyFrom(proto)
    try:
        response = stub.Predict(request, timeout=TIMEOUT)
    except grpc.RpcError as e:
        check.fail(context, f"Predict failed: {e.code()} {e.details()}")
        return
    if response.model_spec.name != name or response.model_spec.version.value != version:
        check.fail(context, f"model_spec {response.model_spec}")
    if response.model_spec.signature_name != signature:
        check.fail(context, f"signature_name {response.model_spec.signature_name!r}")
    if set(response.outputs) != set(case["outputs"]):
        check.fail(context, f"outputs {sorted(response.outputs)} != {sorted(case['outputs'])}")
        return
    for alias, want in case["outputs"].items():
        proto = response.outputs[alias]
        dtype = NAME_TO_DTYPE[want["dtype"]]
        if proto.dtype != dtype:
            check.fail(context, f"output {alias} dtype {proto.dtype} != {dtype}")
            continue
        if proto.tensor_content:
            check.fail(context, f"output {alias} uses tensor_content; TF Serving uses typed fields")
        actual = tf.make_ndarray(proto)
        expected = as_array(want["values"], dtype).reshape(want["shape"])
        if not arrays_equal(actual, expected):
            check.fail(context, f"output {alias}: got {actual!r}, expected {expected!r}")
    check.count("predict cases")


def check_broadcast_and_filter(check, stub):
    """One typed value fills the shape; output_filter picks outputs. Both compared with a
    full request answered by the same model."""
    full = predict_pb2.PredictRequest(model_spec=spec("iris", 1))
    full.inputs["x"].CopyFrom(tf.make_tensor_proto(np.full((2, 4), 0.5, np.float32)))
    one = predict_pb2.PredictRequest(model_spec=spec("iris", 1))
    one.inputs["x"].CopyFrom(
        tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape_proto((2, 4)), float_val=[0.5])
    )
    a = tf.make_ndarray(stub.Predict(full, timeout=TIMEOUT).outputs["output_0"])
    b = tf.make_ndarray(stub.Predict(one, timeout=TIMEOUT).outputs["output_0"])
    if a.shape != (2, 3) or not np.array_equal(a, b):
        check.fail("broadcast", f"{a!r} != {b!r}")
    check.count("broadcast")

    request = predict_pb2.PredictRequest(model_spec=spec("multi_io"), output_filter=["name_length"])
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(np.ones((1, 3), np.float32)))
    request.inputs["ids"].CopyFrom(tf.make_tensor_proto(np.array([1], np.int64)))
    request.inputs["names"].CopyFrom(tf.make_tensor_proto(np.array([b"abc"], object)))
    response = stub.Predict(request, timeout=TIMEOUT)
    if list(response.outputs) != ["name_length"] or list(response.outputs["name_length"].int_val) != [3]:
        check.fail("output_filter", f"{response.outputs}")
    if response.model_spec.signature_name != "serving_default" or response.model_spec.version.value != 1:
        check.fail("default signature", f"{response.model_spec}")
    check.count("output_filter")


def check_errors(check, stub, models_stub, max_message_bytes):
    iris_x = tf.make_tensor_proto(np.zeros((1, 4), np.float32))

    def predict(model_spec, inputs=None, output_filter=()):
        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        if model_spec is not None:
            request.model_spec.CopyFrom(model_spec)
        for k, v in (inputs if inputs is not None else {"x": iris_x}).items():
            request.inputs[k].CopyFrom(v)
        return lambda: stub.Predict(request, timeout=TIMEOUT)

    C = grpc.StatusCode
    e = check.expect_error
    e("unknown model", predict(spec("nope")), C.NOT_FOUND, "Servable not found for request: Latest(nope)")
    e("unknown version", predict(spec("iris", 3)), C.NOT_FOUND, "Servable not found for request: Specific(iris, 3)")
    e("unknown label", predict(spec("iris", label="stable")), C.INVALID_ARGUMENT, "Unrecognized servable version label: stable")
    e("unknown signature", predict(spec("iris", 1, "nope")), C.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')
    e("missing model_spec", predict(None), C.INVALID_ARGUMENT, "Missing ModelSpec")
    e("bad dtype", predict(spec("iris"), {"x": tf.make_tensor_proto(np.zeros((1, 4), np.int64))}), C.INVALID_ARGUMENT, "expected dtype float32 but got int64")
    e("bad shape", predict(spec("iris"), {"x": tf.make_tensor_proto(np.zeros((2, 3), np.float32))}), C.INVALID_ARGUMENT, "expected shape (-1, 4) but got (2, 3)")
    bad_count = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape_proto((2, 4)), float_val=[1, 2, 3])
    e("bad value count", predict(spec("iris"), {"x": bad_count}), C.INVALID_ARGUMENT, "tensor parsing error: x: float_val has 3 values")
    short = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape_proto((2, 4)), tensor_content=b"\0" * 12)
    e("bad tensor_content", predict(spec("iris"), {"x": short}), C.INVALID_ARGUMENT, "tensor_content has 12 bytes")
    # Shapes TensorFlow aborts the process on: refused, and the server answers the checks below.
    past_int64 = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape_proto((1 << 62, 4)))
    e("shape past int64", predict(spec("iris"), {"x": past_int64}), C.INVALID_ARGUMENT, "more elements than a tensor can hold")
    rank_255 = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape_proto((1,) * 255), float_val=[1])
    e("rank 255", predict(spec("iris"), {"x": rank_255}), C.INVALID_ARGUMENT, "more dimensions than TensorFlow's limit of 254")
    # One value may fill 64 MiB (16 bytes a row here), not more.
    repeated = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape_proto(((64 << 20) // 16 + 1, 4)), float_val=[1])
    e("one value filling 64 MiB + 16 bytes", predict(spec("iris"), {"x": repeated}), C.INVALID_ARGUMENT, "a request's repeated values may fill at most 67108864 bytes in all")
    e("missing input", predict(spec("iris"), {}), C.INVALID_ARGUMENT, "input size does not match signature: 0!=1")
    e("extra input", predict(spec("iris"), {"x": iris_x, "y": iris_x}), C.INVALID_ARGUMENT, "Sent extra: {y}")
    # 10,000 extra inputs: the names listed are cut short, so the message fits gRPC's trailers.
    many = {"x": iris_x, **{f"extra{i:05}": iris_x for i in range(10000)}}
    e("10,000 extra inputs", predict(spec("iris"), many), C.INVALID_ARGUMENT, "Sent extra: {extra00000,extra00001,")
    e("10,000 extra inputs, cut short", predict(spec("iris"), many), C.INVALID_ARGUMENT, ",... 9907 more}. Missing but required: {}.")
    e("wrong input", predict(spec("iris"), {"y": iris_x}), C.INVALID_ARGUMENT, "input tensor alias not found in signature: y")
    e("bad output_filter", predict(spec("iris"), output_filter=["nope"]), C.INVALID_ARGUMENT, "output tensor alias not found in signature: nope")
    e("duplicate output_filter", predict(spec("iris"), output_filter=["output_0", "output_0"]), C.INVALID_ARGUMENT, "duplicate output tensor alias: output_0")
    big = tf.make_tensor_proto(np.zeros((max_message_bytes // 16 + 1, 4), np.float32))
    e("oversized message", predict(spec("iris"), {"x": big}), C.RESOURCE_EXHAUSTED, "message length too large")

    def meta(fields, model="iris"):
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec(model), metadata_field=fields)
        return lambda: stub.GetModelMetadata(request, timeout=TIMEOUT)

    e("metadata without field", meta([]), C.INVALID_ARGUMENT, "must specify at least one metadata_field")
    e("metadata bad field", meta(["foo"]), C.INVALID_ARGUMENT, "Metadata field foo is not supported")
    e("metadata unknown model", meta(["signature_def"], "nope"), C.NOT_FOUND, "Servable not found")

    def status(model_spec):
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_spec)
        return lambda: models_stub.GetModelStatus(request, timeout=TIMEOUT)

    e("status unknown model", status(spec("nope")), C.NOT_FOUND, "Could not find any versions of model nope")
    e("status unknown version", status(spec("iris", 3)), C.NOT_FOUND, "")
    e("status without name", status(spec("")), C.INVALID_ARGUMENT, "Missing model name in request.")

    def classify(model_spec):
        request = classification_pb2.ClassificationRequest(model_spec=model_spec)
        request.input.example_list.examples.add().CopyFrom(float_example([1, 2, 3, 4]))
        return lambda: stub.Classify(request, timeout=TIMEOUT)

    e("classify a predict signature", classify(spec("iris")), C.INVALID_ARGUMENT, "No classification inputs found in SignatureDef")
    empty = classification_pb2.ClassificationRequest(model_spec=spec("iris"))
    e("classify without examples", lambda: stub.Classify(empty, timeout=TIMEOUT), C.INVALID_ARGUMENT, "Input is empty.")

    # The server is still up and answering after every error.
    stub.Predict(predict_pb2.PredictRequest(model_spec=spec("iris"), inputs={"x": iris_x}), timeout=TIMEOUT)


def check_status(check, models_stub, model):
    request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec(model["name"]))
    response = models_stub.GetModelStatus(request, timeout=TIMEOUT)
    versions = [s.version for s in response.model_version_status]
    # Newest first, as TF Serving lists them.
    expected = sorted(model["versions"], reverse=True)
    if versions != expected:
        check.fail(f"status {model['name']}", f"versions {versions} != {expected}")
    for s in response.model_version_status:
        if s.state != get_model_status_pb2.ModelVersionStatus.AVAILABLE or s.status.error_code != 0:
            check.fail(f"status {model['name']}", f"{s}")
    check.count("status calls")


def check_classifier(check, stub, classifier):
    with open(classifier["expected"]) as f:
        want = json.load(f)
    name = classifier["name"]
    examples = [float_example(v) for v in want["examples"]]

    def input_list():
        return input_pb2.Input(example_list=input_pb2.ExampleList(examples=examples))

    def compare_classes(context, result):
        got = [[(c.label, c.score) for c in cs.classes] for cs in result.classifications]
        expected = [
            [(label, float(np.float32(score))) for label, score in zip(labels, scores)]
            for labels, scores in zip(want["classes"], want["scores"])
        ]
        if got != expected:
            check.fail(context, f"{got} != {expected}")

    for signature in ("", "classify_x"):
        request = classification_pb2.ClassificationRequest(model_spec=spec(name, signature=signature), input=input_list())
        response = stub.Classify(request, timeout=TIMEOUT)
        compare_classes(f"classify {signature!r}", response.result)
        check.count("classify")

    # The same examples with their features moved into the context: merged per example.
    context_input = input_pb2.Input(
        example_list_with_context=input_pb2.ExampleListWithContext(
            examples=[example_pb2.Example()], context=examples[1]
        )
    )
    response = stub.Classify(classification_pb2.ClassificationRequest(model_spec=spec(name), input=context_input), timeout=TIMEOUT)
    got = [c.score for c in response.result.classifications[0].classes]
    if got != [float(np.float32(s)) for s in want["scores"][1]]:
        check.fail("classify with context", f"{got}")

    request = regression_pb2.RegressionRequest(model_spec=spec(name, signature="regress_x"), input=input_list())
    response = stub.Regress(request, timeout=TIMEOUT)
    got = [r.value for r in response.result.regressions]
    if got != [float(np.float32(v)) for v in want["regress"]]:
        check.fail("regress", f"{got} != {want['regress']}")
    if response.model_spec.signature_name != "regress_x" or response.model_spec.version.value != 1:
        check.fail("regress model_spec", f"{response.model_spec}")
    check.count("regress")

    request = inference_pb2.MultiInferenceRequest(
        tasks=[
            inference_pb2.InferenceTask(model_spec=spec(name, signature="classify_x"), method_name="tensorflow/serving/classify"),
            inference_pb2.InferenceTask(model_spec=spec(name, signature="regress_x"), method_name="tensorflow/serving/regress"),
        ],
        input=input_list(),
    )
    response = stub.MultiInference(request, timeout=TIMEOUT)
    compare_classes("multi_inference classify", response.results[0].classification_result)
    got = [r.value for r in response.results[1].regression_result.regressions]
    if got != [float(np.float32(v)) for v in want["regress"]]:
        check.fail("multi_inference regress", f"{got}")
    check.count("multi_inference")

    C = grpc.StatusCode
    bad = inference_pb2.MultiInferenceRequest(
        tasks=[
            inference_pb2.InferenceTask(model_spec=spec(name, signature="classify_x"), method_name="tensorflow/serving/classify"),
            inference_pb2.InferenceTask(model_spec=spec("iris"), method_name="tensorflow/serving/regress"),
        ],
        input=input_list(),
    )
    check.expect_error("multi_inference two models", lambda: stub.MultiInference(bad, timeout=TIMEOUT), C.INVALID_ARGUMENT, "must access the same model name")
    unknown = classification_pb2.ClassificationRequest(model_spec=spec(name, signature="nope"), input=input_list())
    check.expect_error("classify unknown signature", lambda: stub.Classify(unknown, timeout=TIMEOUT), C.INVALID_ARGUMENT, "No signature was found with the name: nope")
    wrong = regression_pb2.RegressionRequest(model_spec=spec(name, signature="classify_x"), input=input_list())
    check.expect_error("regress a classify signature", lambda: stub.Regress(wrong, timeout=TIMEOUT), C.INVALID_ARGUMENT, "Expected one output Tensor.")


def reload_request(configs):
    request = model_management_pb2.ReloadConfigRequest()
    for c in configs:
        m = request.config.model_config_list.config.add(name=c["name"], base_path=c["base_path"], model_platform="tensorflow")
        policy = c.get("policy")
        if policy == "all":
            m.model_version_policy.all.SetInParent()
        elif isinstance(policy, int):
            m.model_version_policy.latest.num_versions = policy
        elif isinstance(policy, list):
            m.model_version_policy.specific.versions.extend(policy)
        for label, version in c.get("labels", {}).items():
            m.version_labels[label] = version
    return request


def check_health(check, channel):
    """gRPC's official health client (grpcio-health-checking): every model is loaded, so the
    server and both TF Serving services are SERVING; an unknown service is NOT_FOUND."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
        got = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        if got != serving:
            check.fail("health", f"Check({service!r}) = {got}")
    try:
        health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        check.fail("health", "Check('nope') succeeded")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            check.fail("health", f"Check('nope'): {e.code()}")
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    first = next(watch).status
    watch.cancel()
    if first != serving:
        check.fail("health", f"Watch('') first = {first}")
    check.count("health")


def check_reload(check, plan):
    C = grpc.StatusCode
    static = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{plan['port']}"))
    request = reload_request([{"name": "iris", "base_path": "/models/iris"}])
    check.expect_error("reload a static hub", lambda: static.HandleReloadConfigRequest(request, timeout=TIMEOUT), C.UNIMPLEMENTED, "reloading the model config is not supported")

    channel = grpc.insecure_channel(f"127.0.0.1:{plan['reload_port']}")
    models_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = models_stub.HandleReloadConfigRequest(reload_request(plan["reload_configs"]), timeout=TIMEOUT)
    if response.status.error_code != 0 or response.status.error_message:
        check.fail("reload", f"{response.status}")
    check.count("reload")
    failing = reload_request([{"name": "broken", "base_path": "/nowhere"}])
    check.expect_error("reload that fails", lambda: models_stub.HandleReloadConfigRequest(failing, timeout=TIMEOUT), C.NOT_FOUND, "/nowhere")
    not_a_list = model_management_pb2.ReloadConfigRequest()
    not_a_list.config.custom_model_config.type_url = "x"
    check.expect_error("reload custom config", lambda: models_stub.HandleReloadConfigRequest(not_a_list, timeout=TIMEOUT), C.INVALID_ARGUMENT, "Only ModelConfigList is currently supported")

    # States, errors and labels reported by a hub that has them.
    response = models_stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec=spec("iris")), timeout=TIMEOUT)
    got = [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state), s.status.error_code, s.status.error_message) for s in response.model_version_status]
    want = [tuple(x) for x in plan["reload_status"]]
    if got != want:
        check.fail("status with states", f"{got} != {want}")
    by_label = models_stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec=spec("iris", label="stable")), timeout=TIMEOUT)
    if [s.version for s in by_label.model_version_status] != [plan["labels"]["stable"]]:
        check.fail("status by label", f"{by_label}")
    request = predict_pb2.PredictRequest(model_spec=spec("iris", label="canary"))
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 4), np.float32)))
    response = predict_stub.Predict(request, timeout=TIMEOUT)
    if response.model_spec.version.value != plan["labels"]["canary"]:
        check.fail("predict by label", f"{response.model_spec}")
    check.count("labels")


def check_descriptors(check, path):
    """soma's .proto files against the official client's descriptors: every message, field,
    enum value and RPC soma declares must exist there with the same number and type."""
    from google.protobuf import descriptor_pb2, descriptor_pool
    # Registers PredictionLog (warm-up records) and LogMetadata in the default pool.
    from tensorflow_serving.apis import prediction_log_pb2  # noqa: F401
    # TensorFlow's session ConfigProto (--tensorflow_session_config_file), from TensorFlow.
    from tensorflow.core.protobuf import config_pb2  # noqa: F401
    from tensorflow_serving.config import platform_config_pb2  # noqa: F401
    from grpc_health.v1 import health_pb2

    pool = descriptor_pool.Default()
    with open(path, "rb") as f:
        ours = descriptor_pb2.FileDescriptorSet.FromString(f.read())

    def compare_message(message, full_name):
        official = descriptor_pb2.DescriptorProto()
        pool.FindMessageTypeByName(full_name).CopyToProto(official)
        theirs = {f.number: f for f in official.field}
        for field in message.field:
            other = theirs.get(field.number)
            ours_oneof = message.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else None
            other_oneof = (
                official.oneof_decl[other.oneof_index].name
                if other is not None and other.HasField("oneof_index")
                else None
            )
            same = other is not None and (field.name, field.type, field.label, field.type_name, ours_oneof) == (
                other.name, other.type, other.label, other.type_name, other_oneof
            )
            if not same:
                check.fail("descriptors", f"{full_name}.{field.name} = {field.number}: {field} vs {other}")
            check.count("fields")
        for nested in message.nested_type:
            if not nested.options.map_entry:
                compare_message(nested, f"{full_name}.{nested.name}")
        for enum in message.enum_type:
            compare_enum(enum, f"{full_name}.{enum.name}")

    def compare_enum(enum, full_name):
        official = {v.name: v.number for v in pool.FindEnumTypeByName(full_name).values}
        for value in enum.value:
            if official.get(value.name) != value.number:
                check.fail("descriptors", f"{full_name}.{value.name} = {value.number}")
            check.count("enum values")

    for file in ours.file:
        if file.package.startswith("google."):
            continue
        # Not in tensorflow-serving-api; soma reads these only as text, by field name.
        if file.name.startswith("tensorflow_serving/servables/"):
            continue
        for message in file.message_type:
            compare_message(message, f"{file.package}.{message.name}")
        for enum in file.enum_type:
            compare_enum(enum, f"{file.package}.{enum.name}")
        for service in file.service:
            module = {
                "PredictionService": prediction_service_pb2,
                "ModelService": model_service_pb2,
                "Health": health_pb2,
            }
            official = module[service.name].DESCRIPTOR.services_by_name[service.name]
            for method in service.method:
                other = official.methods_by_name.get(method.name)
                if other is None or (
                    "." + other.input_type.full_name,
                    "." + other.output_type.full_name,
                ) != (method.input_type, method.output_type):
                    check.fail("descriptors", f"{service.name}.{method.name}")
                check.count("rpcs")


def run(plan_path):
    with open(plan_path) as f:
        plan = json.load(f)
    check = Checker()
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    channel = grpc.insecure_channel(f"127.0.0.1:{plan['port']}", options=options)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    steps = [("descriptors", lambda: check_descriptors(check, plan["descriptors"]))]
    steps += [(f"model {m['name']}", lambda m=m: check_model(check, stub, m)) for m in plan["models"]]
    steps += [(f"status {m['name']}", lambda m=m: check_status(check, models_stub, m)) for m in plan["models"]]
    steps += [
        ("broadcast and filter", lambda: check_broadcast_and_filter(check, stub)),
        ("errors", lambda: check_errors(check, stub, models_stub, plan["max_message_bytes"])),
        ("classifier", lambda: check_classifier(check, stub, plan["classifier"])),
        ("reload", lambda: check_reload(check, plan)),
        ("health", lambda: check_health(check, channel)),
    ]
    for name, step in steps:
        try:
            step()
        except Exception:  # a crash in one step is reported, the others still run
            check.fail(name, traceback.format_exc())
    for failure in check.failures:
        print("FAIL", failure)
    print(json.dumps({"failures": len(check.failures), "counts": check.counts}))
    return 1 if check.failures else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["make-classifier"]:
        make_classifier(sys.argv[2])
    elif sys.argv[1:2] == ["run"]:
        sys.exit(run(sys.argv[2]))
    else:
        sys.exit(__doc__)
