//! Idle CPU priority (`SCHED_IDLE`) for work done for a caller beyond its share (a flood's
//! searches). Any other thread that wakes preempts an idle-priority thread at once, so the
//! bus, `dbus-daemon` and other clients do not wait out its computation, and it still gets
//! every core nothing else wants.
//!
//! Bounded: a thread held at idle priority longer than [`IDLE_AT_MOST`] is raised back by a
//! monitor thread. On a host whose cores are busy with other work an idle thread would
//! otherwise starve, and with it anything it holds: a search place, a reader, a lock shared
//! with the recording side (the allocator's, SQLite's). So a flood is demoted only while the
//! host has cores to spare, and nothing waits on it for much longer than the bound.
//!
//! A resident ([`IdleResident`]) is a thread that stays at idle priority, waiting included,
//! so that waking it preempts no one (a guard's thread wakes at its own priority first). Each
//! piece of its work is bounded from when it was queued ([`ResidentHandle::work_queued`]),
//! or when the piece before it was done, until it is done; past the bound the monitor raises
//! the resident back, and it lowers itself again once done.
//!
//! Lowering a thread's priority needs no privilege; raising it back needs `RLIMIT_NICE` up to
//! its nice value (the unit's `LimitNICE=+0`) or `CAP_SYS_NICE`. A thread that could not be
//! raised back is never lowered.

use super::{SchedAttr, set_attr, this_thread_attr};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a thread stays at idle priority before it is raised back: a few searches' time.
pub const IDLE_AT_MOST: Duration = Duration::from_millis(50);
/// How often the monitor raises again a thread past its bound (one whose own lowering came
/// just after a raise).
const RAISE_AGAIN_EVERY: Duration = Duration::from_millis(10);
/// How long the monitor keeps looking, every [`IDLE_AT_MOST`], after the last thread it
/// watched was given back, before it sleeps until woken. During a flood it then wakes a few
/// times per bound, not twice per search: each wake-up is one more thread wanting a core.
const LINGER: Duration = Duration::from_secs(1);

/// `CAP_SYS_NICE`'s bit in the first capability word.
const CAP_SYS_NICE: u32 = 23;

/// A thread at idle priority now.
struct Held {
    tid: libc::pid_t,
    /// What it is given back.
    previous: SchedAttr,
    /// When the monitor raises it back if it is still held.
    until: Instant,
    raised: bool,
}

/// A resident thread as the monitor watches it: only atomics, which the resident reads and
/// writes at idle priority without taking the registry's lock.
struct Watch {
    tid: libc::pid_t,
    /// What it is raised back to.
    ordinary: SchedAttr,
    /// Pieces of work queued for it and not yet done.
    pending: AtomicU64,
    /// Nanoseconds after [`epoch`] since its current piece of work has waited or run (since
    /// it was queued, or since the piece before it was done); 0 while it has none. Started
    /// from 0 only by a submitter, so that the monitor is woken by an ordinary thread.
    busy_since: AtomicU64,
    /// Set by the monitor when it raised the resident; the resident lowers itself again.
    raised: AtomicBool,
}

/// Whom the monitor watches; never locked by a thread at idle priority.
struct Registry {
    held: Vec<Held>,
    residents: Vec<Arc<Watch>>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { held: Vec::new(), residents: Vec::new() });
/// Wakes the monitor from its sleep without a time-out.
static CHANGED: Condvar = Condvar::new();
/// Whether the monitor sleeps without a time-out (written and read under the registry's lock).
static MONITOR_ASLEEP: AtomicBool = AtomicBool::new(false);
static MONITOR: OnceLock<bool> = OnceLock::new();
static ENTERED: AtomicU64 = AtomicU64::new(0);
static RAISED: AtomicU64 = AtomicU64::new(0);

/// Idle priority for this thread while held; its own policy, nice value and slice are given
/// back when it drops, or after [`IDLE_AT_MOST`] if that comes first. Not `Send`: it must
/// drop on the thread it changed. A thread already at idle priority (a nested guard), of a
/// real-time or deadline policy, or one that could not be raised back, is left as it is.
pub struct IdlePriority {
    /// This thread's id and what it is given back; `None` when nothing was changed.
    held: Option<(libc::pid_t, SchedAttr)>,
    _on_this_thread: PhantomData<*const ()>,
}

