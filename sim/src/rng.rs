//! The simulator's one source of randomness: PCG32 (O'Neill 2014, the
//! XSH-RR output on a 64-bit LCG). Every choice of a run — delays, losses,
//! faults, client pauses — is drawn from it in order, so a seed replays the
//! same history. No dependency: a few lines, and the stream is pinned by a
//! test so a change to it cannot slip in unnoticed.

/// The multiplier of PCG's 64-bit LCG.
const MULTIPLIER: u64 = 6_364_136_223_846_793_005;
/// PCG's default stream (any odd increment is a valid stream).
const INCREMENT: u64 = 1_442_695_040_888_963_407;

#[derive(Debug, Clone)]
pub(crate) struct Pcg32 {
    state: u64,
}

impl Pcg32 {
    pub(crate) fn new(seed: u64) -> Pcg32 {
        let mut rng = Pcg32 { state: 0 };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(seed);
        rng.next_u32();
        rng
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(MULTIPLIER).wrapping_add(INCREMENT);
        // PCG's output step keeps the low 32 bits of the shifted state.
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        // The rotation is the state's top 5 bits.
        let rotation = (old >> 59) as u32;
        xorshifted.rotate_right(rotation)
    }

    /// Uniform in `low..=high` (the modulo bias of a 32-bit draw over the
    /// small ranges used here does not matter).
    pub(crate) fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range {low}..={high}");
        let span = high - low + 1;
        low + u64::from(self.next_u32()) % span
    }

    /// True with probability `per_mille` / 1000.
    pub(crate) fn chance(&mut self, per_mille: u32) -> bool {
        self.next_u32() % 1000 < per_mille
    }

    /// An index below `len` (`len` > 0).
    pub(crate) fn index(&mut self, len: usize) -> usize {
        assert!(len > 0, "an index into nothing");
        usize::try_from(self.next_u32()).unwrap_or(0) % len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_pinned_and_seeds_differ() {
        let mut a = Pcg32::new(7);
        let first: Vec<u32> = (0..3).map(|_| a.next_u32()).collect();
        let mut b = Pcg32::new(7);
        assert_eq!(first, (0..3).map(|_| b.next_u32()).collect::<Vec<_>>());
        // Pinned: a change to the generator changes every seed's history.
        assert_eq!(first, [1_273_465_047, 4_201_302_492, 1_760_530_922]);
        assert_ne!(Pcg32::new(8).next_u32(), first[0]);
        for _ in 0..1000 {
            let x = a.between(3, 9);
            assert!((3..=9).contains(&x));
        }
    }
}
