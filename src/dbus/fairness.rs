//! One caller cannot take every search: each bus connection may have a few searches and
//! analyses in progress at once (the members that take a search slot and may embed a query),
//! and its calls beyond that are refused as busy at once. A client flooding requests then
//! holds only its share of the search slots and of the query-embedding queue, and everyone
//! else's calls are answered.

use super::error::AgentError;
use std::collections::HashMap;
use std::sync::Mutex;

/// Searches and analyses one bus connection may have in progress (waiting or running) at once.
pub const SEARCHES_PER_CALLER: usize = 4;

/// The searches in progress per caller (a bus unique name), shared by the daemon's objects.
#[derive(Default)]
pub struct CallerSearches {
    in_progress: Mutex<HashMap<String, usize>>,
}

/// A search admitted for a caller; its place is given back when dropped.
pub struct Admitted<'a> {
    owner: &'a CallerSearches,
    caller: String,
}

impl CallerSearches {
    /// Admits one more search for `caller`, or refuses it as busy when the caller already
    /// has [`SEARCHES_PER_CALLER`] in progress.
    pub fn admit(&self, caller: &str) -> Result<Admitted<'_>, AgentError> {
        let mut in_progress = self.in_progress.lock().expect("caller searches lock");
        let count = in_progress.entry(caller.to_owned()).or_default();
        if *count >= SEARCHES_PER_CALLER {
            return Err(AgentError::Busy(format!(
                "this caller already has {SEARCHES_PER_CALLER} searches or analyses in progress; wait for their answers before sending more"
            )));
        }
        *count += 1;
        Ok(Admitted { owner: self, caller: caller.to_owned() })
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let mut in_progress = self.owner.in_progress.lock().expect("caller searches lock");
        if let Some(count) = in_progress.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                in_progress.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_its_share_and_others_are_not_affected() {
        let searches = CallerSearches::default();
        let held: Vec<_> = (0..SEARCHES_PER_CALLER).map(|_| searches.admit(":1.7").unwrap()).collect();
        assert!(matches!(searches.admit(":1.7"), Err(AgentError::Busy(_))));
        let other = searches.admit(":1.8").expect("another caller is admitted");
        drop(held);
        drop(other);
        assert!(searches.in_progress.lock().unwrap().is_empty(), "places are given back");
        assert!(searches.admit(":1.7").is_ok());
    }
}