impl IdlePriority {
    /// Idle priority for this thread until the guard drops (or for [`IDLE_AT_MOST`]).
    #[must_use = "the thread's priority is given back when the guard drops"]
    pub fn enter() -> Self {
        Self::enter_for(IDLE_AT_MOST)
    }

    fn enter_for(bound: Duration) -> Self {
        Self { held: lower(bound), _on_this_thread: PhantomData }
    }

    /// Whether this guard put the thread at idle priority.
    pub fn held(&self) -> bool {
        self.held.is_some()
    }
}

impl Drop for IdlePriority {
    fn drop(&mut self) {
        let Some((tid, previous)) = self.held.take() else { return };
        // Raised first, then unregistered: a thread at idle priority never holds the
        // registry's lock, which the monitor needs.
        if let Err(error) = set_attr(0, &previous) {
            // Checked before lowering it; only a limit lowered since could bring this here.
            tracing::error!(%error, "could not raise a thread back from idle CPU priority");
        }
        registry().held.retain(|held| held.tid != tid);
    }
}

/// Wakes the monitor if it sleeps without a time-out; called with the registry's lock held
/// (the monitor reads the registry and decides to sleep under it).
fn wake_monitor(_registry: &Registry) {
    if MONITOR_ASLEEP.load(Ordering::Relaxed) {
        CHANGED.notify_one();
    }
}

/// `attr` at idle priority (an idle thread takes no slice request).
fn idle_attr(attr: &SchedAttr) -> SchedAttr {
    SchedAttr { policy: libc::SCHED_IDLE as u32, runtime: 0, ..*attr }
}

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// When the process first asked: the origin of [`Watch::busy_since`].
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Now, in nanoseconds after [`epoch`] (never 0, which means idle).
fn since_epoch() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// A thread that stays at idle priority for its whole life, waiting for work included, so
/// that waking it preempts no one; each piece of its work is bounded as a guard's is (see
/// the module's note). Made on the thread it lowers; not `Send`.
pub struct IdleResident {
    watch: Arc<Watch>,
    _on_this_thread: PhantomData<*const ()>,
}

/// What other threads tell a resident's monitor: that work waits for it.
#[derive(Clone)]
pub struct ResidentHandle {
    watch: Arc<Watch>,
}

impl IdleResident {
    /// Lowers this thread to idle priority for good; `None` (nothing changed) when it could
    /// not be raised back or the monitor could not start. Call it from an ordinary thread.
    pub fn settle() -> Option<Self> {
        let (tid, ordinary) = lowerable_thread()?;
        let watch =
            Arc::new(Watch { tid, ordinary, pending: AtomicU64::new(0), busy_since: AtomicU64::new(0), raised: AtomicBool::new(false) });
        // Registered while still ordinary: the registry's lock is never taken at idle priority.
        registry().residents.push(watch.clone());
        let resident = Self { watch, _on_this_thread: PhantomData };
        if !resident.lower() {
            registry().residents.retain(|w| !Arc::ptr_eq(w, &resident.watch));
            return None;
        }
        Some(resident)
    }

    /// For the threads that queue work for this one.
    pub fn handle(&self) -> ResidentHandle {
        ResidentHandle { watch: self.watch.clone() }
    }

    /// Says one piece of queued work is done: the bound starts again for the next one, if
    /// any, and a resident the monitor raised lowers itself back. Counted as one run at idle
    /// priority (and as raised back, by the monitor, if it was).
    pub fn work_done(&self) {
        let watch = &self.watch;
        let since = watch.busy_since.load(Ordering::SeqCst);
        if watch.pending.fetch_sub(1, Ordering::SeqCst) > 1 {
            watch.busy_since.store(since_epoch(), Ordering::SeqCst);
        } else {
            // Unless work queued meanwhile has started a new bound.
            let _ = watch.busy_since.compare_exchange(since, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
        if watch.raised.swap(false, Ordering::SeqCst) {
            self.lower();
        }
        ENTERED.fetch_add(1, Ordering::Relaxed);
    }

    /// Before waiting for work: a resident raised just after its last piece was done goes
    /// back to idle priority, so that waking it preempts no one.
    pub fn settle_before_waiting(&self) {
        if self.watch.pending.load(Ordering::SeqCst) == 0 && self.watch.raised.swap(false, Ordering::SeqCst) {
            self.lower();
        }
    }

    fn lower(&self) -> bool {
        set_attr(0, &idle_attr(&self.watch.ordinary)).is_ok()
    }
}

impl Drop for IdleResident {
    fn drop(&mut self) {
        // Back to ordinary before taking the registry's lock.
        let _ = set_attr(0, &self.watch.ordinary);
        registry().residents.retain(|w| !Arc::ptr_eq(w, &self.watch));
    }
}

impl ResidentHandle {
    /// Counts one more piece of work for the resident, unless `at_most` are pending already
    /// (then false): its bound starts now if it had none. Call it before handing the work
    /// over, from an ordinary thread (it may wake the monitor), and have the resident call
    /// [`IdleResident::work_done`] for it.
    pub fn work_queued(&self, at_most: u64) -> bool {
        let watch = &self.watch;
        let Ok(before) = watch.pending.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < at_most).then_some(n + 1)) else {
            return false;
        };
        // Every submitter starts the bound if none runs: the one that took `pending` from 0
        // may not have stored it yet when the resident already takes this piece.
        let started = watch.busy_since.compare_exchange(0, since_epoch(), Ordering::SeqCst, Ordering::SeqCst).is_ok();
        if before == 0 || started {
            wake_monitor(&registry());
        }
        true
    }
}

