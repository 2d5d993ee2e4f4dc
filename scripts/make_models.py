#!/usr/bin/env python3
"""Generate the TensorFlow SavedModel fixtures used by soma's tests.

Usage: make_models.py [OUTDIR]        (default: <repo>/fixtures/models)

Everything is built in a temporary sibling of OUTDIR and then renamed into
place (the old tree is renamed aside first and deleted last), so an
interrupted run never leaves a half-written tree.
Models are seeded per model so repeated runs produce the same weights.

Notes on how models are saved (TF 2.21 / Keras 3):
* Keras models are written with `model.export(dir)`; `tf.saved_model.save`
  on a Keras 3 model loads through the C API but fails on first run (that
  variant is kept on purpose under invalid/keras_saved_model_save).
* Custom input/output/signature names use a plain `tf.Module` whose
  signature functions return dicts, so output names are stable.

Each valid model <name> gets <name>.expected.json next to its folder (not inside it: a
model folder holds only versions, or Cortex's layout check would reject it):
  {"<version>": {"<signature>": [{"inputs": {name: nested list},
                                   "outputs": {name: {"dtype", "shape", "values"}}}]}}
Output values are flat (row-major). Floats are the exact value of the
tensor element as a double; ints are exact; strings are UTF-8 text, or
{"b64": "..."} when the bytes are not valid UTF-8 (inputs use the same form).

OUTDIR/MANIFEST.json lists every fixture: path, layout, versions, signatures
(input/output names, dtypes, shapes and graph tensor names, read from
saved_model.pb) and what a fixture is for.
"""

import base64
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402


def log(msg):
    print(f"  {msg}", flush=True)


def seed(n):
    keras.utils.set_random_seed(n)
    tf.random.set_seed(n)
    np.random.seed(n)


# --------------------------------------------------------------------------
# Keras models
# --------------------------------------------------------------------------

def iris_model(s):
    seed(s)
    return keras.Sequential(
        [
            keras.Input((4,), name="x"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def mlp1024_model(s):
    seed(s)
    return keras.Sequential(
        [
            keras.Input((1024,), name="x"),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(1024),
        ]
    )


def export_keras(model, path):
    model.export(path, verbose=False)


# --------------------------------------------------------------------------
# tf.Module models
# --------------------------------------------------------------------------

class MultiIO(tf.Module):
    def __init__(self):
        super().__init__()
        self.scale = tf.Variable([1.5, -2.0, 0.5], dtype=tf.float32, name="scale")

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 3], tf.float32, name="features"),
            tf.TensorSpec([None], tf.int64, name="ids"),
            tf.TensorSpec([None], tf.string, name="names"),
        ]
    )
    def serve(self, features, ids, names):
        return {
            "scaled": features * self.scale,
            "ids_plus_one": ids + 1,
            "greeting": tf.strings.join(["hello ", names]),
            "name_length": tf.strings.length(names),
        }


DTYPES = [
    "float16", "bfloat16", "float32", "float64",
    "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64",
    "bool", "string",
]


class AllDTypes(tf.Module):
    def __init__(self):
        super().__init__()
        self.unused = tf.Variable(0.0, name="unused")

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.as_dtype(d), name=f"in_{d}") for d in DTYPES]
    )
    def serve(self, in_float16, in_bfloat16, in_float32, in_float64,
              in_int8, in_int16, in_int32, in_int64,
              in_uint8, in_uint16, in_uint32, in_uint64,
              in_bool, in_string):
        args = dict(locals())
        del args["self"]
        out = {f"out_{d}": tf.identity(args[f"in_{d}"]) for d in DTYPES}
        out["raw_bytes"] = tf.fill(tf.shape(in_string), tf.constant(b"\xff\xfe"))
        return out


X2 = tf.TensorSpec([None, 2], tf.float32, name="x")


