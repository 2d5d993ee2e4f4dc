//! Running a redelivered workload alone in the process.
//!
//! Every delivery counts towards the backend's `max_attempts`, and a crash costs a delivery
//! to every workload the process holds (running, prefetched or waiting to run). A redelivered
//! workload may be the one that crashed the process, so it is claimed and run with nothing
//! else held: claims stop, the workloads already held finish, it is claimed and runs, and
//! claims resume. A payload that crashes the process on every delivery then uses up its own
//! deliveries, not those of the workloads of other worker slots and APIs around it.
//!
//! The mechanism is a fair read-write lock shared by the process' pools: a held workload
//! keeps a read guard from its claim until its outcome is stored. Claims under a read guard
//! take first deliveries only ([`Deliveries::FirstOnly`]); when the queue answers that a
//! redelivery waits, the pool is *recovering*: its claims take the write guard, one at a
//! time, and any delivery, until one brings a fresh workload or none. So two redelivered
//! workloads are never held together, even when their leases run out at the same moment
//! (a process restarted before the leases of the crashed one ran out).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use soma_jobs::{Claimed, Deliveries, Popped};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// What keeps redelivered workloads apart. Pools given clones of one value run a redelivered
/// workload alone among all of them: a process gives the same one to all of its pools (the
/// default is a new one, as for a process of its own).
#[derive(Debug, Clone, Default)]
pub struct CrashIsolation {
    lock: Arc<RwLock<()>>,
}

impl CrashIsolation {
    /// The view of one pool, which claims from one queue and looks again every `recheck`
    /// whether a redelivery it waits to claim alone is still there.
    pub(crate) fn for_pool(&self, recheck: Duration) -> PoolIsolation {
        PoolIsolation {
            lock: Arc::clone(&self.lock),
            recheck,
            // A restart after a crash needs no recovery of its own: the workloads the crashed
            // process held come back as redeliveries, which first-delivery claims leave.
            recovering: AtomicBool::new(false),
        }
    }
}

/// A pool's claims under its process' [`CrashIsolation`].
pub(crate) struct PoolIsolation {
    lock: Arc<RwLock<()>>,
    recheck: Duration,
    recovering: AtomicBool,
}

impl fmt::Debug for PoolIsolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolIsolation")
            .field("recovering", &self.recovering())
            .finish_non_exhaustive()
    }
}

/// Whether an earlier delivery of this workload ended without an outcome: the process
/// crashed (or was killed) while it ran or was held, or its lease ran out.
pub(crate) fn is_redelivery(claimed: &Claimed) -> bool {
    claimed.record.attempts > 1
}

/// A held workload's place under the lock; dropped once its outcome is stored.
#[derive(Debug)]
pub(crate) enum Hold {
    /// Beside other fresh workloads.
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    /// Alone in the process.
    Alone(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
    /// A redelivered workload that must be [`PoolIsolation::alone`] before it runs.
    Waiting,
}

impl Hold {
    pub(crate) fn is_waiting(&self) -> bool {
        matches!(self, Hold::Waiting)
    }
}

impl PoolIsolation {
    pub(crate) fn recovering(&self) -> bool {
        self.recovering.load(Ordering::Acquire)
    }

    fn set_recovering(&self, recovering: bool) {
        self.recovering.store(recovering, Ordering::Release);
    }

    /// Claims a workload with `claim` (called with the deliveries it may take) for a worker
    /// slot that holds nothing else (a slot's own held workloads would keep it from ever
    /// getting the write guard). While recovering the claim waits until nothing else is
    /// held; a redelivered workload it brings keeps that, a fresh one (or none) ends the
    /// recovery. So does finding, at one of its looks every `recheck` while it waits, that
    /// no redelivery waits any more (a worker of another process took it).
    pub(crate) async fn claim<E, Fut>(
        &self,
        mut claim: impl FnMut(Deliveries) -> Fut,
    ) -> Result<Option<(Claimed, Hold)>, E>
    where
        Fut: Future<Output = Result<Popped<Claimed>, E>>,
    {
        loop {
            if self.recovering() {
                let alone = Arc::clone(&self.lock).write_owned();
                if let Ok(alone) = tokio::time::timeout(self.recheck, alone).await {
                    return Ok(match claim(Deliveries::Any).await?.into_item() {
                        Some(claimed) if is_redelivery(&claimed) => {
                            Some((claimed, Hold::Alone(alone)))
                        }
                        fresh_or_none => {
                            self.set_recovering(false);
                            fresh_or_none.map(|claimed| (claimed, Hold::Shared(alone.downgrade())))
                        }
                    });
                }
                // Still waiting for the held workloads to finish: another process' worker
                // may have taken the redelivery meanwhile, and then there is nothing to wait
                // for (its own long-running workloads must not stall this process' claims).
                let Ok(shared) = Arc::clone(&self.lock).try_read_owned() else {
                    continue;
                };
                match claim(Deliveries::FirstOnly).await? {
                    Popped::RedeliveryWaiting => continue,
                    popped => {
                        self.set_recovering(false);
                        return Ok(popped.into_item().map(|claimed| self.held(claimed, shared)));
                    }
                }
            }
            let shared = Arc::clone(&self.lock).read_owned().await;
            // The wait may have been for a redelivered workload, which starts a recovery.
            if self.recovering() {
                continue;
            }
            match claim(Deliveries::FirstOnly).await? {
                Popped::Item(claimed) => return Ok(Some(self.held(claimed, shared))),
                Popped::Empty => return Ok(None),
                Popped::RedeliveryWaiting => self.set_recovering(true),
            }
        }
    }

    /// Claims ahead for a slot that holds other workloads: first deliveries only, and never
    /// while recovering or while a redelivered workload waits for or has the process to
    /// itself (`None`, without claiming). A redelivery waiting in the queue starts a
    /// recovery, which the slot's next [`claim`](Self::claim) makes once its held workloads
    /// have run.
    ///
    /// It never waits for the lock: the slot may hold a workload claimed ahead after this
    /// one, whose read guard a waiting redelivered workload waits for, and the slot runs this
    /// one first.
    pub(crate) async fn claim_ahead<E, Fut>(
        &self,
        claim: impl FnOnce(Deliveries) -> Fut,
    ) -> Result<Option<(Claimed, Hold)>, E>
    where
        Fut: Future<Output = Result<Popped<Claimed>, E>>,
    {
        if self.recovering() {
            return Ok(None);
        }
        let Ok(shared) = Arc::clone(&self.lock).try_read_owned() else {
            return Ok(None);
        };
        Ok(match claim(Deliveries::FirstOnly).await? {
            Popped::Item(claimed) => Some(self.held(claimed, shared)),
            Popped::Empty => None,
            Popped::RedeliveryWaiting => {
                self.set_recovering(true);
                None
            }
        })
    }

    /// A workload claimed beside others: a redelivered one starts a recovery and waits.
    fn held(&self, claimed: Claimed, shared: OwnedRwLockReadGuard<()>) -> (Claimed, Hold) {
        if is_redelivery(&claimed) {
            self.set_recovering(true);
            return (claimed, Hold::Waiting);
        }
        (claimed, Hold::Shared(shared))
    }

    /// Waits until no other workload is held, for a redelivered one that is
    /// [`Hold::Waiting`]; its slot must hold nothing else.
    pub(crate) async fn alone(&self) -> Hold {
        Hold::Alone(Arc::clone(&self.lock).write_owned().await)
    }
}
