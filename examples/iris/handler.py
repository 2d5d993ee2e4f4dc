"""Iris classifier: preprocess -> predict on the TensorFlow model -> class label."""

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


class Handler:
    def __init__(self, tensorflow_client, config, metrics_client=None):
        self.client = tensorflow_client
        self.labels = config["labels"]
        self.metrics = metrics_client

    def handle_async(self, payload, request_id):
        # Accept {"sepal_length": 5.1, ...} (Cortex's example payload) or {"x": [[...]]}.
        if "x" in payload:
            rows = payload["x"]
        else:
            rows = [[float(payload[name]) for name in FEATURES]]
        prediction = self.client.predict({"x": rows})
        probabilities = prediction["output_0"][0]
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        if self.metrics is not None:
            self.metrics.increment("iris_predictions", tags={"label": self.labels[best]})
        return {"label": self.labels[best], "probabilities": probabilities}
