//! Small, lock-protected latency recorders for the stats D-Bus member and the CLI.

use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;

/// The last `capacity` latencies, for percentiles.
pub struct LatencyRing {
    samples: Mutex<(Vec<u32>, usize, u64)>,
    capacity: usize,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencyRing {
    pub fn new(capacity: usize) -> Self {
        Self { samples: Mutex::new((Vec::with_capacity(capacity), 0, 0)), capacity: capacity.max(1) }
    }

    pub fn record(&self, d: Duration) {
        let micros = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        let mut guard = self.samples.lock().expect("latency lock");
        let (samples, next, total) = &mut *guard;
        if samples.len() < self.capacity {
            samples.push(micros);
        } else {
            samples[*next] = micros;
        }
        *next = (*next + 1) % self.capacity;
        *total += 1;
    }

    pub fn percentiles(&self) -> Percentiles {
        let guard = self.samples.lock().expect("latency lock");
        let mut sorted = guard.0.clone();
        let total = guard.2;
        drop(guard);
        if sorted.is_empty() {
            return Percentiles::default();
        }
        sorted.sort_unstable();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        Percentiles { count: total, p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1.0) }
    }
}

/// Median and 99th percentile of raw samples (for benchmarks), in the samples' unit.
pub fn median_p99(samples: &mut [f64]) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_ring() {
        let ring = LatencyRing::new(100);
        for ms in 1..=200u64 {
            ring.record(Duration::from_millis(ms));
        }
        let p = ring.percentiles();
        assert_eq!(p.count, 200);
        assert_eq!(p.max_ms, 200.0);
        assert!((150.0..=151.0).contains(&p.p50_ms), "{p:?}");
    }
}
