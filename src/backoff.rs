//! Exponential backoff with jitter, for everything that reconnects or retries.

use std::time::Duration;

/// 0.5 s doubling to 30 s, plus up to a quarter of that at random (so that many hosts
/// retrying after the same outage do not arrive together).
pub fn backoff(attempt: u32) -> Duration {
    let base = 500u64.saturating_mul(1 << attempt.min(6)).min(30_000);
    let jitter = rand::random::<u64>() % (base / 4 + 1);
    Duration::from_millis(base + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        assert!(backoff(0) >= Duration::from_millis(500) && backoff(0) <= Duration::from_millis(625));
        assert!(backoff(3) >= Duration::from_millis(4000));
        assert!(backoff(40) <= Duration::from_millis(37_500));
    }
}
