use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use soma_core::json::{tensor_from_json, tensor_to_json};
use soma_core::runner::ModelRunner;
use soma_core::{
    DType, ErrorKind, ListedSignature, SignatureDef, Tensor, TensorInfo, format_shape,
};
use soma_metrics::{ModelMetrics, RuntimeApi};

use crate::batching::{BatchOptions, Batcher, InPlace};
use crate::run_clock::{RunClock, TimedRunner};
use crate::signature::warmup_inputs_of_ones;
use crate::{RecordedWarmup, RuntimeError, choose_signature, warmup_inputs};

/// One loaded model version, with the signature it serves by default.
#[derive(Debug)]
pub struct Servable {
    model: String,
    version: i64,
    runner: Arc<dyn ModelRunner>,
    default_signature: String,
    /// Server-side batching, if enabled for this model.
    batcher: Option<Batcher>,
    /// How long this version's TensorFlow runs take (the runner times them); see
    /// [`Servable::runs_quickly`].
    run_clock: Arc<RunClock>,
    /// TF Serving's run metrics of this version, if they are recorded.
    metrics: Option<ModelMetrics>,
}

/// A model whose TensorFlow runs typically take at most this long may run predictions on the
/// caller's async thread (see [`Servable::runs_quickly`]).
pub const QUICK_RUN: Duration = Duration::from_micros(100);

/// What a failed warm-up most likely means when the version has a `variables/` folder.
const KERAS_HINT: &str = "If this is a Keras model saved with tf.saved_model.save, re-export it \
     with model.export(path), which writes a SavedModel that TensorFlow's C API (and TF \
     Serving) can run.";
/// ... when the model refuses zeros and ones alike ...
const MIXED_FILES_HINT: &str = "soma runs each new version once on zero-valued inputs, then \
     ones, to check that it runs. If the version's files are being replaced, saved_model.pb \
     and variables/ may come from different exports (it is loaded again once its files stop \
     changing); if the model needs other values, record a warm-up request in \
     assets.extra/tf_serving_warmup_requests (TF Serving's warm-up file), which soma runs \
     instead.";
/// ... and when it has none.
const NO_VARIABLES_HINT: &str = "The version has no variables/ folder: if its files are still \
     being copied, it is loaded again once they change; a SavedModel that reads variables \
     needs variables/variables.index and its data shards.";

/// The outputs of one prediction, and which model version produced them.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub model: String,
    pub version: i64,
    pub signature: String,
    pub outputs: BTreeMap<String, Tensor>,
    /// How long the run took, from its checked input tensors to its outputs, a wait for a
    /// batch included: TF Serving's runtime latency (see
    /// [`Servable::record_runtime_latency`]).
    pub runtime: Duration,
}

impl Prediction {
    /// `{output_name: nested list}`, keeping each tensor's shape.
    pub fn outputs_json(&self) -> Map<String, Value> {
        self.outputs
            .iter()
            .map(|(name, t)| (name.clone(), tensor_to_json(t)))
            .collect()
    }
}

/// A prediction queued with [`Servable::queue_json_in_place`]; await it for the outputs.
#[derive(Debug)]
#[must_use = "the prediction runs when it is awaited"]
pub struct QueuedPrediction<'a> {
    servable: &'a Servable,
    key: &'a str,
    sig: &'a SignatureDef,
    outputs: Outputs<'a>,
    /// When its inputs were handed over: its runtime starts there.
    queued: Instant,
}

#[derive(Debug)]
enum Outputs<'a> {
    Batched(InPlace<'a>),
    /// No batching: runs on the first poll.
    Alone(Option<Vec<Tensor>>),
}

impl QueuedPrediction<'_> {
    /// Whether other requests are queued or running in place on this signature: only then
    /// is yielding before the first poll worth it (see
    /// [`InPlace::has_company`](crate::batching::InPlace::has_company)).
    pub fn has_company(&self) -> bool {
        match &self.outputs {
            Outputs::Batched(in_place) => in_place.has_company(),
            Outputs::Alone(_) => false,
        }
    }

    /// Whether to yield to the runtime before the first poll: others are queued
    /// ([`has_company`](Self::has_company)), or this prediction batches and the caller's
    /// thread may have read other requests it has not polled yet (`thread_has_company`:
    /// a thread that polls its connections one after another cannot see those in the queue).
    pub fn worth_yielding(&self, thread_has_company: bool) -> bool {
        self.has_company() || (matches!(self.outputs, Outputs::Batched(_)) && thread_has_company)
    }
}

