//! How much request JSON may be decoded at once.
//!
//! A JSON body costs many times its size while it is decoded: a tree node of 32 bytes per
//! number and a heap array per nested list (`[[1],[1],...]` reached 40× in an audit, a
//! 100 MiB body 4 GB), then the tensors and the answer. Bodies over the quick-lane size
//! reserve their size from one budget before they are decoded and keep it until their
//! answer is written, so concurrent large requests queue (within their deadline) instead
//! of taking the process past the machine's memory. A body larger than the whole budget
//! takes all of it, and runs alone.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shared by every request of a REST front end (clones share it).
#[derive(Debug, Clone)]
pub struct DecodeBudget {
    permits: Arc<Semaphore>,
    /// The budget in KiB, the semaphore's unit.
    kib: u32,
}

impl DecodeBudget {
    /// A budget of `bytes` of request body (at least 1 KiB).
    pub fn new(bytes: usize) -> DecodeBudget {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        DecodeBudget {
            permits: Arc::new(Semaphore::new(kib as usize)),
            kib,
        }
    }

    /// Waits until `bytes` of body (or the whole budget, if it is smaller) can be decoded;
    /// they are given back when the reservation is dropped.
    pub async fn reserve(&self, bytes: usize) -> OwnedSemaphorePermit {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.kib);
        Arc::clone(&self.permits)
            .acquire_many_owned(kib)
            .await
            .expect("the semaphore is never closed")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn waits(reservation: impl std::future::Future) -> bool {
        tokio::time::timeout(Duration::from_millis(50), reservation)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn reservations_share_the_budget_and_a_large_one_takes_all_of_it() {
        let budget = DecodeBudget::new(100 * 1024);
        let first = budget.reserve(60 * 1024).await;
        let second = budget.reserve(40 * 1024).await;
        assert!(waits(budget.reserve(1)).await, "the budget is spent");
        drop(second);
        let small = budget.reserve(1000).await;
        drop((first, small));
        // Larger than the budget: waits for everything, then runs alone.
        let all = budget.reserve(10 << 20).await;
        assert!(waits(budget.reserve(1)).await);
        drop(all);
        let _again = budget.reserve(100 * 1024).await;
    }
}