/// This thread's id and attributes, if it may go to idle priority: an ordinary (or batch)
/// thread that could be raised back, with the monitor running.
fn lowerable_thread() -> Option<(libc::pid_t, SchedAttr)> {
    let attr = this_thread_attr().ok()?;
    if attr.policy != libc::SCHED_OTHER as u32 && attr.policy != libc::SCHED_BATCH as u32 {
        return None;
    }
    if !may_leave_idle(attr.nice) || !monitor_running() {
        return None;
    }
    // SAFETY: gettid has no preconditions.
    Some((unsafe { libc::gettid() }, attr))
}

/// Registers this thread with the monitor, then lowers it; returns its id and what it is
/// given back, or `None` when nothing was changed.
fn lower(bound: Duration) -> Option<(libc::pid_t, SchedAttr)> {
    let (tid, attr) = lowerable_thread()?;
    {
        let mut registry = registry();
        registry.held.push(Held { tid, previous: attr, until: Instant::now() + bound, raised: false });
        wake_monitor(&registry);
    }
    if set_attr(0, &idle_attr(&attr)).is_err() {
        registry().held.retain(|held| held.tid != tid);
        return None;
    }
    ENTERED.fetch_add(1, Ordering::Relaxed);
    Some((tid, attr))
}

/// Starts the monitor on first use; false if it could not be started.
fn monitor_running() -> bool {
    *MONITOR.get_or_init(|| std::thread::Builder::new().name("idle-bound".into()).spawn(raise_overdue).is_ok())
}

/// The monitor: raises back every thread held past its bound, again every
/// [`RAISE_AGAIN_EVERY`] until its guard drops, and a busy resident past its bound likewise
/// until that piece of work is done. It wakes at the earliest bound of those it watches; with none,
/// every [`IDLE_AT_MOST`] for [`LINGER`], then only when woken. A thread registered while it
/// waits on a time-out has a bound later than that time-out, since every bound is
/// [`IDLE_AT_MOST`] (tests use shorter ones, and the monitor's next wake-up finds them).
fn raise_overdue() {
    let mut registry = registry();
    let mut last_watched = Instant::now();
    loop {
        let now = Instant::now();
        let busy_residents = registry.residents.iter().any(|w| w.pending.load(Ordering::SeqCst) != 0);
        if !registry.held.is_empty() || busy_residents {
            last_watched = now;
        }
        let mut wait: Option<Duration> = (now.duration_since(last_watched) < LINGER).then_some(IDLE_AT_MOST);
        let mut sooner = |next: Duration| wait = Some(wait.map_or(next, |w| w.min(next)));
        for entry in registry.held.iter_mut() {
            let left = entry.until.saturating_duration_since(now);
            sooner(raise_when_due(entry.tid, &entry.previous, left, || !std::mem::replace(&mut entry.raised, true)));
        }
        let now_ns = since_epoch();
        for watch in &registry.residents {
            let since = watch.busy_since.load(Ordering::SeqCst);
            if since == 0 {
                continue;
            }
            let left = IDLE_AT_MOST.saturating_sub(Duration::from_nanos(now_ns.saturating_sub(since)));
            // Raised first, then marked: a resident that finishes in between stays ordinary
            // for one more piece of work (or until it next waits), never for good; one that
            // lowers itself just as it was raised is caught at the next look.
            sooner(raise_when_due(watch.tid, &watch.ordinary, left, || !watch.raised.swap(true, Ordering::SeqCst)));
        }
        registry = match wait {
            Some(wait) => CHANGED.wait_timeout(registry, wait).unwrap_or_else(|p| p.into_inner()).0,
            None => {
                MONITOR_ASLEEP.store(true, Ordering::Relaxed);
                let registry = CHANGED.wait(registry).unwrap_or_else(|p| p.into_inner());
                MONITOR_ASLEEP.store(false, Ordering::Relaxed);
                registry
            }
        };
    }
}

