//! One HTTP/2 connection carries many requests at once, and a connection stays on one
//! serving thread (`soma_net`): without help, a single busy channel (the official clients
//! send every request of a process on one) would keep one core busy while the other idles.
//! This layer runs each request (decoding, the RPC's work, metrics) through
//! [`soma_net::run_balanced`], which moves it to the least busy serving thread when its
//! connection's thread has clearly more in hand. The HTTP/2 framing and the encoding of
//! the answer stay on the connection's thread.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{Layer, Service};

/// The layer soma's gRPC server runs every request through (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BalanceLayer;

impl<S> Layer<S> for BalanceLayer {
    type Service = Balance<S>;

    fn layer(&self, inner: S) -> Balance<S> {
        Balance(inner)
    }
}

/// A service behind [`BalanceLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Balance<S>(S);

impl<S, R> Service<R> for Balance<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        Box::pin(soma_net::run_balanced(self.0.call(request)))
    }
}