class XModule(tf.Module):
    """x float32 [None,2] -> {"y": ...} signatures."""

    def __init__(self):
        super().__init__()
        self.unused = tf.Variable(0.0, name="unused")

    @tf.function(input_signature=[X2])
    def double(self, x):
        return {"y": x * 2.0}

    @tf.function(input_signature=[X2])
    def triple(self, x):
        return {"y": x * 3.0}

    @tf.function(input_signature=[X2])
    def plus_one(self, x):
        return {"y": x + 1.0}

    @tf.function(input_signature=[X2])
    def minus_one(self, x):
        return {"y": x - 1.0}

    @tf.function(input_signature=[X2])
    def ident(self, x):
        return {"y": tf.identity(x)}


# --------------------------------------------------------------------------
# expected.json helpers
# --------------------------------------------------------------------------

def json_bytes(b):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(b).decode("ascii")}


def from_json_bytes(v):
    if isinstance(v, dict):
        return base64.b64decode(v["b64"])
    return v.encode("utf-8")


def map_nested(f, v):
    if isinstance(v, list):
        return [map_nested(f, x) for x in v]
    return f(v)


def to_tensor(value, dtype):
    dtype = tf.as_dtype(dtype)
    if dtype == tf.string:
        return tf.constant(np.array(map_nested(from_json_bytes, value), dtype=object), dtype=tf.string)
    if dtype == tf.bfloat16:
        return tf.cast(tf.constant(np.array(value, dtype=np.float64)), tf.bfloat16)
    return tf.constant(np.array(value, dtype=dtype.as_numpy_dtype), dtype=dtype)


def py_value(x, dtype):
    if dtype == tf.string:
        return json_bytes(bytes(x))
    if dtype == tf.bool:
        return bool(x)
    if dtype.is_floating:
        return float(x)
    if dtype.is_integer:
        return int(x)
    raise ValueError(f"unsupported output dtype {dtype.name}")


def run_case(fn, inputs):
    spec = fn.structured_input_signature[1]
    feed = {k: to_tensor(v, spec[k].dtype) for k, v in inputs.items()}
    result = fn(**feed)
    outputs = {}
    for name in sorted(result):
        t = result[name]
        flat = t.numpy().reshape(-1)
        outputs[name] = {
            "dtype": t.dtype.name,
            "shape": [int(d) for d in t.shape],
            "values": [py_value(x, t.dtype) for x in flat],
        }
    return {"inputs": inputs, "outputs": outputs}


def expected_for(version_dir, cases_by_sig, tags=None):
    """cases_by_sig: {signature: [inputs dict, ...]} or None for all signatures
    using the same cases given under key '*'. tags: the MetaGraph to load (None: the
    only one)."""
    loaded = tf.saved_model.load(version_dir, tags=tags)
    out = {}
    sigs = sorted(loaded.signatures.keys())
    for sig in sigs:
        cases = cases_by_sig.get(sig, cases_by_sig.get("*"))
        if cases is None:
            continue
        out[sig] = [run_case(loaded.signatures[sig], c) for c in cases]
    missing = set(cases_by_sig) - set(sigs) - {"*"}
    if missing:
        raise RuntimeError(f"{version_dir}: signatures {sorted(missing)} not found (have {sigs})")
    return out


def retag(version_dir, tags):
    """Replaces the tags of the SavedModel's only MetaGraph (what an export for another
    device, e.g. {serve, gpu}, looks like to a loader)."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(version_dir, "saved_model.pb")
    sm = saved_model_pb2.SavedModel()
    with open(pb, "rb") as f:
        sm.ParseFromString(f.read())
    assert len(sm.meta_graphs) == 1, pb
    del sm.meta_graphs[0].meta_info_def.tags[:]
    sm.meta_graphs[0].meta_info_def.tags.extend(tags)
    with open(pb, "wb") as f:
        f.write(sm.SerializeToString())


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False, allow_nan=False)
        f.write("\n")


# --------------------------------------------------------------------------
# MANIFEST.json helpers
# --------------------------------------------------------------------------

def signature_defs(version_dir):
    """Signatures as the C API sees them, read from saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    out = {}
    for mg in sm.meta_graphs:
        for key, sig in sorted(mg.signature_def.items()):
            if key.startswith("__"):
                continue

            def tensors(m):
                return {
                    name: {
                        "dtype": tf.as_dtype(t.dtype).name,
                        "shape": [d.size for d in t.tensor_shape.dim],
                        "tensor": t.name,
                    }
                    for name, t in sorted(m.items())
                }

            out[key] = {
                "method": sig.method_name,
                "inputs": tensors(sig.inputs),
                "outputs": tensors(sig.outputs),
            }
    return out


