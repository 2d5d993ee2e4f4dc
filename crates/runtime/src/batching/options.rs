//! Batching parameters, named and defaulted as TF Serving's `BatchingParameters`.

use std::time::Duration;

/// How long the first request of a batch waits for others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchWindow {
    /// Wait up to this long (TF Serving's `batch_timeout_micros`; zero: never wait).
    Fixed(Duration),
    /// Never wait on a timer: a batch runs as soon as a batch thread is free, and takes every
    /// compatible request that arrived while the threads were busy. A lone request at light
    /// load runs at once; under load, batches grow with the arrival rate.
    Auto,
}

/// Server-side batching of one model version's predictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOptions {
    /// Most rows in one run (TF Serving: `max_batch_size`, default 1000, its scheduler's
    /// `input_batch_size_limit`).
    pub max_batch_size: usize,
    pub window: BatchWindow,
    /// Bound of the waiting queue, in batches of `max_batch_size` rows (default 10). A
    /// request that would exceed it fails at once with RESOURCE_EXHAUSTED.
    pub max_enqueued_batches: usize,
    /// Batches of this model that may run at the same time (default: the number of cores).
    pub num_batch_threads: usize,
    /// If set, a batch is padded up to the smallest of these sizes that holds it (with
    /// copies of its first row, whose outputs are dropped). Increasing; the last one must
    /// equal `max_batch_size`.
    pub allowed_batch_sizes: Vec<usize>,
    /// Requests whose inputs differ in dims other than the first are padded to the largest
    /// (new cells take the tensor's first element) so they can share a batch. Callers then
    /// get outputs of the padded size, as with TF Serving.
    pub pad_variable_length_inputs: bool,
}

impl Default for BatchOptions {
    fn default() -> BatchOptions {
        BatchOptions {
            max_batch_size: 1000,
            window: BatchWindow::Fixed(Duration::ZERO),
            max_enqueued_batches: 10,
            num_batch_threads: std::thread::available_parallelism().map_or(1, usize::from),
            allowed_batch_sizes: Vec::new(),
            pad_variable_length_inputs: false,
        }
    }
}

impl BatchOptions {
    /// Checks the values; the error names the offending field as TF Serving spells it.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_batch_size == 0 {
            return Err("max_batch_size must be positive".into());
        }
        if self.max_enqueued_batches == 0 {
            return Err("max_enqueued_batches must be positive".into());
        }
        if self.num_batch_threads == 0 {
            return Err("num_batch_threads must be positive".into());
        }
        if let Some(last) = self.allowed_batch_sizes.last() {
            if self.allowed_batch_sizes.windows(2).any(|w| w[0] >= w[1])
                || self.allowed_batch_sizes[0] == 0
            {
                return Err(format!(
                    "allowed_batch_sizes must be positive and strictly increasing: {:?}",
                    self.allowed_batch_sizes
                ));
            }
            if *last != self.max_batch_size {
                return Err(format!(
                    "the last entry of allowed_batch_sizes ({last}) must equal max_batch_size ({})",
                    self.max_batch_size
                ));
            }
        }
        Ok(())
    }

    /// Rows a batch of `rows` is padded to (`rows` when no sizes are configured).
    pub(crate) fn padded_size(&self, rows: usize) -> usize {
        self.allowed_batch_sizes
            .iter()
            .copied()
            .find(|&size| size >= rows)
            .unwrap_or(rows)
    }

    /// Most rows that may wait in the queue.
    pub(crate) fn queue_capacity(&self) -> usize {
        self.max_batch_size
            .saturating_mul(self.max_enqueued_batches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_field() {
        assert_eq!(BatchOptions::default().validate(), Ok(()));
        let bad = |f: fn(&mut BatchOptions)| {
            let mut o = BatchOptions::default();
            f(&mut o);
            o.validate().unwrap_err()
        };
        assert!(bad(|o| o.max_batch_size = 0).starts_with("max_batch_size"));
        assert!(bad(|o| o.max_enqueued_batches = 0).starts_with("max_enqueued_batches"));
        assert!(bad(|o| o.num_batch_threads = 0).starts_with("num_batch_threads"));
        assert!(
            bad(|o| o.allowed_batch_sizes = vec![4, 2, 1000]).starts_with("allowed_batch_sizes")
        );
        assert!(bad(|o| o.allowed_batch_sizes = vec![2, 4]).contains("must equal max_batch_size"));
    }

    #[test]
    fn padded_size_picks_the_smallest_allowed_size() {
        let o = BatchOptions {
            max_batch_size: 8,
            allowed_batch_sizes: vec![2, 4, 8],
            ..BatchOptions::default()
        };
        assert_eq!(o.padded_size(1), 2);
        assert_eq!(o.padded_size(3), 4);
        assert_eq!(o.padded_size(8), 8);
        assert_eq!(BatchOptions::default().padded_size(3), 3);
    }
}
