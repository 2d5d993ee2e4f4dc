/// Which half of soma a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `soma serve`: gateway and workers in one process.
    Both,
    /// `soma gateway`: accepts and answers HTTP requests; never loads Python or TensorFlow.
    Gateway,
    /// `soma worker`: claims workloads and runs the handlers; HTTP only for health and metrics.
    Worker,
}

impl Role {
    pub fn runs_gateway(self) -> bool {
        matches!(self, Role::Both | Role::Gateway)
    }

    pub fn runs_workers(self) -> bool {
        matches!(self, Role::Both | Role::Worker)
    }
}
