//! Retry policy: how often a step is tried and how long to wait between tries.
//! The delay is computed here and stored in the run's `wake_at`, so a backoff
//! survives a restart (an in-memory retry loop would forget it).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    pub factor: f32,
    /// Spread retries of many runs apart so an outage's end is not a stampede.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            factor: 2.0,
            jitter: true,
        }
    }
}

mod humantime_serde {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

impl RetryPolicy {
    pub fn check(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("retry.max_attempts must be at least 1".into());
        }
        if self.initial > self.max {
            return Err("retry.initial must not exceed retry.max".into());
        }
        if !(self.factor >= 1.0 && self.factor.is_finite()) {
            return Err("retry.factor must be at least 1".into());
        }
        Ok(())
    }

    /// The wait before the attempt after `failed_attempt` (1-based): `initial`
    /// times `factor` per earlier failure, jittered by up to +100%, never above `max`.
    pub fn delay_after(&self, failed_attempt: u32) -> Duration {
        let mut builder = ExponentialBuilder::new()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_factor(self.factor)
            .without_max_times();
        if self.jitter {
            builder = builder.with_jitter();
        }
        let nth = failed_attempt.max(1) as usize - 1;
        builder.build().nth(nth).unwrap_or(self.max).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: bool) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            factor: 2.0,
            jitter,
        }
    }

    #[test]
    fn delays_double_until_the_cap() {
        let p = policy(false);
        let delays: Vec<u128> = (1..=6).map(|a| p.delay_after(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_between_the_delay_and_twice_it_and_under_the_cap() {
        let p = policy(true);
        for attempt in 1..=6 {
            let base = policy(false).delay_after(attempt);
            for _ in 0..50 {
                let d = p.delay_after(attempt);
                assert!(d >= base && d <= (base * 2).min(p.max), "attempt {attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn nonsense_policies_are_refused() {
        let mut p = policy(false);
        p.max_attempts = 0;
        assert!(p.check().is_err());
        let mut p = policy(false);
        p.initial = Duration::from_secs(5);
        assert!(p.check().is_err());
        let mut p = policy(false);
        p.factor = 0.5;
        assert!(p.check().is_err());
        assert!(policy(true).check().is_ok());
    }
}
