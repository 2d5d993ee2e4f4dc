//! Waiting on a client for at most the idle timeout: [`within`] for reads; writes go
//! through [`soma_net::WriteDeadline`].

use std::future::Future;
use std::time::Duration;

/// `wait`, or `None` if it is still waiting after `timeout` (`None`: no limit). tokio sets
/// the timer on the first poll only if `wait` is not ready, which is the rule for a busy
/// connection's next bytes.
pub(crate) async fn within<F: Future>(timeout: Option<Duration>, wait: F) -> Option<F::Output> {
    match timeout {
        None => Some(wait.await),
        Some(timeout) => tokio::time::timeout(timeout, wait).await.ok(),
    }
}
