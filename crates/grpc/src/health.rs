//! `grpc.health.v1.Health` (TF Serving's `--enable_grpc_healthcheck_service`), for
//! Kubernetes' gRPC probes and `grpc_health_probe`.
//!
//! The server as a whole (service `""`) and its two services report one status, by the
//! server's [`HealthReport`]. Check on an unknown service is `NOT_FOUND`, as the protocol
//! asks; Watch sends the status at once and again whenever it changes (polled every second).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use soma_grpc_proto::grpc::health::v1::health_check_response::ServingStatus;
use soma_grpc_proto::grpc::health::v1::health_server::Health;
use soma_grpc_proto::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};
use soma_runtime::ModelHub;
use tonic::{Request, Response, Status};

/// The services whose health is reported, besides the server's (`""`).
const SERVICES: [&str; 2] = [
    "tensorflow.serving.PredictionService",
    "tensorflow.serving.ModelService",
];
/// How often Watch looks at the models again.
const WATCH_POLL: Duration = Duration::from_secs(1);

/// What the health service reports as `SERVING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthReport {
    /// Always, while the server runs: TF Serving's (gRPC's default health service), for a
    /// server that starts listening only after its models loaded. A model that fails later
    /// (a reload that adds a broken one) then does not take every model's traffic away, as
    /// a load balancer or a Kubernetes probe would on `NOT_SERVING`.
    WhileRunning,
    /// Only while every model has an `AVAILABLE` version ([`ModelHub::is_ready`], as REST's
    /// `/v2/health/ready`), for a server whose port opens while models may still load.
    WhenModelsAvailable,
}

#[derive(Clone)]
pub(crate) struct HealthService {
    pub(crate) hub: Arc<dyn ModelHub>,
    pub(crate) report: HealthReport,
}

impl HealthService {
    /// `None`: the service is unknown.
    fn status(&self, service: &str) -> Option<ServingStatus> {
        if !service.is_empty() && !SERVICES.contains(&service) {
            return None;
        }
        let serving = match self.report {
            HealthReport::WhileRunning => true,
            HealthReport::WhenModelsAvailable => self.hub.is_ready(),
        };
        Some(match serving {
            true => ServingStatus::Serving,
            false => ServingStatus::NotServing,
        })
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.status(&service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!("unknown service: {service}"))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let service = request.into_inner().service;
        let health = self.clone();
        // State: the status last sent (None before the first message).
        let updates = futures::stream::unfold(None, move |sent| {
            let (health, service) = (health.clone(), service.clone());
            async move {
                loop {
                    let now = health
                        .status(&service)
                        .unwrap_or(ServingStatus::ServiceUnknown);
                    if sent != Some(now) {
                        return Some((Ok(response(now)), Some(now)));
                    }
                    tokio::time::sleep(WATCH_POLL).await;
                }
            }
        });
        Ok(Response::new(Box::pin(updates)))
    }
}
