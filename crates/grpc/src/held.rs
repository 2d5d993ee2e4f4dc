//! How many request bytes a gRPC server holds at once, over all its connections.
//!
//! A client may send up to the message size limit (2 GiB by default, as TF Serving) on each
//! of a connection's streams, over as many connections as it likes; every byte is held until
//! its message is complete and decoded. Without a bound, enough of them take the process past
//! the machine's memory, and everyone's requests die with it. So each request counts the
//! bytes it has received against one budget (from a body's second frame on, the room for
//! the whole message its prefix declares, which is taken at once) and gives them back when
//! the request's work ends; a chunk of body that would go past the budget fails its request
//! at once with
//! RESOURCE_EXHAUSTED (gRPC's answer when a server is out of a resource, which clients and
//! their retry policies know), and the rest are served as before. Failing instead of
//! waiting is what keeps this free of deadlock: requests that each hold part of the budget
//! and wait for more would never finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The budget, shared by every connection of one server.
#[derive(Debug)]
pub(crate) struct RequestBytes {
    held: AtomicUsize,
    limit: usize,
}

impl RequestBytes {
    pub(crate) fn new(limit: usize) -> Arc<RequestBytes> {
        Arc::new(RequestBytes {
            held: AtomicUsize::new(0),
            limit,
        })
    }

    /// What a request that would go past the budget gets.
    pub(crate) fn exhausted(&self) -> tonic::Status {
        tonic::Status::resource_exhausted(format!(
            "the server is receiving {} bytes of requests at once, its limit: try again once \
             some of them are answered",
            self.limit
        ))
    }

    /// An empty count for one request.
    pub(crate) fn hold(self: &Arc<RequestBytes>) -> Held {
        Held {
            budget: Arc::clone(self),
            bytes: 0,
        }
    }
}

/// The bytes one request holds; given back when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    budget: Arc<RequestBytes>,
    bytes: usize,
}

impl Held {
    /// Counts `more` bytes, or, if the lane would then hold more than its budget, counts
    /// nothing and says no.
    pub(crate) fn grow(&mut self, more: usize) -> bool {
        let limit = self.budget.limit;
        let grown = self
            .budget
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(more).filter(|&total| total <= limit)
            });
        if grown.is_ok() {
            self.bytes += more;
        }
        grown.is_ok()
    }
}

impl Held {
    /// The bytes it counts.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives back `fewer` of the bytes it counts (at most all of them).
    pub(crate) fn shrink(&mut self, fewer: usize) {
        let fewer = fewer.min(self.bytes);
        self.budget.held.fetch_sub(fewer, Ordering::AcqRel);
        self.bytes -= fewer;
    }

    /// What a request that would go past the budget gets.
    pub(crate) fn exhausted(&self) -> tonic::Status {
        self.budget.exhausted()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_share_the_budget_and_give_it_back() {
        let budget = RequestBytes::new(100);
        let mut first = budget.hold();
        let mut second = budget.hold();
        assert!(first.grow(60));
        assert!(second.grow(40));
        assert!(!second.grow(1), "the budget is spent");
        drop(first);
        assert!(second.grow(60));
        assert!(!second.grow(1));
        drop(second);
        assert_eq!(budget.held.load(Ordering::Acquire), 0);
        assert!(budget.hold().grow(100));
        assert!(!budget.hold().grow(usize::MAX), "no overflow");
    }
}
