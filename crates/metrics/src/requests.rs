//! TF Serving's per-request metrics, recorded the same way by the REST and gRPC front ends,
//! so one dashboard sees both.

use std::time::Duration;

use crate::Registry;

/// Counts inference requests by model, API, entrypoint and status (TF Serving's name).
pub const REQUEST_COUNT: &str = ":tensorflow:serving:request_count";
/// Latency of successful inference requests by model, API and entrypoint, in microseconds
/// with TF Serving's buckets (its name, unit and buckets).
pub const REQUEST_LATENCY: &str = ":tensorflow:serving:request_latency";

/// Where a request came in: TF Serving's `entrypoint` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entrypoint {
    Rest,
    Grpc,
}

impl Entrypoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Entrypoint::Rest => "REST",
            Entrypoint::Grpc => "GRPC",
        }
    }
}

impl Registry {
    /// Counts one inference request and, if it succeeded, records its latency (TF Serving
    /// records latency for successful requests only). `api` is the method as TF Serving labels
    /// it (`predict` on REST, `Predict` on gRPC); `status` is the gRPC code name, `OK` on
    /// success.
    pub fn record_request(
        &self,
        entrypoint: Entrypoint,
        model: &str,
        api: &str,
        status: &str,
        latency: Duration,
    ) {
        let entrypoint = entrypoint.as_str();
        // The names and label names are constants known to be valid, and a count of 1 or a
        // latency are finite: these updates cannot fail.
        let _ = self.counter_add(
            REQUEST_COUNT,
            "The number of inference requests, by model, API, entrypoint and status.",
            &[
                ("model_name", model),
                ("API", api),
                ("entrypoint", entrypoint),
                ("status", status),
            ],
            1.0,
        );
        if status == "OK" {
            let _ = self.observe_in(
                REQUEST_LATENCY,
                "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
                crate::tf_serving_latency_buckets(),
                &[
                    ("model_name", model),
                    ("API", api),
                    ("entrypoint", entrypoint),
                ],
                crate::micros(latency),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_status_and_timed_when_they_succeed() {
        let metrics = Registry::new();
        let ms = Duration::from_millis(1);
        metrics.record_request(Entrypoint::Grpc, "iris", "Predict", "OK", ms);
        metrics.record_request(Entrypoint::Grpc, "iris", "Predict", "OK", ms);
        metrics.record_request(Entrypoint::Grpc, "iris", "Predict", "NOT_FOUND", ms);
        metrics.record_request(Entrypoint::Rest, "iris", "predict", "OK", ms);
        let count = |entrypoint: &str, api: &str, status: &str| {
            metrics.value(
                REQUEST_COUNT,
                &[
                    ("model_name", "iris"),
                    ("API", api),
                    ("entrypoint", entrypoint),
                    ("status", status),
                ],
            )
        };
        assert_eq!(count("GRPC", "Predict", "OK"), Some(2.0));
        assert_eq!(count("GRPC", "Predict", "NOT_FOUND"), Some(1.0));
        assert_eq!(count("REST", "predict", "OK"), Some(1.0));
        let timed = |entrypoint: &str, api: &str| {
            metrics.value(
                REQUEST_LATENCY,
                &[
                    ("model_name", "iris"),
                    ("API", api),
                    ("entrypoint", entrypoint),
                ],
            )
        };
        // A histogram's value is its count: the failed request was not timed.
        assert_eq!(timed("GRPC", "Predict"), Some(2.0));
        assert_eq!(timed("REST", "predict"), Some(1.0));
    }
}

#[cfg(test)]
mod latency_tests {
    use super::*;

    #[test]
    fn latency_is_in_microseconds_with_tf_servings_buckets() {
        let buckets = crate::tf_serving_latency_buckets();
        assert_eq!(buckets.len(), 33);
        assert_eq!(&buckets[..4], &[10.0, 18.0, 32.4, 58.32]);
        let metrics = Registry::new();
        metrics.record_request(
            Entrypoint::Rest,
            "iris",
            "predict",
            "OK",
            Duration::from_micros(25),
        );
        let page = metrics.render();
        let series = r#"{API="predict",entrypoint="REST",model_name="iris""#;
        for line in [
            format!("{REQUEST_LATENCY}_bucket{series},le=\"18\"}} 0"),
            format!("{REQUEST_LATENCY}_bucket{series},le=\"32.4\"}} 1"),
            format!("{REQUEST_LATENCY}_bucket{series},le=\"+Inf\"}} 1"),
            format!("{REQUEST_LATENCY}_sum{series}}} 25"),
        ] {
            assert!(page.contains(&line), "{line} not in\n{page}");
        }
    }
}
