//! How much request JSON may be decoded at once.
//!
//! A JSON body costs many times its size while it is decoded: a tree node of 32 bytes per
//! number and a heap array per nested list (`[[1],[1],...]` reached 40× in an audit, a
//! 100 MiB body 4 GB), then the tensors and the answer. Bodies over the quick-lane size
//! reserve their size from the budget before they are decoded and keep it until their
//! answer is written, so concurrent large requests queue (within their deadline) instead
//! of taking the process past the machine's memory.
//!
//! Bodies of at most a sixty-fourth of the budget (1 MiB of the default 64) draw on a
//! quarter of it kept for them, the others on the rest: a large request, which holds its
//! share for as long as it is decoded and run (seconds for tens of megabytes, and past its
//! deadline, since TensorFlow's run cannot be stopped), never holds up the small ones
//! behind it. A body larger than its pool takes all of it, and runs alone among its kind.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shared by every request of a REST front end (clones share it).
#[derive(Debug, Clone)]
pub struct DecodeBudget {
    small: Pool,
    large: Pool,
    /// Bodies up to this many bytes draw on `small`.
    small_body: usize,
}

/// One semaphore counted in KiB.
#[derive(Debug, Clone)]
struct Pool {
    permits: Arc<Semaphore>,
    kib: u32,
}

impl Pool {
    fn new(kib: u64) -> Pool {
        let kib = u32::try_from(kib)
            .unwrap_or(u32::MAX)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        Pool {
            permits: Arc::new(Semaphore::new(kib as usize)),
            kib,
        }
    }

    async fn reserve(&self, bytes: usize) -> OwnedSemaphorePermit {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.kib);
        Arc::clone(&self.permits)
            .acquire_many_owned(kib)
            .await
            .expect("the semaphore is never closed")
    }
}

impl DecodeBudget {
    /// A budget of `bytes` of request body (at least 1 KiB in each pool).
    pub fn new(bytes: usize) -> DecodeBudget {
        let kib = bytes.div_ceil(1024) as u64;
        let small_kib = (kib / 4).max(1);
        DecodeBudget {
            small: Pool::new(small_kib),
            large: Pool::new(kib.saturating_sub(small_kib).max(1)),
            small_body: bytes / 64,
        }
    }

    /// Waits until `bytes` of body (or all of its pool, if that is smaller) can be decoded;
    /// they are given back when the reservation is dropped.
    pub async fn reserve(&self, bytes: usize) -> OwnedSemaphorePermit {
        let pool = if bytes <= self.small_body {
            &self.small
        } else {
            &self.large
        };
        pool.reserve(bytes).await
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
    async fn reservations_share_the_budget_and_a_large_one_takes_all_of_its_pool() {
        // 256 KiB: 64 KiB for bodies up to 4 KiB, 192 KiB for larger ones.
        let budget = DecodeBudget::new(256 * 1024);
        let first = budget.reserve(120 * 1024).await;
        let second = budget.reserve(72 * 1024).await;
        assert!(waits(budget.reserve(5000)).await, "the large pool is spent");
        drop(second);
        let medium = budget.reserve(5000).await;
        drop((first, medium));
        // Larger than its pool: waits for all of it, then runs alone among large bodies.
        let all = budget.reserve(10 << 20).await;
        assert!(waits(budget.reserve(5000)).await);
        // ... but not among small ones, which have their own pool.
        let smalls = hold(&budget, 16, 4096).await;
        assert!(waits(budget.reserve(1)).await, "the small pool is spent");
        drop((all, smalls));
        let _again = budget.reserve(192 * 1024).await;
    }

    /// A large body waiting for its turn does not hold up a small one behind it.
    #[tokio::test]
    async fn small_bodies_do_not_queue_behind_large_ones() {
        let budget = DecodeBudget::new(256 * 1024);
        let running = budget.reserve(1 << 20).await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { drop(budget.reserve(1 << 20).await) }
        });
        tokio::task::yield_now().await;
        assert!(!waits(budget.reserve(4096)).await);
        drop(running);
        waiting.await.unwrap();
    }

    /// `n` reservations of `bytes` each, taken one after the other.
    async fn hold(budget: &DecodeBudget, n: usize, bytes: usize) -> Vec<OwnedSemaphorePermit> {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(budget.reserve(bytes).await);
        }
        held
    }
}
