//! One caller cannot take every search. Searches, analyses and the other reads that take a
//! search slot (an element's history, the stats) run a few at a time, and each bus
//! connection may run at most [`RUNNING_PER_CALLER`] of them. A caller's calls beyond that
//! wait their turn, and a freed place goes to the waiting caller running the fewest, the one
//! served least recently among equals (a newcomer first). Waiting, not refusing, is what
//! paces a flood: a client with a hundred calls in flight gets each answer only as fast as its
//! share runs, so it cannot turn a stream of refusals into thousands of messages a second
//! through `dbus-daemon` (which, on a small host, is what slowed everyone else's calls).
//! Waiting is bounded per caller and in all; beyond that a call is refused as busy at once.
//! A call that waited because its caller was already at its share is background work when
//! its turn comes ([`Admitted::urgency`]): on a primary its computing yields the cores to
//! everyone else (the engine's background lane at idle priority, `sched`).

use super::error::AgentError;
use crate::sched::Urgency;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Searches and analyses running at once, across callers (the engine's search slots).
pub const RUNNING_IN_ALL: usize = crate::search::CONCURRENT_SEARCHES;
/// Searches and analyses one bus connection may run at once: one. A search and its query's
/// embedding keep a core busy, so one caller's flood takes at most one core of the host's,
/// and another caller's search, and the bus itself, find a core free (on two cores, two
/// running per caller left another client's Ping p99 at 4.5–11× its quiet figure).
pub const RUNNING_PER_CALLER: usize = 1;
/// Calls one connection may have waiting; the system bus lets a connection have 128 calls
/// awaiting replies, so a single client there is paced by waiting, not refused (while the
/// places in all are not full).
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
    /// Callers with waiting calls.
    turns: VecDeque<String>,
    running: usize,
    waiting: usize,
    /// Places given so far (each caller's `last_served` is one of these).
    served: u64,
}

#[derive(Default)]
struct Caller {
    running: usize,
    waiting: VecDeque<oneshot::Sender<Admitted>>,
    /// When it last got a place (0: never, since it was last idle).
    last_served: u64,
}

/// A search admitted for a caller; its place is given back (and handed on) when dropped.
pub struct Admitted {
    queue: Arc<Mutex<Queue>>,
    caller: String,
    urgency: Urgency,
}

impl Admitted {
    /// Background for a call its caller sent beyond its share (while its own calls ran or
    /// waited), interactive otherwise (also for one that waited only for a place in all).
    pub fn urgency(&self) -> Urgency {
        self.urgency
    }
}

impl CallerSearches {
    /// Admits one more search for `caller`: at once when there is room, after the caller's
    /// turn comes when there is not, or refused as busy when too many calls already wait.
    pub async fn admit(&self, caller: &str) -> Result<Admitted, AgentError> {
        let (turn, urgency) = {
            let mut queue = self.queue.lock().expect("caller searches lock");
            let waits_already = queue.callers.get(caller).is_some_and(|c| !c.waiting.is_empty());
            let running = queue.callers.get(caller).map_or(0, |c| c.running);
            let beyond_share = waits_already || running >= RUNNING_PER_CALLER;
            if !waits_already && running < RUNNING_PER_CALLER && queue.running < RUNNING_IN_ALL {
                return Ok(queue.start(&self.queue, caller));
            }
            if queue.waiting_for(caller) >= WAITING_PER_CALLER || queue.waiting >= WAITING_IN_ALL {
                // Calls whose clients stopped waiting hold no place.
                queue.prune_abandoned();
            }
            if queue.waiting_for(caller) >= WAITING_PER_CALLER {
                return Err(AgentError::Busy(format!(
                    "this caller already has {WAITING_PER_CALLER} searches or analyses waiting; wait for their answers before sending more"
                )));
            }
            // A caller with nothing running or waiting may always queue one call: a few
            // flooding connections that fill the waiting places do not lock everyone else out
            // (the bus bounds the connections).
            let newcomer = running == 0 && !waits_already;
            if queue.waiting >= WAITING_IN_ALL && !newcomer {
                return Err(AgentError::Busy(format!("{WAITING_IN_ALL} searches or analyses are waiting; try again shortly")));
            }
            let (tx, rx) = oneshot::channel();
            queue.callers.entry(caller.to_owned()).or_default().waiting.push_back(tx);
            queue.waiting += 1;
            if !waits_already {
                queue.turns.push_back(caller.to_owned());
            }
            (rx, if beyond_share { Urgency::Background } else { Urgency::Interactive })
        };
        let mut admitted = turn.await.map_err(|_| AgentError::Busy("the caller left the bus before its turn came".into()))?;
        admitted.urgency = urgency;
        Ok(admitted)
    }

