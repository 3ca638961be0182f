//! Cheap calls (Ping, the replica status, a call with a bad argument) cost the daemon almost
//! nothing, but a client can send tens of thousands of them a second, and every other
//! client's call then waits behind that traffic in `dbus-daemon`. Every member the read group
//! may call is paced first: each bus connection may make [`CALLS_PER_SECOND`] calls, with
//! bursts of [`BURST`]; a call beyond that waits for its time, which paces a client by its own
//! calls in flight, and one that would wait longer than [`MAX_WAIT`] is refused as busy at
//! once. (The bus's standard interfaces, Introspect, Properties and Peer, are answered without
//! reaching these members and are not paced.)

use super::error::AgentError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Paced calls one connection may make per second, on average.
pub const CALLS_PER_SECOND: u32 = 200;
/// Paced calls one connection may make at once, before pacing starts.
pub const BURST: u32 = 200;
/// The longest a paced call waits for its time.
pub const MAX_WAIT: Duration = Duration::from_secs(2);
/// Connections remembered before those whose pace has caught up are forgotten.
const REMEMBERED: usize = 1024;

/// When each connection's next call is due (the generic cell rate algorithm's "theoretical
/// arrival time"): a call may go at once while that is at most a burst ahead of now.
#[derive(Default)]
pub struct Pacer {
    due: Mutex<Due>,
}

#[derive(Default)]
struct Due {
    at: HashMap<String, Instant>,
    /// The map's size at which callers whose pace has caught up are next forgotten.
    prune_at: usize,
}

impl Pacer {
    /// Waits until `caller` may make one more paced call, or refuses it when that is more
    /// than [`MAX_WAIT`] away.
    pub async fn pace(&self, caller: &str) -> Result<(), AgentError> {
        let wait = self.reserve(caller, Instant::now())?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Takes the caller's next turn at `now`; returns how long to wait for it.
    fn reserve(&self, caller: &str, now: Instant) -> Result<Duration, AgentError> {
        let interval = Duration::from_secs(1) / CALLS_PER_SECOND;
        let burst = interval * BURST;
        let mut guard = self.due.lock().expect("pacer lock");
        let due = &mut *guard;
        if due.at.len() >= due.prune_at.max(REMEMBERED) {
            due.at.retain(|_, at| *at > now);
            // Not again before the map has doubled: a pass on every call would be quadratic.
            due.prune_at = due.at.len() * 2;
        }
        let at = due.at.get(caller).map_or(now, |at| (*at).max(now));
        let wait = (at + interval).saturating_duration_since(now + burst);
        if wait > MAX_WAIT {
            return Err(AgentError::Busy(format!(
                "this caller makes more than {CALLS_PER_SECOND} calls a second; wait for answers before sending more"
            )));
        }
        due.at.insert(caller.to_owned(), at + interval);
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_calls_are_paced_then_refused() {
        let pacer = Pacer::default();
        let now = Instant::now();
        for _ in 0..BURST {
            assert_eq!(pacer.reserve(":1.7", now).unwrap(), Duration::ZERO);
        }
        let interval = Duration::from_secs(1) / CALLS_PER_SECOND;
        assert_eq!(pacer.reserve(":1.7", now).unwrap(), interval, "the first call beyond the burst waits one interval");
        assert_eq!(pacer.reserve(":1.8", now).unwrap(), Duration::ZERO, "other callers are not paced");
        let mut last = Duration::ZERO;
        while let Ok(wait) = pacer.reserve(":1.7", now) {
            last = wait;
        }
        assert!(last <= MAX_WAIT && last + interval > MAX_WAIT, "refused only beyond the longest wait ({last:?})");
        // A second later the caller's pace has come back by a second's calls.
        let later = now + Duration::from_secs(1);
        assert!(pacer.reserve(":1.7", later).unwrap() < MAX_WAIT);
    }
}
