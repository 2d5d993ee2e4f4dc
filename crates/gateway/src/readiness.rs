use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Where an API's handler is in its start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiState {
    /// Models loading or `Handler.__init__` running.
    Starting,
    Ready,
    /// Start-up failed, or waits for something to be fixed (a model none of whose versions
    /// loads); the message says why. Not ready.
    Failed(String),
}

/// The start-up state of every API, shared by the workers (writers) and `/readyz` (reader).
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    states: Arc<RwLock<BTreeMap<String, ApiState>>>,
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness::default()
    }

    pub fn set(&self, api: &str, state: ApiState) {
        let mut states = self.states.write().unwrap_or_else(|e| e.into_inner());
        states.insert(api.to_string(), state);
    }

    pub fn get(&self, api: &str) -> Option<ApiState> {
        let states = self.states.read().unwrap_or_else(|e| e.into_inner());
        states.get(api).cloned()
    }

    /// Every API and its state.
    pub fn snapshot(&self) -> BTreeMap<String, ApiState> {
        self.states
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True when there is at least one API and every API is ready.
    pub fn all_ready(&self) -> bool {
        let states = self.states.read().unwrap_or_else(|e| e.into_inner());
        !states.is_empty() && states.values().all(|s| *s == ApiState::Ready)
    }
}
