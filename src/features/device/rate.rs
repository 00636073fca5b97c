//! A device's presence rate: at most `burst` presences at once, then one per `interval`
//! (a token bucket, kept as one instant: the generic cell rate algorithm). Pure: the
//! caller passes the clock.

use std::time::{Duration, Instant};

/// The rule (`[devices] presence_interval_secs`, `presence_burst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceRate {
    /// One presence per this, sustained.
    pub interval: Duration,
    /// How many may come at once after a quiet spell (at least 1).
    pub burst: u32,
}

/// One account's state under the rule: when its bucket will be full again (the
/// "theoretical arrival time"), `None` before its first presence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    full_at: Option<Instant>,
}

impl PresenceRate {
    /// Whether a presence at `now` passes; if it does, it is counted. Otherwise how long
    /// until one would.
    pub fn check(&self, state: &mut RateState, now: Instant) -> Result<(), Duration> {
        let tolerance = self.interval * self.burst.max(1).saturating_sub(1);
        let full_at = state.full_at.map_or(now, |t| t.max(now));
        // The earliest a presence may come: `burst - 1` intervals before the bucket
        // would be empty of debt.
        let allowed_from = full_at.checked_sub(tolerance).unwrap_or(now);
        if now < allowed_from {
            return Err(allowed_from - now);
        }
        state.full_at = Some(full_at + self.interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn burst_then_one_per_interval() {
        let rule = PresenceRate {
            interval: 10 * S,
            burst: 3,
        };
        let t0 = Instant::now();
        let mut st = RateState::default();
        for _ in 0..3 {
            rule.check(&mut st, t0).unwrap();
        }
        // The fourth at once: wait a whole interval.
        assert_eq!(rule.check(&mut st, t0), Err(10 * S));
        assert_eq!(rule.check(&mut st, t0 + 4 * S), Err(6 * S));
        // A refused one costs nothing: at 10 s one more passes, and then not before 20 s.
        rule.check(&mut st, t0 + 10 * S).unwrap();
        assert_eq!(rule.check(&mut st, t0 + 15 * S), Err(5 * S));
        rule.check(&mut st, t0 + 20 * S).unwrap();
        // A sensor in a loop gets one per interval, never more.
        let mut passed = 0;
        for ms in (20_001..80_000).step_by(100) {
            if rule.check(&mut st, t0 + Duration::from_millis(ms)).is_ok() {
                passed += 1;
            }
        }
        assert_eq!(passed, 5, "one per 10 s from 30 s to 70 s");
        // After a long quiet spell the whole burst is back, not more.
        let later = t0 + 1000 * S;
        for _ in 0..3 {
            rule.check(&mut st, later).unwrap();
        }
        assert!(rule.check(&mut st, later).is_err());
    }

    #[test]
    fn burst_of_one_is_a_plain_interval() {
        let rule = PresenceRate {
            interval: 5 * S,
            burst: 1,
        };
        let t0 = Instant::now();
        let mut st = RateState::default();
        rule.check(&mut st, t0).unwrap();
        assert_eq!(rule.check(&mut st, t0 + S), Err(4 * S));
        rule.check(&mut st, t0 + 5 * S).unwrap();
        // burst 0 is taken as 1.
        let zero = PresenceRate { burst: 0, ..rule };
        let mut st = RateState::default();
        zero.check(&mut st, t0).unwrap();
        assert!(zero.check(&mut st, t0).is_err());
    }
}