    /// Drops the waiting calls of a caller that has left the bus (nobody would read their
    /// answers), so they neither run nor hold places in the queue.
    pub fn forget(&self, caller: &str) {
        let mut queue = self.queue.lock().expect("caller searches lock");
        let dropped = queue.drop_waiting(caller, |_| true);
        if dropped > 0 {
            tracing::debug!(caller, dropped, "dropped the waiting searches of a caller that left the bus");
        }
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        let queue = self.queue.lock().unwrap();
        (queue.running, queue.waiting, queue.callers.len())
    }
}

impl Queue {
    fn waiting_for(&self, caller: &str) -> usize {
        self.callers.get(caller).map_or(0, |c| c.waiting.len())
    }

    /// Drops `caller`'s waiting calls that `pick` picks; forgets the caller when nothing of it
    /// is left. Returns how many were dropped.
    fn drop_waiting(&mut self, caller: &str, pick: impl Fn(&oneshot::Sender<Admitted>) -> bool) -> usize {
        let Some(entry) = self.callers.get_mut(caller) else { return 0 };
        let before = entry.waiting.len();
        entry.waiting.retain(|tx| !pick(tx));
        let dropped = before - entry.waiting.len();
        if entry.waiting.is_empty() {
            self.turns.retain(|name| name != caller);
        }
        self.waiting -= dropped;
        self.forget_if_idle(caller);
        dropped
    }

    /// Forgets a caller with nothing running or waiting.
    fn forget_if_idle(&mut self, caller: &str) {
        if self.callers.get(caller).is_some_and(|c| c.running == 0 && c.waiting.is_empty()) {
            self.callers.remove(caller);
        }
    }

    /// Drops waiting calls whose callers stopped waiting (their calls were dropped).
    fn prune_abandoned(&mut self) {
        for caller in self.turns.clone() {
            self.drop_waiting(&caller, oneshot::Sender::is_closed);
        }
    }

    /// Counts a running search for `caller`.
    fn start(&mut self, shared: &Arc<Mutex<Queue>>, caller: &str) -> Admitted {
        self.running += 1;
        self.served += 1;
        let entry = self.callers.entry(caller.to_owned()).or_default();
        entry.running += 1;
        entry.last_served = self.served;
        Admitted { queue: shared.clone(), caller: caller.to_owned(), urgency: Urgency::Interactive }
    }