def rel_versions(tmp, model):
    root = os.path.join(tmp, model)
    return sorted((int(v) for v in os.listdir(root) if v.isdigit()))


# --------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------

IRIS_CASES = [
    {"x": [[5.1, 3.5, 1.4, 0.2]]},
    {"x": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]},
]

MULTI_IO_CASES = [
    {
        "features": [[1.0, 2.0, 3.0]],
        "ids": [9007199254740993],
        "names": ["héllo"],
    },
    {
        "features": [[0.5, -1.25, 4.0], [0.0, 0.0, 0.0], [-3.0, 1e-3, 123456.789]],
        "ids": [-9223372036854775808, 0, 9223372036854775806],
        "names": ["", "world", {"b64": base64.b64encode(b"\xff\x00ok").decode("ascii")}],
    },
]

ALL_DTYPES_CASES = [
    {
        "in_float16": [65504.0],
        "in_bfloat16": [3.3895313892515355e38],
        "in_float32": [3.4028234663852886e38],
        "in_float64": [1.7976931348623157e308],
        "in_int8": [-128],
        "in_int16": [-32768],
        "in_int32": [-2147483648],
        "in_int64": [9223372036854775807],
        "in_uint8": [255],
        "in_uint16": [65535],
        "in_uint32": [4294967295],
        "in_uint64": [18446744073709551615],
        "in_bool": [True],
        "in_string": ["héllo"],
    },
    {
        "in_float16": [-65504.0, 5.960464477539063e-08, 0.1],
        "in_bfloat16": [-1.0, 0.0078125, 1.1754943508222875e-38],
        "in_float32": [-1.401298464324817e-45, 0.1, -2.5],
        "in_float64": [5e-324, -0.1, -1.7976931348623157e308],
        "in_int8": [127, 0, -1],
        "in_int16": [32767, 0, -1],
        "in_int32": [2147483647, 0, -1],
        "in_int64": [-9223372036854775808, 0, -1],
        "in_uint8": [0, 1, 128],
        "in_uint16": [0, 1, 32768],
        "in_uint32": [0, 1, 2147483648],
        "in_uint64": [0, 9223372036854775808, 1],
        "in_bool": [False, True, False],
        "in_string": ["", {"b64": base64.b64encode(b"\x00\xff").decode("ascii")}, "日本語"],
    },
]

X2_CASES = [
    {"x": [[1.0, -2.0]]},
    {"x": [[0.0, 0.5], [-1.25, 3.0], [1e6, -1e-6]]},
]


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def default_outdir():
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "fixtures", "models")


