//! TF Serving's SavedModel warm-up: `assets.extra/tf_serving_warmup_requests` in a version's
//! folder, a TFRecord file of `PredictionLog`s, replayed before the version serves so that
//! its first real requests do not pay for TensorFlow's lazy initialisation.
//!
//! As in TF Serving: at most 1,000 records; Predict, Classify, Regress and MultiInference
//! logs are replayed (each `iterations` times) through the same code as live gRPC requests,
//! with the record's signature and the model name ignored; any other log type, a corrupt
//! record or a failing request fails the load, which leaves the previous version serving.

use std::path::Path;

use prost::Message;
use soma_grpc_proto::tensorflow::serving::prediction_log::LogType;
use soma_grpc_proto::tensorflow::serving::{ModelSpec, PredictionLog};
use soma_runtime::{RecordedWarmup, RuntimeError, Servable, VersionSelector};
use tonic::Status;

use crate::examples::{self, RunTiming::Recorded};
use crate::predict::predict;
use crate::service::{check_tasks, multi_inference};
use crate::spec::Target;
use crate::status::invalid;
use crate::tfrecord;

/// Where a version keeps its warm-up requests, relative to its folder.
pub const WARMUP_FILE: &str = "assets.extra/tf_serving_warmup_requests";
/// TF Serving's limit on warm-up records.
pub const MAX_WARMUP_RECORDS: usize = 1000;

/// Replays [`WARMUP_FILE`] (TF Serving's `--enable_model_warmup`).
#[derive(Debug, Clone)]
pub struct TfServingWarmup {
    /// How often each record runs (TF Serving's `--num_request_iterations_for_warmup`).
    pub iterations: u32,
    /// Check signatures' method names as the live server does
    /// ([`GrpcOptions::check_signature_method_names`](crate::GrpcOptions::check_signature_method_names)).
    pub check_method_names: bool,
}

impl Default for TfServingWarmup {
    fn default() -> TfServingWarmup {
        TfServingWarmup {
            iterations: 1,
            check_method_names: false,
        }
    }
}

impl RecordedWarmup for TfServingWarmup {
    fn replay(
        &self,
        servable: &Servable,
        version_dir: &Path,
    ) -> Result<Option<usize>, RuntimeError> {
        let path = version_dir.join(WARMUP_FILE);
        let fail = |why: String| {
            RuntimeError::Model(format!(
                "model '{}' version {}: warm-up file {}: {why}",
                servable.model(),
                servable.version(),
                path.display()
            ))
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fail(format!("cannot be read: {e}"))),
        };
        let records = tfrecord::records(&bytes, MAX_WARMUP_RECORDS).map_err(fail)?;
        if records.is_empty() {
            return Err(fail("holds no records".into()));
        }
        for (i, record) in records.iter().enumerate() {
            let log = PredictionLog::decode(*record)
                .map_err(|e| fail(format!("record {}: not a PredictionLog: {e}", i + 1)))?;
            for _ in 0..self.iterations.max(1) {
                replay_one(servable, &log, self.check_method_names)
                    .map_err(|e| fail(format!("record {} failed: {}", i + 1, e.message())))?;
            }
        }
        Ok(Some(records.len()))
    }
}

/// Runs one logged request on `servable` as the live gRPC service would.
fn replay_one(servable: &Servable, log: &PredictionLog, check: bool) -> Result<(), Status> {
    let missing = || invalid("the log holds no request");
    let unsupported = |log_type: &str| {
        invalid(format!(
            "{log_type} is not supported for warm-up (only predict, classify, regress and \
             multi_inference logs are)"
        ))
    };
    match &log.log_type {
        Some(LogType::PredictLog(log)) => {
            let request = log.request.as_ref().ok_or_else(missing)?;
            let target = target(request.model_spec.as_ref());
            // Cloned: a record is replayed `iterations` times.
            predict(
                servable,
                &target,
                request.inputs.clone(),
                &request.output_filter,
                None,
                check,
            )
            .map(drop)
        }
        Some(LogType::ClassifyLog(log)) => {
            let request = log.request.as_ref().ok_or_else(missing)?;
            let examples = examples::serialize_input(request.input.as_ref())?;
            let signature = target(request.model_spec.as_ref()).signature;
            examples::classify(servable, signature.as_deref(), examples, check, Recorded).map(drop)
        }
        Some(LogType::RegressLog(log)) => {
            let request = log.request.as_ref().ok_or_else(missing)?;
            let examples = examples::serialize_input(request.input.as_ref())?;
            let signature = target(request.model_spec.as_ref()).signature;
            examples::regress(servable, signature.as_deref(), examples, check, Recorded).map(drop)
        }
        Some(LogType::MultiInferenceLog(log)) => {
            let request = log.request.as_ref().ok_or_else(missing)?;
            let tasks = check_tasks(request)?;
            multi_inference(servable, tasks, request.input.as_ref(), check).map(drop)
        }
        Some(LogType::SessionRunLog(_)) => Err(unsupported("session_run_log")),
        Some(LogType::PredictStreamedLog(_)) => Err(unsupported("predict_streamed_log")),
        None => Err(invalid("the PredictionLog has no log type")),
    }
}

/// The record's signature; its model name and version are ignored (the record belongs to
/// the version whose folder holds it).
fn target(spec: Option<&ModelSpec>) -> Target {
    Target {
        name: String::new(),
        version: VersionSelector::Latest,
        signature: spec
            .map(|s| s.signature_name.clone())
            .filter(|s| !s.is_empty()),
    }
}