    /// Gives places to waiting callers while there are places: each to the caller running
    /// the fewest (below its share), the one served least recently among equals. Returns the
    /// grants, to be sent once the lock is released (a refused grant is dropped, which frees
    /// it).
    fn hand_on(&mut self, shared: &Arc<Mutex<Queue>>) -> Vec<(oneshot::Sender<Admitted>, Admitted)> {
        let mut grants = Vec::new();
        while self.running < RUNNING_IN_ALL {
            let next = self
                .turns
                .iter()
                .enumerate()
                .filter_map(|(i, name)| self.callers.get(name).map(|c| (i, c.running, c.last_served)))
                .filter(|&(_, running, _)| running < RUNNING_PER_CALLER)
                .min_by_key(|&(_, running, last_served)| (running, last_served));
            let Some((i, ..)) = next else { break };
            let name = self.turns.remove(i).expect("a caller in turn");
            let caller = self.callers.get_mut(&name).expect("a caller in turn");
            let tx = caller.waiting.pop_front();
            let more = !caller.waiting.is_empty();
            let Some(tx) = tx.inspect(|_| self.waiting -= 1).filter(|tx| !tx.is_closed()) else {
                // Its call was dropped: the place goes to the next in turn instead.
                if more {
                    self.turns.insert(i, name);
                } else {
                    self.forget_if_idle(&name);
                }
                continue;
            };
            if more {
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
            // A poisoned lock still holds sound counts (no code under it panics midway).
            let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.running -= 1;
            if let Some(caller) = queue.callers.get_mut(&self.caller) {
                caller.running -= 1;
            }
            queue.forget_if_idle(&self.caller);
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
        assert_eq!(_latecomer.urgency(), Urgency::Interactive, "it waited for a place in all, not beyond its own share");
        assert!(running.iter().flatten().all(|a| a.urgency() == Urgency::Interactive), "calls within their share");
        assert!(now(&mut flood_waiting[0]).is_none());
        drop(running[0].pop());
        let next = now(&mut flood_waiting[0]).expect("the flood's own freed place is its next call's").unwrap();
        assert_eq!(next.urgency(), Urgency::Background, "a call sent beyond its caller's share");
        drop((next, flood_waiting));
        drop((running, _latecomer));
        assert_eq!(searches.counts(), (0, 0, 0), "abandoned waiting calls hold nothing once their turn passes");
    }

    #[tokio::test]
    async fn full_waiting_places_still_take_a_newcomer_and_abandoned_calls_make_room() {
        let searches = CallerSearches::default();
        let floods: Vec<String> = (0..RUNNING_IN_ALL).map(|i| format!(":1.{i}")).collect();
        let running: Vec<_> = floods.iter().map(|c| now(searches.admit(c)).unwrap().unwrap()).collect();
        let mut waiting: Vec<_> = (0..WAITING_IN_ALL).map(|i| Box::pin(searches.admit(&floods[i % floods.len()]))).collect();
        for call in &mut waiting {
            assert!(now(call).is_none());
        }
        assert!(matches!(now(searches.admit(&floods[0])), Some(Err(AgentError::Busy(_)))), "a flood is refused beyond the bound");
        let mut newcomer = Box::pin(searches.admit(":1.99"));
        assert!(now(&mut newcomer).is_none(), "a newcomer waits instead of being refused");
        assert!(matches!(now(searches.admit(":1.99")), Some(Err(AgentError::Busy(_)))), "but only with one call");
        // Clients that gave up on their calls leave room for new ones.
        waiting.truncate(WAITING_IN_ALL - 10);
        let mut again = Box::pin(searches.admit(&floods[0]));
        assert!(now(&mut again).is_none(), "queued in an abandoned call's place");
        drop(running);
        assert!(now(&mut newcomer).is_some(), "the newcomer is among the first to run");
        drop((waiting, again, newcomer));
        assert_eq!(searches.counts(), (0, 0, 0));
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

    #[tokio::test]
    async fn a_caller_that_left_the_bus_has_its_waiting_calls_dropped() {
        let searches = CallerSearches::default();
        let held = now(searches.admit(":1.7")).unwrap().unwrap();
        let mut waiting: Vec<_> = (0..5).map(|_| Box::pin(searches.admit(":1.7"))).collect();
        for call in &mut waiting {
            assert!(now(call).is_none());
        }
        searches.forget(":1.7");
        assert_eq!(searches.counts(), (1, 0, 1), "the running call stays counted until it ends");
        for call in &mut waiting {
            assert!(matches!(now(call), Some(Err(AgentError::Busy(_)))));
        }
        drop(held);
        assert_eq!(searches.counts(), (0, 0, 0));
    }
}
