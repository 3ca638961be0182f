//! One caller cannot take every search. Searches and analyses (the members that take a
//! search slot and may embed a query) run a few at a time, and each bus connection may run
//! at most [`RUNNING_PER_CALLER`] of them. A caller's calls beyond that wait their turn, and
//! a freed place goes to the waiting caller running the fewest. Waiting, not refusing, is what
//! paces a flood: a client with a hundred calls in flight gets each answer only as fast as its
//! share runs, so it cannot turn a stream of refusals into thousands of messages a second
//! through `dbus-daemon` (which, on a small host, is what slowed everyone else's calls).
//! Waiting is bounded per caller and in all; beyond that a call is refused as busy at once.

use super::error::AgentError;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Searches and analyses running at once, across callers (the engine's search slots).
pub const RUNNING_IN_ALL: usize = crate::search::CONCURRENT_SEARCHES;
/// Searches and analyses one bus connection may run at once: one. A search and its query's
/// embedding keep a core busy, so one caller's flood takes at most one core of the host's,
/// and another caller's search, and the bus itself, find a core free (on two cores, two
/// running per caller left another client's Ping p99 at 6–11× its quiet figure).
pub const RUNNING_PER_CALLER: usize = 1;
/// Calls one connection may have waiting; the system bus lets a connection have 128 calls
/// awaiting replies, so a single client is paced by waiting, never refused.
pub const WAITING_PER_CALLER: usize = 128;
/// Calls waiting across all callers: many flooding connections are refused beyond this.
pub const WAITING_IN_ALL: usize = 512;

/// The searches running and waiting per caller (a bus unique name), shared by the daemon's
/// objects.
#[derive(Default)]
pub struct CallerSearches {
    queue: Arc<Mutex<Queue>>,
}

#[derive(Default)]
struct Queue {
    callers: HashMap<String, Caller>,
    /// Callers with waiting calls, in the order they last got a place (ties go to the front).
    turns: VecDeque<String>,
    running: usize,
    waiting: usize,
}

#[derive(Default)]
struct Caller {
    running: usize,
    waiting: VecDeque<oneshot::Sender<Admitted>>,
}

/// A search admitted for a caller; its place is given back (and handed on) when dropped.
pub struct Admitted {
    queue: Arc<Mutex<Queue>>,
    caller: String,
}

impl CallerSearches {
    /// Admits one more search for `caller`: at once when there is room, after the caller's
    /// turn comes when there is not, or refused as busy when too many calls already wait.
    pub async fn admit(&self, caller: &str) -> Result<Admitted, AgentError> {
        let turn = {
            let mut queue = self.queue.lock().expect("caller searches lock");
            let waits_already = queue.callers.get(caller).is_some_and(|c| !c.waiting.is_empty());
            let running = queue.callers.get(caller).map_or(0, |c| c.running);
            if !waits_already && running < RUNNING_PER_CALLER && queue.running < RUNNING_IN_ALL {
                return Ok(queue.start(&self.queue, caller));
            }
            let waiting = queue.callers.get(caller).map_or(0, |c| c.waiting.len());
            if waiting >= WAITING_PER_CALLER {
                return Err(AgentError::Busy(format!(
                    "this caller already has {WAITING_PER_CALLER} searches or analyses waiting; wait for their answers before sending more"
                )));
            }
            if queue.waiting >= WAITING_IN_ALL {
                return Err(AgentError::Busy(format!("{WAITING_IN_ALL} searches or analyses are waiting; try again shortly")));
            }
            let (tx, rx) = oneshot::channel();
            queue.callers.entry(caller.to_owned()).or_default().waiting.push_back(tx);
            queue.waiting += 1;
            if !waits_already {
                queue.turns.push_back(caller.to_owned());
            }
            rx
        };
        turn.await.map_err(|_| AgentError::internal("the search queue was dropped"))
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        let queue = self.queue.lock().unwrap();
        (queue.running, queue.waiting, queue.callers.len())
    }
}

impl Queue {
    /// Counts a running search for `caller`.
    fn start(&mut self, shared: &Arc<Mutex<Queue>>, caller: &str) -> Admitted {
        self.running += 1;
        self.callers.entry(caller.to_owned()).or_default().running += 1;
        Admitted { queue: shared.clone(), caller: caller.to_owned() }
    }

    /// Gives places to waiting callers while there are places: each to the caller running
    /// the fewest (below its share), the earliest in turn among equals. Returns the grants,
    /// to be sent once the lock is released (a refused grant is dropped, which frees it).
    fn hand_on(&mut self, shared: &Arc<Mutex<Queue>>) -> Vec<(oneshot::Sender<Admitted>, Admitted)> {
        let mut grants = Vec::new();
        while self.running < RUNNING_IN_ALL {
            let next = self
                .turns
                .iter()
                .enumerate()
                .filter_map(|(i, name)| Some((i, self.callers.get(name)?.running)))
                .filter(|&(_, running)| running < RUNNING_PER_CALLER)
                .min_by_key(|&(i, running)| (running, i));
            let Some((i, _)) = next else { break };
            let name = self.turns.remove(i).expect("a caller in turn");
            let caller = self.callers.get_mut(&name).expect("a caller in turn");
            let Some(tx) = caller.waiting.pop_front() else { continue };
            self.waiting -= 1;
            if !caller.waiting.is_empty() {
                self.turns.push_back(name.clone());
            }
            grants.push((tx, self.start(shared, &name)));
        }
        grants
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let grants = {
            let mut queue = self.queue.lock().expect("caller searches lock");
            queue.running -= 1;
            if let Some(caller) = queue.callers.get_mut(&self.caller) {
                caller.running -= 1;
                if caller.running == 0 && caller.waiting.is_empty() {
                    queue.callers.remove(&self.caller);
                }
            }
            queue.hand_on(&self.queue)
        };
        for (tx, admitted) in grants {
            // A caller that stopped waiting (its call was dropped) hands its place on in turn.
            drop(tx.send(admitted));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn now<F: std::future::Future>(f: F) -> Option<F::Output> {
        futures_util::FutureExt::now_or_never(f)
    }

    #[tokio::test]
    async fn a_caller_runs_its_share_and_its_other_calls_wait_their_turn() {
        let searches = Arc::new(CallerSearches::default());
        let held: Vec<_> = (0..RUNNING_PER_CALLER).map(|_| now(searches.admit(":1.7")).unwrap().unwrap()).collect();
        let waiting = tokio::spawn({
            let searches = searches.clone();
            async move { searches.admit(":1.7").await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "beyond its share a caller waits");
        let other = now(searches.admit(":1.8")).expect("another caller starts at once").unwrap();
        drop(held);
        waiting.await.unwrap().expect("the waiting call runs when a place is free");
        drop(other);
        assert_eq!(searches.counts(), (0, 0, 0), "places are given back");
    }

    #[tokio::test]
    async fn a_freed_place_goes_to_a_caller_below_its_share_not_to_the_flood() {
        let searches = Arc::new(CallerSearches::default());
        // Every place taken: the flood's share, and the rest by other callers.
        let callers: Vec<String> = (0..RUNNING_IN_ALL / RUNNING_PER_CALLER).map(|i| format!(":1.{i}")).collect();
        let mut running: Vec<Vec<Admitted>> =
            callers.iter().map(|c| (0..RUNNING_PER_CALLER).map(|_| now(searches.admit(c)).unwrap().unwrap()).collect()).collect();
        assert_eq!(searches.counts().0, RUNNING_IN_ALL);
        let flood = &callers[0];
        let mut flood_waiting: Vec<_> = (0..10).map(|_| Box::pin(searches.admit(flood))).collect();
        for call in &mut flood_waiting {
            assert!(now(call).is_none());
        }
        let mut latecomer = Box::pin(searches.admit(":1.99"));
        assert!(now(&mut latecomer).is_none(), "no place is free");
        drop(running[1].pop());
        let _latecomer = now(&mut latecomer).expect("a latecomer below its share goes before the flood's waiting calls").unwrap();
        assert!(now(&mut flood_waiting[0]).is_none());
        drop(running[0].pop());
        assert!(now(&mut flood_waiting[0]).is_some(), "the flood's own freed place is its next call's");
        drop(flood_waiting);
    }

    #[tokio::test]
    async fn waiting_is_bounded_and_a_dropped_call_hands_its_place_on() {
        let searches = CallerSearches::default();
        let held: Vec<_> = (0..RUNNING_PER_CALLER).map(|_| now(searches.admit(":1.7")).unwrap().unwrap()).collect();
        let mut waiting: Vec<_> = (0..WAITING_PER_CALLER).map(|_| Box::pin(searches.admit(":1.7"))).collect();
        for call in &mut waiting {
            assert!(now(call).is_none());
        }
        assert!(matches!(now(searches.admit(":1.7")), Some(Err(AgentError::Busy(_)))));
        // The first waiting call goes away (its client hung up); its place passes to the next.
        drop(waiting.remove(0));
        drop(held);
        let admitted: Vec<_> = waiting.iter_mut().take(RUNNING_PER_CALLER).map(|call| now(call).unwrap().unwrap()).collect();
        assert_eq!(admitted.len(), RUNNING_PER_CALLER);
        drop((admitted, waiting));
        assert_eq!(searches.counts(), (0, 0, 0));
    }
}