impl std::future::Future for QueuedPrediction<'_> {
    type Output = Result<Prediction, RuntimeError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        let outputs = match &mut this.outputs {
            Outputs::Batched(in_place) => std::task::ready!(std::pin::Pin::new(in_place).poll(cx)),
            Outputs::Alone(inputs) => {
                let inputs = inputs
                    .take()
                    .expect("QueuedPrediction polled after it completed");
                this.servable
                    .run_now(this.key, &inputs.iter().collect::<Vec<_>>())
            }
        };
        std::task::Poll::Ready(
            outputs.map(|o| this.servable.prediction(this.key, this.sig, o, this.queued)),
        )
    }
}

impl Servable {
    /// Wraps a loaded model and picks its default signature (see [`choose_signature`]).
    pub fn new(
        model: impl Into<String>,
        version: i64,
        runner: Box<dyn ModelRunner>,
        signature_key: Option<&str>,
    ) -> Result<Servable, RuntimeError> {
        let model = model.into();
        let label = format!("model '{model}' version {version}");
        let default_signature = choose_signature(runner.signatures(), signature_key, &label)?;
        let run_clock = Arc::new(RunClock::new(QUICK_RUN));
        Ok(Servable {
            model,
            version,
            runner: Arc::new(TimedRunner::new(runner, Arc::clone(&run_clock))),
            default_signature,
            batcher: None,
            run_clock,
            metrics: None,
        })
    }

    /// Records TF Serving's run metrics of this version in `metrics` (see
    /// [`record_runtime_latency`](Self::record_runtime_latency)).
    pub fn with_metrics(mut self, metrics: ModelMetrics) -> Servable {
        self.metrics = Some(metrics);
        self
    }

    /// TF Serving's `runtime_latency` of a request's successful run on this version (its
    /// [`Prediction::runtime`]), if the version records metrics. The front ends call this
    /// for the runs TF Serving times: Predict, Classify and Regress, over REST and gRPC (not
    /// a MultiInference's tasks).
    pub fn record_runtime_latency(&self, api: RuntimeApi, runtime: Duration) {
        if let Some(metrics) = &self.metrics {
            metrics.record_runtime_latency(api, runtime);
        }
    }

    /// TF Serving's `request_example_counts` of a MultiInference request that ran on this
    /// version with `examples` tf.Examples, if the version records metrics.
    pub fn record_example_count(&self, examples: usize) {
        if let Some(metrics) = &self.metrics {
            metrics.record_example_count(examples);
        }
    }

    /// Turns on server-side batching (see [`crate::batching`]); batch sizes and waits are
    /// recorded in `metrics`. Invalid options are an `InvalidInput` error naming the field.
    pub fn with_batching(
        mut self,
        options: BatchOptions,
        metrics: Option<soma_metrics::Registry>,
    ) -> Result<Servable, RuntimeError> {
        options.validate().map_err(|e| {
            RuntimeError::InvalidInput(format!("batching of {}: {e}", self.label()))
        })?;
        self.batcher = Some(Batcher::new(
            Arc::clone(&self.runner),
            &self.model,
            self.version,
            options,
            metrics,
        ));
        Ok(self)
    }

    /// Whether a prediction on this version is cheap enough to run in place on an async
    /// runtime's thread instead of being handed to a blocking pool: batching is off (a
    /// batched request may wait for others) and most of its recent TensorFlow runs took at
    /// most [`QUICK_RUN`]. On a small model the hand-off (two thread wake-ups) costs more
    /// than the prediction itself. The measure follows the model, so a version whose runs
    /// get slower (bigger inputs, a loaded machine) goes back to the pool after a few
    /// requests.
    pub fn runs_quickly(&self) -> bool {
        self.batcher.is_none() && self.run_clock.is_quick()
    }

