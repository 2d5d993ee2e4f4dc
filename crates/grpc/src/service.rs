//! The tonic services. Each RPC resolves its servable on the async runtime (a map lookup),
//! then decodes, predicts and encodes on tokio's blocking pool so that TensorFlow never
//! blocks the reactor (models whose runs take microseconds excepted, see [`blocking`]);
//! requests share no lock, so they run in parallel.

use std::collections::BTreeSet;
use std::sync::Arc;

use soma_core::ErrorKind;
use soma_grpc_proto::tensorflow::serving::{
    self as pb, ClassificationRequest, ClassificationResponse, GetModelMetadataRequest,
    GetModelMetadataResponse, GetModelStatusRequest, GetModelStatusResponse, InferenceResult,
    MultiInferenceRequest, MultiInferenceResponse, PredictRequest, PredictResponse,
    RegressionRequest, RegressionResponse, ReloadConfigRequest, ReloadConfigResponse,
    inference_result, model_service_server::ModelService,
    prediction_service_server::PredictionService,
};
use soma_metrics::{Entrypoint, Registry};
use soma_runtime::{ConcurrencyLimit, ModelHub, Servable};
use tonic::{Request, Response, Status};

use crate::examples::{self, CLASSIFY_METHOD, REGRESS_METHOD, RunTiming};
use crate::models::{model_configs, version_status};
use crate::predict;
use crate::spec::{Target, response_spec};
use crate::status::{code_name, from_runtime, invalid, status};

/// Runs CPU-heavy work (tensor codecs, TensorFlow) off the async runtime, unless the model
/// [runs quickly](Servable::runs_quickly): then the hand-off to another thread and back would
/// cost more than the work, which runs in place.
async fn blocking<T: Send + 'static>(
    quick: bool,
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    if quick {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| status(ErrorKind::Internal, format!("prediction task failed: {e}")))?
}

/// A client's deadline that the server has already read from its `grpc-timeout` header,
/// handed to the service in the request's extensions (the lane does) so that the header is
/// parsed once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub(crate) std::time::Instant);

/// The client's deadline: the one the server read, or from the `grpc-timeout` header.
fn deadline<T>(request: &Request<T>) -> Option<std::time::Instant> {
    if let Some(Deadline(at)) = request.extensions().get::<Deadline>() {
        return Some(*at);
    }
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    std::time::Instant::now().checked_add(parse_timeout(value)?)
}

/// A `grpc-timeout` value (`<digits><H|M|S|m|u|n>`) as a duration.
pub(crate) fn parse_timeout(value: &str) -> Option<std::time::Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => std::time::Duration::from_secs(n.saturating_mul(3600)),
        "M" => std::time::Duration::from_secs(n.saturating_mul(60)),
        "S" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_millis(n),
        "u" => std::time::Duration::from_micros(n),
        "n" => std::time::Duration::from_nanos(n),
        _ => return None,
    };
    Some(timeout)
}

/// `tensorflow.serving.PredictionService` over a [`ModelHub`].
#[derive(Clone)]
pub(crate) struct Predictions {
    pub(crate) hub: Arc<dyn ModelHub>,
    pub(crate) max_response_bytes: usize,
    pub(crate) metrics: Registry,
    /// Permits for [`GrpcOptions::max_concurrent`](crate::GrpcOptions::max_concurrent).
    pub(crate) limit: Option<ConcurrencyLimit>,
    /// [`GrpcOptions::check_signature_method_names`](crate::GrpcOptions::check_signature_method_names).
    pub(crate) check_method_names: bool,
}

impl std::fmt::Debug for Predictions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictions")
            .field("models", &self.hub.models())
            .finish()
    }
}

/// A Classify- or Regress-style run: serialized examples in, a typed result out.
type ExamplesRun<R> =
    fn(&Servable, Option<&str>, Vec<Vec<u8>>, bool, RunTiming) -> Result<(String, R), Status>;

impl Predictions {
    /// Awaits an inference RPC and records it in the request metrics under `api` (TF
    /// Serving's label: `Predict`, `Classify`, ...) and the model the request named.
    async fn recorded<T>(
        &self,
        api: &'static str,
        model: String,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let started = std::time::Instant::now();
        // Held until the RPC's work is done (or the client gives up on it).
        let _permit = soma_runtime::permit(self.limit.as_ref()).await;
        let result = call.await;
        let status = result
            .as_ref()
            .map_or_else(|s| code_name(s.code()), |_| "OK");
        // A success names a served model; only a failure may name anything at all.
        let model = match result {
            Ok(_) => model.as_str(),
            Err(_) => self.hub.metrics_name(&model),
        };
        self.metrics
            .record_request(Entrypoint::Grpc, model, api, status, started.elapsed());
        result.map(Response::new)
    }

    // The inference RPCs' work; the `PredictionService` methods below wrap each in
    // `recorded`.