def main(argv):
    if len(argv) > 2 or (len(argv) == 2 and argv[1] in ("-h", "--help")):
        print(f"usage: {argv[0]} [OUTDIR]   (default: {default_outdir()})", file=sys.stderr)
        return 2
    outdir = os.path.abspath(argv[1].rstrip("/") if len(argv) == 2 else default_outdir())
    parent = os.path.dirname(outdir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(outdir)}.tmp-", dir=parent)
    try:
        build(tmp)
        swap_into_place(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return 0


def swap_into_place(tmp, outdir):
    old = None
    if os.path.exists(outdir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(outdir)}.old-",
                               dir=os.path.dirname(outdir))
        os.rmdir(old)
        os.rename(outdir, old)
    os.rename(tmp, outdir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def build(tmp):
    os.chmod(tmp, 0o755)
    P = lambda *parts: os.path.join(tmp, *parts)  # noqa: E731
    t0 = time.time()

    # iris (versioned) ----------------------------------------------------
    iris_expected = {}
    for version, s in [(1, 101), (2, 102), (9, 109), (10, 110)]:
        d = P("iris", str(version))
        export_keras(iris_model(s), d)
        iris_expected[str(version)] = expected_for(d, {"*": IRIS_CASES})
        log(f"iris/{version}")
    write_json(P("iris.expected.json"), iris_expected)

    # iris_plain (non-versioned) -----------------------------------------
    export_keras(iris_model(200), P("iris_plain"))
    write_json(P("iris_plain.expected.json"),
               {"1": expected_for(P("iris_plain"), {"*": IRIS_CASES})})
    log("iris_plain")

    # iris_serve_gpu: iris/1 tagged {serve, gpu} ----------------------------
    d = P("iris_serve_gpu", "1")
    shutil.copytree(P("iris", "1"), d)
    retag(d, ["serve", "gpu"])
    write_json(P("iris_serve_gpu.expected.json"),
               {"1": expected_for(d, {"*": IRIS_CASES}, tags=["serve", "gpu"])})
    log("iris_serve_gpu/1")

    # multi_io --------------------------------------------------------------
    seed(300)
    m = MultiIO()
    d = P("multi_io", "1")
    tf.saved_model.save(m, d, signatures={"serving_default": m.serve})
    write_json(P("multi_io.expected.json"),
               {"1": expected_for(d, {"serving_default": MULTI_IO_CASES})})
    log("multi_io/1")

    # all_dtypes ----------------------------------------------------------
    seed(400)
    m = AllDTypes()
    d = P("all_dtypes", "1")
    tf.saved_model.save(m, d, signatures={"serving_default": m.serve})
    write_json(P("all_dtypes.expected.json"),
               {"1": expected_for(d, {"serving_default": ALL_DTYPES_CASES})})
    log("all_dtypes/1")

    # signature-selection models ------------------------------------------
    for name, sigs in [
        ("two_signatures", lambda m: {"serving_default": m.double, "triple": m.triple}),
        ("predict_and_other", lambda m: {"predict": m.plus_one, "other": m.minus_one}),
        ("ambiguous", lambda m: {"alpha": m.ident, "beta": m.ident}),
    ]:
        seed(500)
        m = XModule()
        signatures = sigs(m)
        d = P(name, "1")
        tf.saved_model.save(m, d, signatures=signatures)
        write_json(P(f"{name}.expected.json"),
                   {"1": expected_for(d, {s: X2_CASES for s in signatures})})
        log(f"{name}/1")

    # mlp1024 -------------------------------------------------------------
    d = P("mlp1024", "1")
    export_keras(mlp1024_model(600), d)
    mlp_in = {"x": [[float(v) for v in np.linspace(-1.0, 1.0, 1024)]]}
    write_json(P("mlp1024.expected.json"),
               {"1": expected_for(d, {"*": [mlp_in]})})
    log("mlp1024/1")

    # copies ---------------------------------------------------------------
    shutil.copytree(P("iris", "1"), P("zoo", "iris", "1"))
    shutil.copytree(P("iris", "2"), P("zoo", "iris", "2"))
    shutil.copytree(P("multi_io", "1"), P("zoo", "multi_io", "1"))
    os.makedirs(P("neuron", "1"))
    shutil.copy2(P("iris", "1", "saved_model.pb"), P("neuron", "1", "saved_model.pb"))
    log("zoo, neuron")

    # invalid ----------------------------------------------------------------
    shutil.copytree(P("iris", "1"), P("invalid", "mixed", "1"))
    os.makedirs(P("invalid", "mixed", "extra"))
    with open(P("invalid", "mixed", "extra", "README"), "w") as f:
        f.write("Not a model version: a non-numeric directory next to version 1.\n")

    shutil.copytree(P("iris", "1"), P("invalid", "missing_index", "1"))
    os.remove(P("invalid", "missing_index", "1", "variables", "variables.index"))

    os.makedirs(P("invalid", "empty"))

    seed(700)
    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    tf.saved_model.save(small, P("invalid", "keras_saved_model_save", "1"))

    nm = P("invalid", "not_a_model", "1")
    os.makedirs(os.path.join(nm, "variables"))
    for rel, data in [
        ("saved_model.pb", b"junk"),
        (os.path.join("variables", "variables.index"), b"x"),
        (os.path.join("variables", "variables.data-00000-of-00001"), b"x"),
    ]:
        with open(os.path.join(nm, rel), "wb") as f:
            f.write(data)
    log("invalid/*")

    write_json(P("MANIFEST.json"), manifest(tmp))
    log(f"MANIFEST.json; built in {time.time() - t0:.1f}s")


def manifest(tmp):
    P = lambda *parts: os.path.join(tmp, *parts)  # noqa: E731
    fixtures = []

    def versioned(name, notes, expected=True):
        versions = rel_versions(tmp, name)
        fixtures.append({
            "path": name,
            "layout": "versioned",
            "versions": versions,
            "signatures": signature_defs(P(name, str(versions[0]))),
            "expected": f"{name}.expected.json" if expected else None,
            "notes": notes,
        })

    versioned("iris", "Keras MLP 4 -> 16 relu -> 3 softmax, model.export(); "
              "versions 1, 2, 9, 10 have different weights (10 sorts after 9 numerically)")
    fixtures.append({
        "path": "iris_plain",
        "layout": "plain (saved_model.pb at the top, no version folder; expected key \"1\")",
        "versions": [],
        "signatures": signature_defs(P("iris_plain")),
        "expected": "iris_plain.expected.json",
        "notes": "same kind of model as iris, own weights",
    })
    versioned("iris_serve_gpu", "iris/1 with its one MetaGraph tagged {serve, gpu} instead of "
              "{serve}: loads only when asked for exactly those tags (TF Serving's "
              "--saved_model_tags=serve,gpu)")
    versioned("multi_io", "tf.Module; several named inputs/outputs incl. int64 beyond 2^53, "
              "strings (one input not UTF-8), int32 output")
    versioned("all_dtypes", "tf.Module; identity per dtype (in_<dtype> -> out_<dtype>) for "
              + ", ".join(DTYPES) + "; raw_bytes returns b'\\xff\\xfe' per row (not UTF-8)")
    versioned("two_signatures", "serving_default: y = 2x; triple: y = 3x")
    versioned("predict_and_other", "no serving_default; predict: y = x + 1; other: y = x - 1")
    versioned("ambiguous", "neither serving_default nor predict: alpha and beta (both identity)")
    versioned("mlp1024", "Keras Dense 1024 -> 1024 relu -> 1024 relu -> 1024, model.export(); "
              "~12 MB of float32 weights, for benchmarks")
    fixtures.append({
        "path": "zoo",
        "layout": "Cortex models.dir: <model>/<version>/",
        "models": {"iris": rel_versions(P("zoo"), "iris"),
                   "multi_io": rel_versions(P("zoo"), "multi_io")},
        "notes": "copies of iris/1, iris/2 and multi_io/1 (same expected outputs)",
    })
    fixtures.append({
        "path": "neuron",
        "layout": "Inferentia: <version>/saved_model.pb only (no variables/)",
        "versions": [1],
        "notes": "iris/1's saved_model.pb alone",
    })
    for path, notes in [
        ("invalid/mixed", "version 1 is valid, but a non-numeric folder extra/ sits beside it"),
        ("invalid/missing_index", "1/variables/variables.index deleted"),
        ("invalid/empty", "empty folder"),
        ("invalid/keras_saved_model_save",
         "Keras 3 model written with tf.saved_model.save: loads, first run fails "
         "(variables not found)"),
        ("invalid/not_a_model",
         "1/saved_model.pb is junk; fake variables files; passes layout checks, fails to load"),
    ]:
        fixtures.append({"path": path, "layout": "invalid", "notes": notes})
    return {
        "generator": "scripts/make_models.py",
        "tensorflow": tf.__version__,
        "tags": ["serve"],
        "expected_format": "<model>.expected.json beside the model folder: "
                           "{version: {signature: [{inputs, outputs: {name: {dtype, shape, values}}}]}}",
        "fixtures": fixtures,
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv))