    /// Whether an async server may run a prediction on the thread that read it
    /// ([`queue_json_in_place`](Self::queue_json_in_place)): most recent TensorFlow runs
    /// (batched ones included, waiting for a batch not) took at most [`QUICK_RUN`], and
    /// batching, if on, never waits for a timer (`auto` or a zero window), so requests batch
    /// in place (see [`crate::batching::InPlace`]).
    pub fn may_answer_now(&self) -> bool {
        self.batcher.as_ref().is_none_or(Batcher::never_waits) && self.run_clock.is_quick()
    }

    /// Checks JSON inputs and queues them for a batch formed on async threads, for servables
    /// that [may answer now](Self::may_answer_now). If [others are
    /// queued](QueuedPrediction::has_company), let the runtime poll its other ready tasks
    /// first (`tokio::task::yield_now().await`), so that the requests they read can join;
    /// then await the prediction. Without batching it runs alone when first polled.
    pub fn queue_json_in_place(
        &self,
        signature: Option<&str>,
        inputs: &Map<String, Value>,
    ) -> Result<QueuedPrediction<'_>, RuntimeError> {
        let (key, sig, tensors) = self.json_tensors(signature, inputs)?;
        Ok(self.queue_in_place(key, sig, tensors))
    }

    /// [`queue_json_in_place`](Self::queue_json_in_place) for tensor inputs (dtypes and
    /// shapes checked against the signature).
    pub fn queue_owned_in_place(
        &self,
        signature: Option<&str>,
        inputs: BTreeMap<String, Tensor>,
    ) -> Result<QueuedPrediction<'_>, RuntimeError> {
        let (key, sig, tensors) = self.ordered_tensors(signature, inputs)?;
        Ok(self.queue_in_place(key, sig, tensors))
    }

    fn queue_in_place<'a>(
        &'a self,
        key: &'a str,
        sig: &'a SignatureDef,
        tensors: Vec<Tensor>,
    ) -> QueuedPrediction<'a> {
        let queued = Instant::now();
        let outputs = match &self.batcher {
            Some(batcher) => Outputs::Batched(batcher.queue_in_place(key, tensors)),
            None => Outputs::Alone(Some(tensors)),
        };
        QueuedPrediction {
            servable: self,
            key,
            sig,
            outputs,
            queued,
        }
    }

    /// The batching options, if batching is on.
    pub fn batching(&self) -> Option<&BatchOptions> {
        self.batcher.as_ref().map(Batcher::options)
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    pub fn default_signature(&self) -> &str {
        &self.default_signature
    }

    pub fn signatures(&self) -> &BTreeMap<String, SignatureDef> {
        self.runner.signatures()
    }

    /// Every signature the version lists in its metadata, runnable or not (TF Serving's
    /// `GetModelMetadata` and REST `/metadata` show them all).
    pub fn listed_signatures(&self) -> BTreeMap<String, ListedSignature> {
        self.runner.listed_signatures()
    }

    /// The signature for `key`, or the default one.
    pub fn signature(&self, key: Option<&str>) -> Result<(&str, &SignatureDef), RuntimeError> {
        let key = key.unwrap_or(&self.default_signature);
        self.runner
            .signatures()
            .get_key_value(key)
            .map(|(k, s)| (k.as_str(), s))
            .ok_or_else(|| {
                let keys: Vec<&str> = self
                    .runner
                    .signatures()
                    .keys()
                    .map(String::as_str)
                    .collect();
                RuntimeError::NotFound(format!(
                    "{}: no signature '{key}'; available: {}",
                    self.label(),
                    keys.join(", ")
                ))
            })
    }

    /// Warms a freshly loaded version (whose files are in `dir`) up before it serves: with
    /// the requests recorded with it, if `recorded` finds any, else with [`warm_up`](Self::warm_up)
    /// unless the default signature takes serialized tf.Examples (classify/regress), for
    /// which zeros are no valid input (an empty example fails any required feature; TF
    /// Serving only warms up from recorded requests either). Returns how many records ran.
    pub fn warm_up_from(
        &self,
        dir: &Path,
        recorded: Option<&dyn RecordedWarmup>,
    ) -> Result<Option<usize>, RuntimeError> {
        if let Some(records) = recorded.map(|r| r.replay(self, dir)).transpose()?.flatten() {
            return Ok(Some(records));
        }
        let takes_examples = self.signature(None).is_ok_and(|(_, sig)| {
            matches!(
                sig.method_name.as_str(),
                "tensorflow/serving/classify" | "tensorflow/serving/regress"
            )
        });
        if !takes_examples {
            self.warm_up_hinting(dir.join("variables").is_dir())?;
        }
        Ok(None)
    }

    /// Runs the default signature once on zero-valued inputs. This catches models that load
    /// but cannot run (notably Keras 3 models saved with `tf.saved_model.save`, and a
    /// `saved_model.pb` with another export's variables). A signature with a string input
    /// that refuses the empty string (INVALID_ARGUMENT: it parses tf.Examples with a
    /// required feature) can run, and serves: an empty string is soma's guess at an input,
    /// not the model's contract. Numbers refused (INVALID_ARGUMENT) get a second try with
    /// ones (`assert_positive`, one-based ids); refused again, the version fails, as a graph
    /// and variables of different shapes do whatever the values.
    pub fn warm_up(&self) -> Result<(), RuntimeError> {
        self.warm_up_hinting(true)
    }

    /// [`warm_up`](Self::warm_up), with the hint for a failure chosen by whether the
    /// version has a `variables/` folder.
    fn warm_up_hinting(&self, has_variables: bool) -> Result<(), RuntimeError> {
        let (key, signature) = self.signature(None)?;
        let run = |inputs: Vec<Tensor>| {
            let refs: Vec<&Tensor> = inputs.iter().collect();
            self.runner.run(key, &refs).map(drop)
        };
        let takes_strings = signature.inputs.values().any(|i| i.dtype == DType::String);
        let outcome = match run(warmup_inputs(signature)?) {
            Err(zeros) if zeros.kind == ErrorKind::InvalidArgument && !takes_strings => {
                run(warmup_inputs_of_ones(signature)?).map_err(|ones| match ones.kind {
                    // The message of the first refusal says more (zeros are what it got).
                    ErrorKind::InvalidArgument => zeros,
                    _ => ones,
                })
            }
            outcome => outcome,
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(refused) if refused.kind == ErrorKind::InvalidArgument && takes_strings => {
                tracing::info!(
                    model = %self.label(),
                    reason = %refused,
                    "zero-valued warm-up input refused by the model; serving without a \
                     warm-up (record one in assets.extra/tf_serving_warmup_requests)"
                );
                Ok(())
            }
            Err(source) => {
                let hint = match (has_variables, source.kind) {
                    // A version without variables/ whose graph reads variables is most likely
                    // still being copied (an S3 upload sends saved_model.pb first).
                    (false, _) => NO_VARIABLES_HINT,
                    // Shapes that do not fit: the graph and the variables of two exports.
                    (true, ErrorKind::InvalidArgument) => MIXED_FILES_HINT,
                    (true, _) => KERAS_HINT,
                };
                Err(RuntimeError::Model(format!(
                    "{} loaded but failed its warm-up prediction: {source}\n{hint}",
                    self.label()
                )))
            }
        }
    }

    /// Predicts from JSON inputs (`{name: nested list | scalar | string | {"b64": ...}}`).
    pub fn predict_json(
        &self,
        signature: Option<&str>,
        inputs: &Map<String, Value>,
    ) -> Result<Prediction, RuntimeError> {
        self.predict_json_until(signature, inputs, None)
    }

    /// Like [`predict_json`](Self::predict_json), failing with `DeadlineExceeded` if
    /// `deadline` passes while the request waits for a batch.
    pub fn predict_json_until(
        &self,
        signature: Option<&str>,
        inputs: &Map<String, Value>,
        deadline: Option<Instant>,
    ) -> Result<Prediction, RuntimeError> {
        let (key, sig, tensors) = self.json_tensors(signature, inputs)?;
        self.run(key, sig, tensors, deadline)
    }

    /// The signature and `inputs` in the signature's order, names, dtypes and shapes checked.
    #[allow(clippy::type_complexity)]
    fn ordered_tensors(
        &self,
        signature: Option<&str>,
        mut inputs: BTreeMap<String, Tensor>,
    ) -> Result<(&str, &SignatureDef, Vec<Tensor>), RuntimeError> {
        let (key, sig) = self.signature(signature)?;
        self.check_names(key, sig, inputs.keys())?;
        let mut ordered = Vec::with_capacity(sig.inputs.len());
        for (name, info) in &sig.inputs {
            let tensor = inputs.remove(name).expect("names were checked");
            check_tensor(name, &tensor, info)?;
            ordered.push(tensor);
        }
        Ok((key, sig, ordered))
    }

    /// The signature and its inputs as tensors (in the signature's order), checked.
    #[allow(clippy::type_complexity)]
    fn json_tensors(
        &self,
        signature: Option<&str>,
        inputs: &Map<String, Value>,
    ) -> Result<(&str, &SignatureDef, Vec<Tensor>), RuntimeError> {
        let (key, sig) = self.signature(signature)?;
        self.check_names(key, sig, inputs.keys())?;
        let tensors = sig
            .inputs
            .iter()
            .map(|(name, info)| tensor_from_json(name, &inputs[name], info))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((key, sig, tensors))
    }

    /// Predicts from tensors; dtypes and shapes are checked against the signature.
    pub fn predict(
        &self,
        signature: Option<&str>,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<Prediction, RuntimeError> {
        let (key, sig) = self.signature(signature)?;
        self.check_names(key, sig, inputs.keys())?;
        for (name, info) in &sig.inputs {
            check_tensor(name, &inputs[name], info)?;
        }
        if self.batcher.is_some() {
            let owned = sig.inputs.keys().map(|name| inputs[name].clone()).collect();
            return self.run(key, sig, owned, None);
        }
        let started = Instant::now();
        let ordered: Vec<&Tensor> = sig.inputs.keys().map(|name| &inputs[name]).collect();
        let outputs = self.run_now(key, &ordered)?;
        Ok(self.prediction(key, sig, outputs, started))
    }

    /// Like [`predict`](Self::predict), taking the inputs by value (no copy when batching)
    /// and failing with `DeadlineExceeded` if `deadline` passes while waiting for a batch.
    pub fn predict_owned(
        &self,
        signature: Option<&str>,
        inputs: BTreeMap<String, Tensor>,
        deadline: Option<Instant>,
    ) -> Result<Prediction, RuntimeError> {
        let (key, sig, ordered) = self.ordered_tensors(signature, inputs)?;
        self.run(key, sig, ordered, deadline)
    }

    /// Runs checked inputs (in signature order), through the batcher if there is one.
    fn run(
        &self,
        key: &str,
        sig: &SignatureDef,
        inputs: Vec<Tensor>,
        deadline: Option<Instant>,
    ) -> Result<Prediction, RuntimeError> {
        let started = Instant::now();
        let outputs = match &self.batcher {
            Some(batcher) => batcher.run(key, inputs, deadline)?,
            None => self.run_now(key, &inputs.iter().collect::<Vec<_>>())?,
        };
        Ok(self.prediction(key, sig, outputs, started))
    }

    fn run_now(&self, key: &str, inputs: &[&Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        self.runner
            .run(key, inputs)
            .map_err(|source| RuntimeError::Engine {
                context: format!("{} signature '{key}'", self.label()),
                source,
            })
    }

    /// The prediction of a run that `started` when its inputs were handed over.
    fn prediction(
        &self,
        key: &str,
        sig: &SignatureDef,
        outputs: Vec<Tensor>,
        started: Instant,
    ) -> Prediction {
        let runtime = started.elapsed();
        Prediction {
            model: self.model.clone(),
            version: self.version,
            signature: key.to_string(),
            outputs: sig.outputs.keys().cloned().zip(outputs).collect(),
            runtime,
        }
    }

    fn check_names<'a>(
        &self,
        key: &str,
        sig: &SignatureDef,
        given: impl Iterator<Item = &'a String> + Clone,
    ) -> Result<(), RuntimeError> {
        let expected = || {
            let parts: Vec<String> = sig
                .inputs
                .iter()
                .map(|(n, i)| format!("{n} ({}, {})", i.dtype, format_shape(i.shape.as_deref())))
                .collect();
            parts.join(", ")
        };
        if let Some(unknown) = given.clone().find(|n| !sig.inputs.contains_key(*n)) {
            return Err(RuntimeError::InvalidInput(format!(
                "unknown input '{unknown}' for {} signature '{key}', which takes: {}",
                self.label(),
                expected()
            )));
        }
        let given: Vec<&String> = given.collect();
        if let Some(missing) = sig.inputs.keys().find(|n| !given.contains(n)) {
            return Err(RuntimeError::InvalidInput(format!(
                "missing input '{missing}' for {} signature '{key}', which takes: {}",
                self.label(),
                expected()
            )));
        }
        Ok(())
    }

    fn label(&self) -> String {
        format!("model '{}' version {}", self.model, self.version)
    }
}

fn check_tensor(name: &str, tensor: &Tensor, info: &TensorInfo) -> Result<(), RuntimeError> {
    if tensor.dtype() != info.dtype {
        return Err(RuntimeError::InvalidInput(format!(
            "input '{name}': expected dtype {} but got {}",
            info.dtype,
            tensor.dtype()
        )));
    }
    if let Some(dims) = &info.shape {
        let fits = dims.len() == tensor.shape().len()
            && dims
                .iter()
                .zip(tensor.shape())
                .all(|(d, a)| *d < 0 || usize::try_from(*d) == Ok(*a));
        if !fits {
            let actual: Vec<i64> = tensor.shape().iter().map(|d| *d as i64).collect();
            return Err(RuntimeError::InvalidInput(format!(
                "input '{name}': expected shape {} but got {}",
                format_shape(Some(dims)),
                format_shape(Some(&actual))
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use soma_core::runner::RunError;

    use super::*;
    use crate::batching::BatchOptions;
    use crate::batching::BatchWindow;
    use crate::fake::Doubler;

    /// The fake model, taking as long per run as the test says.
    #[derive(Debug)]
    struct Timed {
        inner: Doubler,
        takes: Arc<Mutex<Duration>>,
    }

    impl ModelRunner for Timed {
        fn signatures(&self) -> &BTreeMap<String, SignatureDef> {
            self.inner.signatures()
        }

        fn run(&self, signature: &str, inputs: &[&Tensor]) -> Result<Vec<Tensor>, RunError> {
            std::thread::sleep(*self.takes.lock().unwrap());
            self.inner.run(signature, inputs)
        }
    }

    fn timed(takes: Duration) -> (Servable, Arc<Mutex<Duration>>) {
        let takes = Arc::new(Mutex::new(takes));
        let runner = Timed {
            inner: Doubler::new(),
            takes: Arc::clone(&takes),
        };
        let servable = Servable::new("m", 1, Box::new(runner), None).unwrap();
        (servable, takes)
    }

    fn predict(servable: &Servable) {
        let x = Tensor::from_slice(vec![1, 2], &[1.0f32, 2.0]).unwrap();
        let inputs = BTreeMap::from([("x".to_string(), x)]);
        servable.predict(None, &inputs).unwrap();
    }

    #[test]
    fn quick_only_once_measured_fast_and_not_after_it_slows_down() {
        let (servable, takes) = timed(Duration::ZERO);
        assert!(!servable.runs_quickly(), "unmeasured counts as slow");
        predict(&servable);
        assert!(servable.runs_quickly());

        *takes.lock().unwrap() = QUICK_RUN * 4;
        for _ in 0..16 {
            predict(&servable);
        }
        assert!(!servable.runs_quickly(), "the measure follows slow runs");

        *takes.lock().unwrap() = Duration::ZERO;
        for _ in 0..64 {
            predict(&servable);
        }
        assert!(
            servable.runs_quickly(),
            "and comes back when they are fast again"
        );
    }

    /// Polls a queued prediction once: in place, it must be answered on the first poll when
    /// no other thread holds it.
    fn poll_once(queued: QueuedPrediction<'_>) -> Result<Prediction, RuntimeError> {
        let mut queued = std::pin::pin!(queued);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(queued.as_mut(), &mut cx) {
            std::task::Poll::Ready(answer) => answer,
            std::task::Poll::Pending => panic!("waited"),
        }
    }

    #[test]
    fn in_place_requests_do_not_wait_for_a_blocking_callers_batch() {
        let json = serde_json::json!({"x": [[1.0, 2.0]]});
        let tensors = || {
            let x = Tensor::from_slice(vec![1, 2], &[1.0f32, 2.0]).unwrap();
            BTreeMap::from([("x".to_string(), x)])
        };
        type Queue<'a> =
            &'a dyn for<'s> Fn(&'s Servable) -> Result<QueuedPrediction<'s>, RuntimeError>;
        let from_json: Queue = &|s| s.queue_json_in_place(None, json.as_object().unwrap());
        let from_tensors: Queue = &|s| s.queue_owned_in_place(None, tensors());
        for (variant, queue) in [("json", from_json), ("tensors", from_tensors)] {
            for (window, in_place) in [
                (BatchWindow::Auto, true),
                (BatchWindow::Fixed(Duration::ZERO), true),
                (BatchWindow::Fixed(Duration::from_millis(5)), false),
            ] {
                let (servable, takes) = timed(Duration::ZERO);
                let options = BatchOptions {
                    window,
                    ..BatchOptions::default()
                };
                let servable = Arc::new(servable.with_batching(options, None).unwrap());
                predict(&servable);
                assert_eq!(servable.may_answer_now(), in_place, "{variant} {window:?}");
                // A Python handler's batch (a blocking caller) is running for 200 ms.
                *takes.lock().unwrap() = Duration::from_millis(200);
                let running = {
                    let servable = Arc::clone(&servable);
                    std::thread::spawn(move || predict(&servable))
                };
                std::thread::sleep(Duration::from_millis(50));
                *takes.lock().unwrap() = Duration::ZERO;
                let queued = queue(&servable).unwrap();
                assert!(!queued.has_company(), "blocking callers queue apart");
                let started = Instant::now();
                let y = &poll_once(queued).unwrap().outputs["y"];
                assert_eq!(y.to_vec::<f32>().unwrap(), [2.0, 4.0]);
                assert!(started.elapsed() < Duration::from_millis(100), "{variant}");
                running.join().unwrap();
            }
        }
    }

    #[test]
    fn without_batching_a_queued_prediction_runs_alone_when_polled() {
        let (servable, _) = timed(Duration::ZERO);
        let json = serde_json::json!({"x": [[1.0, 2.0], [3.0, 4.0]]});
        let queued = servable
            .queue_json_in_place(None, json.as_object().unwrap())
            .unwrap();
        assert!(!queued.has_company());
        let y = &poll_once(queued).unwrap().outputs["y"];
        assert_eq!(y.to_vec::<f32>().unwrap(), [2.0, 4.0, 6.0, 8.0]);
        let wrong = serde_json::json!({"z": [[1.0]]});
        let error = servable
            .queue_json_in_place(None, wrong.as_object().unwrap())
            .unwrap_err();
        assert_eq!(
            error.kind(),
            soma_core::ErrorKind::InvalidArgument,
            "{error}"
        );
    }

    #[test]
    fn waiting_for_a_batch_does_not_count_as_a_slow_run() {
        let (servable, _) = timed(Duration::ZERO);
        let options = BatchOptions {
            window: BatchWindow::Fixed(Duration::from_millis(20)),
            ..BatchOptions::default()
        };
        let servable = servable.with_batching(options, None).unwrap();
        // Ten runs, each after a 20 ms wait: counted with its wait every run would be slow.
        // (Ten, not one, so that a run preempted on a busy machine does not decide alone.)
        for _ in 0..10 {
            let started = Instant::now();
            predict(&servable);
            assert!(
                started.elapsed() >= Duration::from_millis(20),
                "waited out the window"
            );
        }
        assert!(
            servable.run_clock.is_quick(),
            "the runs were quick; only the waits were long"
        );
    }

    #[test]
    fn a_runtime_spans_the_run_and_its_batch_wait_and_is_recorded_under_the_api() {
        let registry = soma_metrics::Registry::new();
        let x = Tensor::from_slice(vec![1, 2], &[1.0f32, 2.0]).unwrap();
        let inputs = BTreeMap::from([("x".to_string(), x)]);
        let run = Duration::from_millis(5);
        let (alone, _) = timed(run);
        let alone = alone.with_metrics(ModelMetrics::new(registry.clone(), "public"));
        let prediction = alone.predict(None, &inputs).unwrap();
        assert!(prediction.runtime >= run, "{:?}", prediction.runtime);
        alone.record_runtime_latency(RuntimeApi::Classify, prediction.runtime);

        let window = Duration::from_millis(20);
        let options = BatchOptions {
            window: BatchWindow::Fixed(window),
            ..BatchOptions::default()
        };
        let (batched, _) = timed(run);
        let batched = batched.with_batching(options, None).unwrap();
        let prediction = batched.predict_owned(None, inputs.clone(), None).unwrap();
        assert!(
            prediction.runtime >= window + run,
            "{:?}",
            prediction.runtime
        );
        // Without metrics nothing is recorded.
        batched.record_runtime_latency(RuntimeApi::Predict, prediction.runtime);

        let count = |api: &str| {
            registry.value(
                soma_metrics::RUNTIME_LATENCY,
                &[("model_name", "public"), ("API", api), ("runtime", "TF1")],
            )
        };
        assert_eq!(count("Classify"), Some(1.0));
        assert_eq!(count("Predict"), None);
    }

    #[test]
    fn batched_requests_do_not_bypass_the_batcher() {
        let (servable, _) = timed(Duration::ZERO);
        let servable = servable
            .with_batching(BatchOptions::default(), None)
            .unwrap();
        predict(&servable);
        assert!(
            !servable.runs_quickly(),
            "a batched request may wait for others"
        );
    }

    /// Recorded warm-up that answers as told, without running anything.
    #[derive(Debug)]
    struct Recorded(Result<Option<usize>, RuntimeError>);

    impl RecordedWarmup for Recorded {
        fn replay(&self, _: &Servable, _: &Path) -> Result<Option<usize>, RuntimeError> {
            self.0.clone()
        }
    }

    #[test]
    fn recorded_requests_replace_the_zero_valued_warm_up() {
        // The default signature fails whenever it runs, so only the fallback runs it.
        let servable = Servable::new("m", 1, Box::new(Doubler::new()), Some("broken")).unwrap();
        let dir = Path::new("/nowhere");
        let warm = |recorded: Option<Recorded>| {
            servable.warm_up_from(dir, recorded.as_ref().map(|r| r as &dyn RecordedWarmup))
        };
        assert_eq!(warm(Some(Recorded(Ok(Some(2))))), Ok(Some(2)));
        let fallback = warm(Some(Recorded(Ok(None)))).unwrap_err();
        assert!(
            fallback
                .to_string()
                .contains("failed its warm-up prediction"),
            "{fallback}"
        );
        // "/nowhere" has no variables/: the hint is about files still being copied.
        assert!(
            fallback.to_string().contains("no variables/ folder"),
            "{fallback}"
        );
        let with_variables =
            std::env::temp_dir().join(format!("soma-warm-up-{}", std::process::id()));
        std::fs::create_dir_all(with_variables.join("variables")).unwrap();
        let keras = servable.warm_up_from(&with_variables, None).unwrap_err();
        let _ = std::fs::remove_dir_all(&with_variables);
        assert!(keras.to_string().contains("model.export(path)"), "{keras}");
        assert_eq!(warm(None).unwrap_err(), fallback);
        let bad = RuntimeError::Model("record 1 failed".into());
        assert_eq!(warm(Some(Recorded(Err(bad.clone())))), Err(bad));
    }
}