    async fn serve_predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<PredictResponse, Status> {
        let deadline = deadline(&request);
        let request = request.into_inner();
        let target = Target::from_spec(request.model_spec.as_ref())?;
        let servable = target.resolve(self.hub.as_ref())?;
        let limit = self.max_response_bytes;
        let check = self.check_method_names;
        // A quick model answers here, as REST does, in a batch formed on the async threads
        // if batching is on: see `Servable::may_answer_now`.
        if servable.may_answer_now() {
            let response = predict::predict_in_place(
                &servable,
                &target,
                request.inputs,
                &request.output_filter,
                check,
            )
            .await?;
            check_size(&response, limit)?;
            return Ok(response);
        }
        blocking(servable.runs_quickly(), move || {
            let response = predict::predict(
                &servable,
                &target,
                request.inputs,
                &request.output_filter,
                deadline,
                check,
            )?;
            check_size(&response, limit)?;
            Ok(response)
        })
        .await
    }

    /// Classify and Regress: resolves the model, runs `run` on the request's examples and
    /// returns the response's model spec (with the signature used) and result.
    async fn run_examples<R: Send + 'static>(
        &self,
        spec: Option<&pb::ModelSpec>,
        input: Option<pb::Input>,
        run: ExamplesRun<R>,
    ) -> Result<(pb::ModelSpec, R), Status> {
        let target = Target::from_spec(spec)?;
        let servable = target.resolve(self.hub.as_ref())?;
        let check = self.check_method_names;
        blocking(servable.runs_quickly(), move || {
            let examples = examples::serialize_input(input.as_ref())?;
            let signature = target.signature.as_deref();
            let (key, result) = run(&servable, signature, examples, check, RunTiming::Recorded)?;
            Ok((response_spec(&target.name, &servable, Some(&key)), result))
        })
        .await
    }

    async fn serve_classify(
        &self,
        request: ClassificationRequest,
    ) -> Result<ClassificationResponse, Status> {
        let (model_spec, result) = self
            .run_examples(
                request.model_spec.as_ref(),
                request.input,
                examples::classify,
            )
            .await?;
        Ok(ClassificationResponse {
            model_spec: Some(model_spec),
            result: Some(result),
        })
    }

    async fn serve_regress(
        &self,
        request: RegressionRequest,
    ) -> Result<RegressionResponse, Status> {
        let (model_spec, result) = self
            .run_examples(
                request.model_spec.as_ref(),
                request.input,
                examples::regress,
            )
            .await?;
        Ok(RegressionResponse {
            model_spec: Some(model_spec),
            result: Some(result),
        })
    }

    async fn serve_multi_inference(
        &self,
        request: MultiInferenceRequest,
    ) -> Result<MultiInferenceResponse, Status> {
        let tasks = check_tasks(&request)?;
        // Every task runs on the version the first task resolves to, as in TF Serving.
        let servable = tasks[0].0.resolve(self.hub.as_ref())?;
        let check = self.check_method_names;
        blocking(servable.runs_quickly(), move || {
            multi_inference(&servable, tasks, request.input.as_ref(), check)
        })
        .await
    }
}

/// The model a request names ("" if it names none), for the metrics.
fn model_name(spec: Option<&pb::ModelSpec>) -> String {
    spec.map(|spec| spec.name.clone()).unwrap_or_default()
}

#[tonic::async_trait]
impl PredictionService for Predictions {
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        let model = model_name(request.get_ref().model_spec.as_ref());
        self.recorded("Predict", model, self.serve_predict(request))
            .await
    }

    async fn get_model_metadata(
        &self,
        request: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let target = Target::from_spec(request.model_spec.as_ref())?;
        predict::check_metadata_request(&request)?;
        let servable = target.resolve(self.hub.as_ref())?;
        Ok(Response::new(predict::metadata(&target.name, &servable)))
    }

    async fn classify(
        &self,
        request: Request<ClassificationRequest>,
    ) -> Result<Response<ClassificationResponse>, Status> {
        let request = request.into_inner();
        let model = model_name(request.model_spec.as_ref());
        self.recorded("Classify", model, self.serve_classify(request))
            .await
    }

    async fn regress(
        &self,
        request: Request<RegressionRequest>,
    ) -> Result<Response<RegressionResponse>, Status> {
        let request = request.into_inner();
        let model = model_name(request.model_spec.as_ref());
        self.recorded("Regress", model, self.serve_regress(request))
            .await
    }

    async fn multi_inference(
        &self,
        request: Request<MultiInferenceRequest>,
    ) -> Result<Response<MultiInferenceResponse>, Status> {
        let request = request.into_inner();
        let first = request.tasks.first().and_then(|t| t.model_spec.as_ref());
        let model = model_name(first);
        self.recorded("MultiInference", model, self.serve_multi_inference(request))
            .await
    }
}

/// tonic would fail an oversized response with a generic OUT_OF_RANGE after the work is
/// done; saying why, with the code a C++ gRPC server uses, is more useful.
fn check_size(response: &impl prost::Message, limit: usize) -> Result<(), Status> {
    let size = response.encoded_len();
    if size > limit {
        return Err(status(
            ErrorKind::ResourceExhausted,
            format!(
                "the response is {size} bytes, more than the server's maximum message size of \
                 {limit} bytes; request fewer or smaller outputs (output_filter, a smaller batch)"
            ),
        ));
    }
    Ok(())
}

