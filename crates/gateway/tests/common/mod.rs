//! Set-up shared by the gateway's in-process tests.

use std::sync::Arc;

use soma_gateway::{ApiRoute, ApiState, Gateway, GatewayConfig, Readiness};
use soma_jobs::{ApiName, MemoryBackend};

/// A gateway for one API `iris` at `/team/iris` over the memory backend, with a 64-byte
/// body limit, its readiness set to `state`.
pub(crate) fn gateway(state: ApiState) -> Arc<Gateway> {
    let readiness = Readiness::new();
    readiness.set("iris", state);
    Arc::new(Gateway {
        config: GatewayConfig {
            routes: vec![ApiRoute {
                api: ApiName::parse("iris").unwrap(),
                endpoint: "/team/iris".into(),
            }],
            body_limit: 64,
        },
        backend: MemoryBackend::backend(),
        readiness,
        metrics: soma_metrics::Registry::new(),
        work_available: Arc::default(),
    })
}
