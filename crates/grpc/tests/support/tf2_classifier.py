"""A native TensorFlow 2 classifier and regressor over tf.Example input.

  tf2_classifier.py DIR   saves the model to DIR/1 with tf.saved_model.save and prints
                          TensorFlow's own outputs for EXAMPLES as JSON

TensorFlow 2 writes `tensorflow/serving/predict` as the method_name of every signature,
whatever it computes; TF Serving classifies and regresses such models when its signature
method name check is off (its default). Signatures: serving_default and classify_x
(input `inputs`, serialized tf.Examples with a 4-float feature `x`; outputs `classes` and
`scores`), regress_x (outputs `outputs`).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

CLASS_NAMES = [b"setosa", b"versicolor", b"virginica"]
EXAMPLES = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
# Required (no default): an empty example fails, as in most real classifiers.
FEATURES = {"x": tf.io.FixedLenFeature([4], tf.float32)}
EXAMPLES_SPEC = tf.TensorSpec([None], tf.string)


def serialized(values):
    feature = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    example = tf.train.Example(features=tf.train.Features(feature={"x": feature}))
    return example.SerializeToString()


class Tf2Classifier(tf.Module):
    def __init__(self):
        super().__init__()
        weights = np.random.default_rng(11).normal(size=(4, 3)).astype(np.float32)
        self.weights = tf.Variable(weights)
        self.coefficients = tf.Variable([0.5, -1.0, 2.0, 0.25])

    @tf.function(input_signature=[EXAMPLES_SPEC])
    def classify(self, inputs):
        x = tf.io.parse_example(inputs, FEATURES)["x"]
        classes = tf.tile(tf.constant([CLASS_NAMES]), [tf.shape(x)[0], 1])
        return {"classes": classes, "scores": tf.nn.softmax(tf.matmul(x, self.weights))}

    @tf.function(input_signature=[EXAMPLES_SPEC])
    def regress(self, inputs):
        x = tf.io.parse_example(inputs, FEATURES)["x"]
        return {"outputs": tf.reduce_sum(x * self.coefficients, axis=1)}


def main(folder):
    model = Tf2Classifier()
    signatures = {
        "serving_default": model.classify,
        "classify_x": model.classify,
        "regress_x": model.regress,
    }
    tf.saved_model.save(model, os.path.join(folder, "1"), signatures=signatures)
    batch = tf.constant([serialized(v) for v in EXAMPLES])
    classified = model.classify(batch)
    print(json.dumps({
        "examples": EXAMPLES,
        "classes": [[c.decode() for c in row] for row in classified["classes"].numpy()],
        "scores": classified["scores"].numpy().tolist(),
        "regress": model.regress(batch)["outputs"].numpy().tolist(),
    }))


if __name__ == "__main__":
    main(sys.argv[1])