/// Raises thread `tid` back to `attr` once its time `left` at idle priority is up, counting
/// the first raise (`first_raise` marks it raised and says whether it was not yet); returns
/// how soon to look at it again.
fn raise_when_due(tid: libc::pid_t, attr: &SchedAttr, left: Duration, first_raise: impl FnOnce() -> bool) -> Duration {
    if !left.is_zero() {
        return left;
    }
    if set_attr(tid, attr).is_ok() && first_raise() {
        RAISED.fetch_add(1, Ordering::Relaxed);
    }
    RAISE_AGAIN_EVERY
}

/// Whether this thread, at nice `nice`, may be raised back from idle priority: its
/// `RLIMIT_NICE` reaches that nice value (`20 - nice` in the limit's terms), or it has
/// `CAP_SYS_NICE`.
fn may_leave_idle(nice: i32) -> bool {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the limit it is given.
    let rlimit_nice = if unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut limit) } == 0 { limit.rlim_cur } else { 0 };
    nice_within(nice, rlimit_nice) || capabilities().is_some_and(|[low, _]| low.effective & (1 << CAP_SYS_NICE) != 0)
}

/// Whether `RLIMIT_NICE` at `rlimit_nice` lets a thread (back) up to nice `nice`: the limit
/// counts 20 - nice (1 for nice 19, 40 for nice -20), as the kernel's `can_nice` reads it.
fn nice_within(nice: i32, rlimit_nice: u64) -> bool {
    u64::try_from(20 - nice).is_ok_and(|needed| rlimit_nice >= needed)
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`, two of which hold the 64 capability bits.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// This thread's capabilities.
fn capabilities() -> Option<[CapData; 2]> {
    let mut header = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget on this thread with the version-3 header and room for two words.
    (unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, data.as_mut_ptr()) } == 0).then_some(data)
}

/// Whether this thread, and threads at its nice value, may use idle priority; starts the
/// monitor (at this thread's priority: call it from an ordinary thread, not a lowered one),
/// and says once, as a warning, when they may not.
pub fn idle_priority_available() -> bool {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let available = this_thread_attr().is_ok_and(|attr| may_leave_idle(attr.nice)) && monitor_running();
    if !available && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "a thread at idle CPU priority could not be raised back (LimitNICE=+0 in the unit allows it), so a flooding client's searches compete with the bus for the cores"
        );
    }
    available
}

/// Work run at idle priority so far (guards that lowered a thread, and residents' pieces of
/// work done), and how much of it the monitor raised back before it was done.
pub fn idle_counts() -> (u64, u64) {
    (ENTERED.load(Ordering::Relaxed), RAISED.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::lower_priority;

    /// This thread's policy, nice value and slice.
    fn attr_now() -> (u32, i32, u64) {
        let attr = this_thread_attr().expect("sched_getattr on this thread");
        (attr.policy, attr.nice, attr.runtime)
    }

    const IDLE: u32 = libc::SCHED_IDLE as u32;

    /// Waits (up to 5 s) for the monitor to raise this thread back from idle priority.
    fn wait_until_raised() {
        let deadline = Instant::now() + Duration::from_secs(5);
        while attr_now().0 == IDLE {
            assert!(Instant::now() < deadline, "the monitor never raised the thread back");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn idle_priority_is_held_for_the_guards_life_and_the_thread_gets_its_own_back() {
        std::thread::spawn(|| {
            lower_priority(5).expect("lowering one's own priority needs no privilege");
            crate::sched::Throughput::for_this_thread();
            let before = attr_now();
            {
                let idle = IdlePriority::enter();
                assert!(idle.held(), "the tests run as root, who may raise a thread's priority again");
                assert_eq!(attr_now().0, IDLE, "idle priority while the guard is held");
                let nested = IdlePriority::enter();
                assert!(!nested.held(), "a nested guard changes nothing");
            }
            assert_eq!(attr_now(), before, "the policy, nice value and long slice are back");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_held_past_the_bound_is_raised_back_before_its_guard_drops() {
        std::thread::spawn(|| {
            let before = attr_now();
            let (_, raised) = idle_counts();
            let idle = IdlePriority::enter_for(Duration::from_millis(20));
            assert!(idle.held());
            assert_eq!(attr_now().0, IDLE);
            wait_until_raised();
            assert_eq!(attr_now(), before, "raised back to what it had");
            assert!(idle_counts().1 > raised, "counted as raised back");
            drop(idle);
            assert_eq!(attr_now(), before);
            assert!(registry().held.iter().all(|held| held.tid != unsafe { libc::gettid() }), "unregistered when dropped");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_resident_waits_at_idle_priority_is_raised_when_its_work_outlasts_the_bound_and_lowers_itself_after() {
        std::thread::spawn(|| {
            let ordinary = attr_now();
            let resident = IdleResident::settle().expect("the tests run as root, who may raise a thread's priority again");
            assert_eq!(attr_now().0, IDLE, "idle while it waits for work");
            let handle = resident.handle();
            assert!(handle.work_queued(2) && handle.work_queued(2), "room for two");
            assert!(!handle.work_queued(2), "a third is refused");
            let (entered, raised) = idle_counts();
            // The first piece outlasts the bound (counted from when it was queued).
            wait_until_raised();
            assert_eq!(attr_now(), ordinary, "raised back to what it had");
            assert!(idle_counts().1 > raised, "counted as raised back");
            resident.work_done();
            assert_eq!(attr_now().0, IDLE, "lowered again once that piece is done");
            // The second is done within its new bound.
            resident.work_done();
            assert_eq!(attr_now().0, IDLE);
            assert!(idle_counts().0 >= entered + 2, "each piece is counted as run at idle priority");
            assert_eq!(resident.watch.busy_since.load(Ordering::SeqCst), 0, "no bound runs while nothing is queued");
            assert!(handle.work_queued(2), "room again");
            resident.work_done();
            drop(resident);
            assert_eq!(attr_now(), ordinary, "ordinary again when it stops being a resident");
            assert!(registry().residents.iter().all(|w| w.tid != unsafe { libc::gettid() }), "unregistered");
        })
        .join()
        .unwrap();
    }

    /// Clears `CAP_SYS_NICE` from this thread's effective capabilities (capabilities are per
    /// thread).
    fn drop_cap_sys_nice_on_this_thread() {
        let mut header = CapHeader { version: CAP_VERSION_3, pid: 0 };
        let mut data = capabilities().expect("capget");
        data[0].effective &= !(1 << CAP_SYS_NICE);
        // SAFETY: capset on this thread with the version-3 header and two words.
        assert_eq!(unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) }, 0, "capset");
    }

    #[test]
    fn rlimit_nice_counts_down_from_20() {
        assert!(!nice_within(5, 14) && nice_within(5, 15), "nice 5 needs 15");
        assert!(nice_within(0, 20) && nice_within(5, 20), "LimitNICE=+0 (20) covers nice 0 and above");
        assert!(!nice_within(0, 0) && !nice_within(-5, 20), "the default limit covers nothing, nor 20 a negative nice");
    }

    /// Without `CAP_SYS_NICE` and with the default `RLIMIT_NICE` of 0, a thread could not be
    /// raised back, so it is not lowered. (Raising the limit needs `CAP_SYS_RESOURCE`, which
    /// the test machine's root lacks; the unit's `LimitNICE=` is set by systemd.)
    #[test]
    fn without_cap_sys_nice_or_rlimit_nice_a_thread_is_not_lowered() {
        std::thread::spawn(|| {
            lower_priority(5).expect("lowering one's own priority needs no privilege");
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit fills the limit it is given.
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut limit) }, 0);
            let before = attr_now();
            drop_cap_sys_nice_on_this_thread();
            let idle = IdlePriority::enter();
            assert_eq!(idle.held(), nice_within(before.1, limit.rlim_cur), "lowered only if the limit lets it back");
            if !idle.held() {
                assert_eq!(attr_now(), before, "left as it was");
                return;
            }
            drop(idle);
            assert_eq!(attr_now(), before, "raised back through the limit alone");
        })
        .join()
        .unwrap();
    }
}
