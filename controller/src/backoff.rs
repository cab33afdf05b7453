//! How long to wait before trying a line again: capped exponential
//! backoff, a pure function of the number of failures in a row, so the
//! schedule is tested without a clock.

use std::time::Duration;

/// The schedule: `initial` after the first failure, doubling after each
/// one after it, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// 250 ms, doubling up to 8 s: a line that comes back is used again
    /// within 8 s, and a line that stays away costs a try every 8 s.
    pub const DEFAULT: Backoff = Backoff {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(8),
    };

    /// The wait after `failures` failures in a row (none after none).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn no_wait_before_the_first_try() {
        assert_eq!(Backoff::DEFAULT.delay(0), Duration::ZERO);
    }

    #[test]
    fn doubles_from_initial_then_stays_at_max() {
        let b = Backoff::DEFAULT;
        let got: Vec<Duration> = (1..=8).map(|n| b.delay(n)).collect();
        assert_eq!(
            got,
            [
                ms(250),
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(8000),
                ms(8000)
            ]
        );
    }

    #[test]
    fn never_overflows() {
        let b = Backoff {
            initial: Duration::from_secs(u64::MAX / 4),
            max: Duration::from_secs(30),
        };
        for n in [1, 2, 3, 31, 32, 33, 64, u32::MAX] {
            assert_eq!(b.delay(n), Duration::from_secs(30), "{n}");
        }
        assert_eq!(Backoff::DEFAULT.delay(u32::MAX), Backoff::DEFAULT.max);
        assert_eq!(Backoff::DEFAULT.delay(40), Backoff::DEFAULT.max);
    }

    #[test]
    fn max_below_initial_caps_at_once() {
        let b = Backoff {
            initial: ms(500),
            max: ms(100),
        };
        assert_eq!(b.delay(1), ms(100));
    }
}