/// Each task's target and method, after TF Serving's consistency checks.
pub(crate) fn check_tasks(
    request: &MultiInferenceRequest,
) -> Result<Vec<(Target, String)>, Status> {
    if request.tasks.is_empty() {
        return Err(invalid("MultiInferenceRequest has no tasks"));
    }
    let mut targets = Vec::with_capacity(request.tasks.len());
    let mut signatures = BTreeSet::new();
    for task in &request.tasks {
        let target = Target::from_spec(task.model_spec.as_ref())?;
        if target.name != request.tasks[0].model_spec.as_ref().map_or("", |s| &s.name) {
            return Err(invalid(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
            ));
        }
        let signature = target.signature.clone().unwrap_or_default();
        if !signatures.insert(signature.clone()) {
            return Err(invalid(format!(
                "Duplicate evaluation of signature: {signature}"
            )));
        }
        if task.method_name != CLASSIFY_METHOD && task.method_name != REGRESS_METHOD {
            return Err(invalid(format!(
                "Unsupported signature method_name: {}",
                task.method_name
            )));
        }
        targets.push((target, task.method_name.clone()));
    }
    Ok(targets)
}

/// Runs every task of a MultiInference on `servable`. As in TF Serving, the runs are not
/// timed in `runtime_latency`, and the request's examples are counted in
/// `request_example_counts` once every task has answered (requests and warm-up records
/// alike).
pub(crate) fn multi_inference(
    servable: &Servable,
    tasks: Vec<(Target, String)>,
    input: Option<&pb::Input>,
    check_method_names: bool,
) -> Result<MultiInferenceResponse, Status> {
    let examples = examples::serialize_input(input)?;
    let count = examples.len();
    let check = check_method_names;
    let untimed = RunTiming::Unrecorded;
    let mut results = Vec::with_capacity(tasks.len());
    for (target, method) in tasks {
        let signature = target.signature.as_deref();
        let (key, result) = if method == CLASSIFY_METHOD {
            let (key, r) =
                examples::classify(servable, signature, examples.clone(), check, untimed)?;
            (key, inference_result::Result::ClassificationResult(r))
        } else {
            let (key, r) =
                examples::regress(servable, signature, examples.clone(), check, untimed)?;
            (key, inference_result::Result::RegressionResult(r))
        };
        results.push(InferenceResult {
            model_spec: Some(response_spec(&target.name, servable, Some(&key))),
            result: Some(result),
        });
    }
    servable.record_example_count(count);
    Ok(MultiInferenceResponse { results })
}

/// `tensorflow.serving.ModelService` over a [`ModelHub`].
#[derive(Clone)]
pub(crate) struct Models {
    pub(crate) hub: Arc<dyn ModelHub>,
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Models")
            .field("models", &self.hub.models())
            .finish()
    }
}

#[tonic::async_trait]
impl ModelService for Models {
    async fn get_model_status(
        &self,
        request: Request<GetModelStatusRequest>,
    ) -> Result<Response<GetModelStatusResponse>, Status> {
        let spec = request.get_ref().model_spec.as_ref();
        let target = Target::from_spec(spec)?;
        // No version in the request: every version of the model.
        let version = spec
            .and_then(|s| s.version_choice.as_ref())
            .map(|_| &target.version);
        let versions = self
            .hub
            .status(&target.name, version)
            .map_err(|e| from_runtime(&e))?;
        Ok(Response::new(GetModelStatusResponse {
            model_version_status: versions.iter().map(version_status).collect(),
        }))
    }

    async fn handle_reload_config_request(
        &self,
        request: Request<ReloadConfigRequest>,
    ) -> Result<Response<ReloadConfigResponse>, Status> {
        let configs = model_configs(request.into_inner().config)?;
        self.hub.reload(configs).await.map_err(|e| {
            tracing::warn!(error = %e, "gRPC model config reload failed");
            from_runtime(&e)
        })?;
        Ok(Response::new(ReloadConfigResponse {
            status: Some(pb::StatusProto {
                error_code: grpc_code_ok(),
                error_message: String::new(),
            }),
            metric: Vec::new(),
        }))
    }
}

fn grpc_code_ok() -> i32 {
    tonic::Code::Ok as i32
}

#[cfg(test)]
mod deadline_tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn with_timeout(value: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("grpc-timeout", value.parse().unwrap());
        request
    }

    #[test]
    fn grpc_timeout_header_becomes_a_deadline() {
        let now = Instant::now();
        let d = deadline(&with_timeout("250m")).unwrap();
        assert!(d >= now + Duration::from_millis(250) && d < now + Duration::from_secs(2));
        let d = deadline(&with_timeout("2S")).unwrap();
        assert!(d >= now + Duration::from_secs(2));
        assert!(deadline(&with_timeout("10x")).is_none());
        assert!(deadline(&Request::new(())).is_none());
        // A deadline the server already read wins over the header.
        let mut read = with_timeout("2S");
        read.extensions_mut().insert(Deadline(now));
        assert_eq!(deadline(&read), Some(now));
    }
}
