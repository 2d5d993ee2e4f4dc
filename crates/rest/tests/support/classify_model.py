"""Writes a TF1-style SavedModel with classify and regress signatures over tf.Example
inputs (like an Estimator export) and prints what TensorFlow itself computes for the
requests the Rust test sends."""
import json
import sys

import tensorflow as tf

tf1 = tf.compat.v1
tf1.disable_eager_execution()
out = sys.argv[1]


def example(features):
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                k: tf.train.Feature(float_list=tf.train.FloatList(value=v))
                for k, v in features.items()
            }
        )
    ).SerializeToString()


with tf1.Graph().as_default():
    serialized = tf1.placeholder(tf.string, shape=[None], name="tf_example")
    features = tf1.io.parse_example(
        serialized,
        {
            "x": tf1.io.FixedLenFeature([2], tf.float32),
            "w": tf1.io.FixedLenFeature([1], tf.float32, default_value=[1.0]),
        },
    )
    # A variable, so that the export has the variables/ files a SavedModel layout needs.
    scale = tf1.Variable(1.0, name="scale")
    x = features["x"] * features["w"] * scale
    scores = tf.nn.softmax(tf.stack([x[:, 0] - x[:, 1], x[:, 1] - x[:, 0]], axis=1))
    classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(x)[0], 1])
    value = tf.reduce_sum(x, axis=1)
    with tf1.Session() as sess:
        sess.run(tf1.global_variables_initializer())
        builder = tf1.saved_model.Builder(out + "/1")
        builder.add_meta_graph_and_variables(
            sess,
            ["serve"],
            signature_def_map={
                "serving_default": tf1.saved_model.classification_signature_def(
                    serialized, classes, scores
                ),
                "regress": tf1.saved_model.regression_signature_def(serialized, value),
            },
        )
        builder.save()
        plain = [example({"x": [1.0, 2.0]}), example({"x": [3.0, -1.0], "w": [2.0]})]
        # The context (w = 3) applies where the example does not set w itself.
        context = [example({"x": [1.0, 2.0], "w": [3.0]}), example({"x": [3.0, -1.0], "w": [2.0]})]
        result = {}
        for name, batch in (("plain", plain), ("context", context)):
            s, c, v = sess.run([scores, classes, value], {serialized: batch})
            result[name] = {
                "scores": s.tolist(),
                "classes": [[label.decode() for label in row] for row in c],
                "values": v.tolist(),
            }
        print(json.dumps(result))
