//! Seeded byte-level mutations of valid requests, for tests that throw damaged input at a
//! server and check that it answers, closes or refuses, and keeps serving.
//!
//! Deterministic for a seed (a failure names its seed and case, so it can be replayed), and
//! without a dependency: xorshift64* is plenty to pick positions and bytes.

/// Bytes that change how HTTP, JSON or a length field is read when they land somewhere new.
const SPECIAL: &[u8] = b"\r\n: \t\0\xff\"{}[],-.9eE\\/%";

/// A seeded source of damaged copies of valid requests.
#[derive(Debug)]
pub struct Mutator {
    state: u64,
}

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        // xorshift's state must not be 0.
        Mutator {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A copy of `valid` with one to three damages: a byte changed (to any value, or to one
    /// that means something to a parser), a run removed, repeated or inserted, or the tail cut.
    pub fn mutate(&mut self, valid: &[u8]) -> Vec<u8> {
        let mut bytes = valid.to_vec();
        for _ in 0..1 + self.below(3) {
            if bytes.is_empty() {
                bytes.push(SPECIAL[self.below(SPECIAL.len())]);
                continue;
            }
            let at = self.below(bytes.len());
            let run = (1 + self.below(8)).min(bytes.len() - at);
            match self.below(6) {
                0 => bytes[at] = self.next_u64() as u8,
                1 => bytes[at] = SPECIAL[self.below(SPECIAL.len())],
                2 => {
                    bytes.drain(at..at + run);
                }
                3 => {
                    let copy = bytes[at..at + run].to_vec();
                    bytes.splice(at..at, copy);
                }
                4 => {
                    let noise: Vec<u8> = (0..run).map(|_| self.next_u64() as u8).collect();
                    bytes.splice(at..at, noise);
                }
                _ => bytes.truncate(at),
            }
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_damages_the_same_way_and_every_copy_differs_from_the_original() {
        let valid = b"POST /v1/models/iris:predict HTTP/1.1\r\n\r\n";
        let first: Vec<Vec<u8>> = (0..50).map(|_| Mutator::new(7).mutate(valid)).collect();
        assert!(first.windows(2).all(|w| w[0] == w[1]));
        let mut mutator = Mutator::new(7);
        let copies: Vec<Vec<u8>> = (0..200).map(|_| mutator.mutate(valid)).collect();
        let unchanged = copies.iter().filter(|c| c.as_slice() == valid).count();
        // A change can be undone by chance (a byte set to its own value); rarely.
        assert!(unchanged < 10, "{unchanged} of 200 copies unchanged");
        let distinct: std::collections::HashSet<_> = copies.iter().collect();
        assert!(distinct.len() > 150, "{} distinct copies", distinct.len());
    }
}
