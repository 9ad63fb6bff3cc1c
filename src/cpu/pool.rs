//! A persistent thread pool for the per-op parallel loops of a forward pass.
//!
//! A decode step runs about a hundred parallel matrix products of a few
//! hundred microseconds each, so the cost of handing out work matters:
//! spawning threads or boxing closures per op would show in tokens/s. Here
//! the workers stay alive, spin briefly on a generation counter after each
//! job (the next op usually follows within microseconds) and only then park.
//! The calling thread always takes share 0 of the work itself.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(300);

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    n_threads: usize,
    generation: AtomicUsize,
    pending: AtomicUsize,
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    /// Set when a share panicked on a worker; the owner re-raises it.
    panicked: AtomicBool,
    /// Written only by the thread that owns the pool, before it bumps
    /// `generation`; read by workers after they observe the new generation.
    job: UnsafeCell<Option<Job>>,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is only written while no worker reads it (all workers have
// finished the previous generation, see `ThreadPool::run`), and the pointee
// is `Sync`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// `run` is not reentrant; this catches misuse in debug builds.
    busy: AtomicBool,
}

impl ThreadPool {
    /// A pool that runs jobs on `n_threads` threads, the caller included.
    pub fn new(n_threads: usize) -> Self {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            n_threads,
            generation: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            job: UnsafeCell::new(None),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..n_threads)
            .map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("chimera-worker-{index}"))
                    .spawn(move || worker(&shared, index))
                    .expect("spawning a worker thread")
            })
            .collect();
        Self {
            shared,
            workers,
            busy: AtomicBool::new(false),
        }
    }

    pub fn n_threads(&self) -> usize {
        self.shared.n_threads
    }

    /// Runs `f(i)` for every `i` in `0..n_threads`, in parallel, and returns
    /// when all have finished. Share 0 runs on the calling thread.
    pub fn run<F: Fn(usize) + Sync>(&self, f: F) {
        let n = self.shared.n_threads;
        if n == 1 {
            f(0);
            return;
        }
        let was_busy = self.busy.swap(true, Ordering::Acquire);
        assert!(!was_busy, "ThreadPool::run is not reentrant");
        let job: &(dyn Fn(usize) + Sync) = &f;
        // SAFETY: erases the lifetime of `f`; we do not return before every
        // worker has finished calling it (the `pending` wait below).
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(job) };
        unsafe { *self.shared.job.get() = Some(job) };
        self.shared.pending.store(n - 1, Ordering::Relaxed);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        if self.shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        f(0);
        // Spin briefly (shares usually finish together), then yield so a
        // worker that lost its core to another process can get it back.
        let mut spins = 0u32;
        while self.shared.pending.load(Ordering::Acquire) != 0 {
            spins = spins.saturating_add(1);
            if spins < 4096 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        self.busy.store(false, Ordering::Release);
        if self.shared.panicked.swap(false, Ordering::AcqRel) {
            panic!("a thread-pool worker panicked");
        }
    }

    /// Splits `0..n` into one contiguous range per thread (sizes differ by at
    /// most `align`) and runs `f(range)` on each in parallel. Range starts are
    /// multiples of `align`.
    pub fn for_ranges<F: Fn(std::ops::Range<usize>) + Sync>(&self, n: usize, align: usize, f: F) {
        let t = self.n_threads();
        let units = n.div_ceil(align.max(1));
        if t == 1 || units < 2 {
            f(0..n);
            return;
        }
        self.run(|i| {
            let r = split(units, t, i);
            let (start, end) = (r.start * align, (r.end * align).min(n));
            if start < end {
                f(start..end);
            }
        });
    }
}

/// The `i`-th of `parts` nearly equal contiguous pieces of `0..n`.
pub fn split(n: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    let base = n / parts;
    let extra = n % parts;
    let start = i * base + i.min(extra);
    let len = base + usize::from(i < extra);
    start..start + len
}

fn worker(shared: &Shared, index: usize) {
    // Generation 0 is the state at spawn; loading it here instead could
    // skip a job published before this thread got to run.
    let mut seen = 0;
    loop {
        let spin_start = Instant::now();
        let mut spins = 0u32;
        loop {
            let g = shared.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            if shared.shutdown.load(Ordering::Relaxed) {
                return;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && spin_start.elapsed() > SPIN {
                let mut guard = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
                shared.sleepers.fetch_add(1, Ordering::SeqCst);
                while shared.generation.load(Ordering::SeqCst) == seen
                    && !shared.shutdown.load(Ordering::SeqCst)
                {
                    guard = shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                shared.sleepers.fetch_sub(1, Ordering::SeqCst);
                drop(guard);
                if shared.shutdown.load(Ordering::SeqCst) {
                    return;
                }
            }
            std::hint::spin_loop();
        }
        // SAFETY: the owner wrote `job` before publishing this generation and
        // keeps the closure alive until `pending` reaches zero.
        let job = unsafe { (*shared.job.get()).expect("job published with its generation") };
        let f = unsafe { &*job };
        // A panicking share must still count down, or the owner waits forever.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(index))).is_err() {
            shared.panicked.store(true, Ordering::Release);
        }
        shared.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A raw pointer that parallel shares may write through at disjoint
/// indices. Each user documents why its indices do not overlap.
#[derive(Clone, Copy)]
pub struct SharedMut<T>(*mut T);

unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    pub fn new(s: &mut [T]) -> Self {
        Self(s.as_mut_ptr())
    }

    /// # Safety
    /// No two threads may hold overlapping ranges at once, and the range must
    /// lie inside the slice this was made from.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_share_runs_once_per_job() {
        let pool = ThreadPool::new(3);
        let hits = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
        for _ in 0..1000 {
            pool.run(|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
        }
        for h in &hits {
            assert_eq!(h.load(Ordering::Relaxed), 1000);
        }
    }

    #[test]
    fn ranges_cover_everything_once() {
        let pool = ThreadPool::new(2);
        for n in [0usize, 1, 7, 64, 1000, 1001] {
            let mut seen = vec![0u8; n];
            let out = SharedMut::new(&mut seen);
            pool.for_ranges(n, 4, |r| {
                assert_eq!(r.start % 4, 0);
                // SAFETY: for_ranges hands out disjoint ranges.
                let s = unsafe { out.slice(r.start, r.len()) };
                s.iter_mut().for_each(|v| *v += 1);
            });
            assert!(seen.iter().all(|&v| v == 1), "n = {n}");
        }
    }

    #[test]
    fn workers_wake_after_parking() {
        let pool = ThreadPool::new(2);
        let count = AtomicU64::new(0);
        pool.run(|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        std::thread::sleep(SPIN * 4);
        pool.run(|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 4);
    }
}
