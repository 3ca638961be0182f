//! What the daemon tells the CPU scheduler about its threads. Answering the bus and recording
//! an event are latency work: short bursts that should run as soon as they wake. Embedding a
//! text, a search's walk and an analysis are throughput work: milliseconds of computing at a
//! time. On a small host a thread that wakes (ours, `dbus-daemon`'s, a client's) otherwise
//! waits out the computation's time slice, up to a scheduler tick (4 ms at 250 Hz).
//!
//! Throughput work asks for a long slice (`sched_attr.sched_runtime`, the EEVDF scheduler's
//! slice request, Linux 6.12 and later): a thread woken with the default, shorter slice may
//! then preempt it at once. Older kernels take no such request, and after the first try
//! nothing more is asked. It needs no privilege; a refusal costs only latency, so it is logged
//! once and not asked again.
//!
//! A long slice is only a request: a woken thread that has lately run more than its share
//! still waits for the next tick. Work done for a caller beyond its share (a flood's searches:
//! the query's embedding and the search, [`Urgency::Background`]) runs at idle priority
//! instead, on a thread that stays there while it waits too ([`IdleResident`], the engine's
//! background lane) or lowered around one computation ([`IdlePriority`]); every other thread
//! preempts it the moment it wakes, and the time it is held there is bounded.

mod idle;

pub use idle::{IdlePriority, IdleResident, ResidentHandle, idle_counts, idle_priority_available};

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

/// The slice throughput work asks for: longer than the default (0.7–2.8 ms by core count), so
/// a thread woken with the default may preempt it. Two computations on one core take turns
/// at the scheduler's tick after it (every 4–8 ms at 250 Hz).
const THROUGHPUT_SLICE_NS: u64 = 4_000_000;

/// `SCHED_FLAG_RESET_ON_FORK`: kept as it was (clearing it needs `CAP_SYS_NICE`).
const RESET_ON_FORK: u64 = 0x01;

/// Set once the kernel has shown it takes no slice requests (before 6.12) or refused one:
/// from then on nothing is asked.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Throughput guards held on this thread (nested reads ask once).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// `struct sched_attr` as the kernel first defined it (`SCHED_ATTR_SIZE_VER0`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Throughput work on this thread while held: the long slice is asked for when the first
/// guard on the thread is entered, and the scheduler's default given back when it drops (a
/// pooled thread may run latency work next; a slice an administrator set for the whole
/// process is not restored). Not `Send`: it must drop on the thread it changed.
pub struct Throughput {
    _on_this_thread: PhantomData<*const ()>,
}

impl Throughput {
    /// Marks this thread's work from now until the guard drops as throughput work.
    #[must_use = "the slice is given back when the guard drops"]
    pub fn enter() -> Self {
        if DEPTH.replace(DEPTH.get() + 1) == 0 {
            request(THROUGHPUT_SLICE_NS);
        }
        Self { _on_this_thread: PhantomData }
    }

    /// Marks this thread as throughput work for the rest of its life (a dedicated worker).
    pub fn for_this_thread() {
        DEPTH.set(DEPTH.get() + 1);
        request(THROUGHPUT_SLICE_NS);
    }
}

impl Drop for Throughput {
    fn drop(&mut self) {
        if DEPTH.replace(DEPTH.get() - 1) == 1 {
            // A slice of 0 gives the thread the scheduler's default back.
            request(0);
        }
    }
}

/// Asks for `slice_ns` for this thread unless the kernel takes no such requests; a refusal
/// is logged once.
fn request(slice_ns: u64) {
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return;
    }
    match set_slice(slice_ns) {
        Ok(Some(0)) => {
            // An ordinary thread with no slice to report: the kernel predates slice requests.
            UNSUPPORTED.store(true, Ordering::Relaxed);
        }
        Ok(_) => {}
        Err(error) => {
            if !UNSUPPORTED.swap(true, Ordering::Relaxed) {
                tracing::warn!(%error, "could not ask the CPU scheduler for a long slice for searches and embedding; bus calls may wait behind them");
            }
        }
    }
}

/// Asks for `slice_ns` for this thread (0: the default), keeping its policy, nice value and
/// flags. Returns the slice it had, or `None` for a thread of another policy (idle,
/// real-time, deadline), which keeps what it was given.
fn set_slice(slice_ns: u64) -> std::io::Result<Option<u64>> {
    let attr = this_thread_attr()?;
    if attr.policy != libc::SCHED_OTHER as u32 && attr.policy != libc::SCHED_BATCH as u32 {
        return Ok(None);
    }
    set_attr(0, &SchedAttr { runtime: slice_ns, ..attr })?;
    Ok(Some(attr.runtime))
}

/// Whom a computation is for: a caller within its share of the daemon (the default), or one
/// asking for more than its share at once (a flood), whose computing may wait for idle cores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Urgency {
    #[default]
    Interactive,
    Background,
}

/// Sets thread `tid`'s (0: this thread's) policy, nice value and slice to `attr`'s, its
/// flags kept but for reset-on-fork.
fn set_attr(tid: libc::pid_t, attr: &SchedAttr) -> std::io::Result<()> {
    let wanted = SchedAttr { size: std::mem::size_of::<SchedAttr>() as u32, flags: attr.flags & RESET_ON_FORK, ..*attr };
    // SAFETY: sched_setattr on a thread of this process with a fully initialized attribute of
    // that size.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &wanted as *const SchedAttr, 0u32) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// This thread's scheduling attributes.
fn this_thread_attr() -> std::io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: sched_getattr on this thread (pid 0) with a buffer of the size passed, which the
    // kernel fills within that size.
    if unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut SchedAttr, size, 0u32) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(attr)
}

/// Lowers this thread's priority by `step` nice levels (needs no privilege; threads it starts
/// inherit it).
pub fn lower_priority(step: i32) -> std::io::Result<()> {
    // SAFETY: plain syscalls on this thread's own id; getpriority's -1 is told from an error
    // by errno, cleared before.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
        if (nice == -1 && *libc::__errno_location() != 0) || libc::setpriority(libc::PRIO_PROCESS, tid, (nice + step).min(19)) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's policy, nice value and slice.
    fn attr_now() -> (u32, i32, u64) {
        let attr = this_thread_attr().expect("sched_getattr on this thread");
        (attr.policy, attr.nice, attr.runtime)
    }

    #[test]
    fn throughput_work_gets_a_long_slice_and_gives_it_back_keeping_policy_and_nice() {
        std::thread::spawn(|| {
            lower_priority(3).expect("lowering one's own priority needs no privilege");
            let (policy, nice, default_slice) = attr_now();
            assert!(policy == libc::SCHED_OTHER as u32, "the test thread is an ordinary one");
            // Kernels before 6.12 report no slice for ordinary threads and ignore the request.
            let long = if default_slice == 0 { 0 } else { THROUGHPUT_SLICE_NS };
            {
                let _work = Throughput::enter();
                assert_eq!(attr_now(), (policy, nice, long), "the long slice, policy and nice kept");
                {
                    let _nested = Throughput::enter();
                }
                assert_eq!(attr_now().2, long, "a nested guard leaves the outer one's slice");
            }
            assert_eq!(attr_now(), (policy, nice, default_slice), "the default slice is back");
            Throughput::for_this_thread();
            {
                let _read = Throughput::enter();
            }
            assert_eq!(attr_now(), (policy, nice, long), "a dedicated worker keeps its slice for good");
        })
        .join()
        .unwrap();
    }
}
