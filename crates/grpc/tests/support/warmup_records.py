"""Writes SavedModel warm-up files (TFRecord files of PredictionLog) the way TF Serving's
users write them: with the official tensorflow-serving-api messages and tf.io.TFRecordWriter.

usage: warmup_records.py OUT_DIR

census_examples is for the tf.Example model of `tfs_client.py make-classifier`
(signatures serving_default = classify_x, regress_x; feature x: 4 floats).
"""
import os
import sys

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, inference_pb2, input_pb2,
                                     predict_pb2, prediction_log_pb2, regression_pb2)

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def write(name, logs):
    with tf.io.TFRecordWriter(os.path.join(out, name)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


def iris_predict(signature="", form="content", output_filter=()):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "iris"
    request.model_spec.signature_name = signature
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]], dtype=np.float32)
    if form == "content":  # make_tensor_proto writes numpy arrays as tensor_content
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(rows))
    else:
        proto = request.inputs["x"]
        proto.dtype = tf.float32.as_datatype_enum
        proto.tensor_shape.dim.add(size=2)
        proto.tensor_shape.dim.add(size=4)
        proto.float_val.extend(rows.flatten().tolist())
    request.output_filter.extend(output_filter)
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


good = [
    iris_predict(),
    iris_predict("serving_default", "typed"),
    iris_predict(output_filter=["output_0"]),
]
write("iris_predict", good)
write("iris_too_many", [good[0]] * 1001)

bad = predict_pb2.PredictRequest()
bad.model_spec.name = "iris"
bad.inputs["nope"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 4), dtype=np.float32)))
write("iris_bad_input", [good[0], prediction_log_pb2.PredictionLog(
    predict_log=prediction_log_pb2.PredictLog(request=bad))])

with tf.io.TFRecordWriter(os.path.join(out, "not_a_log")) as writer:
    writer.write(b"\xff\xff\xff")  # valid TFRecord framing, invalid protobuf

write("session_run", [prediction_log_pb2.PredictionLog(
    session_run_log=prediction_log_pb2.SessionRunLog())])


def examples():
    data = input_pb2.Input()
    for x in ([1.0, 2.0, 3.0, 4.0], [3.0, -1.0, 0.5, 0.0]):
        example = data.example_list.examples.add()
        example.features.feature["x"].float_list.value.extend(x)
    return data


classify = classification_pb2.ClassificationRequest(input=examples())
classify.model_spec.name = "census"
regress = regression_pb2.RegressionRequest(input=examples())
regress.model_spec.name = "census"
regress.model_spec.signature_name = "regress_x"
multi = inference_pb2.MultiInferenceRequest(input=examples())
task = multi.tasks.add()
task.model_spec.name = "census"
task.method_name = "tensorflow/serving/classify"
task = multi.tasks.add()
task.model_spec.name = "census"
task.model_spec.signature_name = "regress_x"
task.method_name = "tensorflow/serving/regress"
write("census_examples", [
    prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=classify)),
    prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=regress)),
    prediction_log_pb2.PredictionLog(
        multi_inference_log=prediction_log_pb2.MultiInferenceLog(request=multi)),
])
print("ok")
