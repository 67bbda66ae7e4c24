//! The runtime's kernels' work shared with helper threads that stay awake between operators.
//!
//! tract's executor, a rayon pool, hands each split operator to a sleeping pool thread, which
//! wakes another, and the caller sleeps until both are done: three wake-ups an operator. On
//! the 2-vCPU VM of docs/vs-onnxruntime.md they cost about 60 µs an operator, where
//! YOLOv8n-320's int8 layers take 160 µs on average: two threads ran its plan at 0.71× the
//! speed of one. Here the calling thread starts on the first chunk at once, helpers claim
//! chunks from the same counter as they arrive, and the caller waits only for chunks a helper
//! has already claimed. A helper keeps looking for work for [`SPIN`] after its last chunk,
//! yielding the CPU, so the operators of one inference find it awake; then it sleeps until the
//! next one wakes it.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tract_onnx::prelude::*;

/// How long a helper keeps looking for work after its last chunk, before it sleeps.
const SPIN: Duration = Duration::from_micros(300);

/// Chunks per thread: a chunk a helper claims late costs the caller at most its length.
const CHUNKS_PER_THREAD: usize = 4;

/// `f(first, chunk)` over `out` cut into chunks of whole `unit`-long units (`first`: the
/// chunk's first unit) on this thread and up to `threads − 1` helpers. Each unit is written
/// by one call; the first error (or panic) of any call is returned (or resumed) once all
/// claimed chunks are done. Where the helpers are busy with another caller's operator (a
/// chunk that splits its own work, or another detector's thread), on this thread alone.
pub fn run<T: Send>(
    threads: usize,
    out: &mut [T],
    unit: usize,
    f: impl Fn(usize, &mut [T]) -> TractResult<()> + Sync,
) -> TractResult<()> {
    // The last unit may be short.
    let units = out.len().div_ceil(unit);
    let Some(shared) = helpers(threads.saturating_sub(1)).filter(|_| units >= 2) else {
        return f(0, out);
    };
    if shared.busy.swap(true, SeqCst) {
        return f(0, out);
    }
    let chunk_units = units.div_ceil((CHUNKS_PER_THREAD * threads).min(units));
    let chunks = units.div_ceil(chunk_units);
    let (base, len) = (out.as_mut_ptr() as usize, out.len());
    let failure: Mutex<Option<Failure>> = Mutex::new(None);
    let call = |i: usize| {
        let start = i * chunk_units * unit;
        let end = ((i + 1) * chunk_units * unit).min(len);
        // SAFETY: chunk `i` is claimed once (`Job::next`), and chunks do not overlap.
        let chunk =
            unsafe { std::slice::from_raw_parts_mut((base as *mut T).add(start), end - start) };
        let outcome = match catch_unwind(AssertUnwindSafe(|| f(i * chunk_units, chunk))) {
            Ok(Ok(())) => return,
            Ok(Err(e)) => Failure::Error(e),
            Err(panic) => Failure::Panic(panic),
        };
        failure.lock().unwrap().get_or_insert(outcome);
    };
    let job = Job {
        next: AtomicUsize::new(0),
        chunks,
        seats: AtomicUsize::new(threads - 1),
        call: &call,
    };
    shared.publish(&job);
    job.work();
    shared.retract();
    shared.busy.store(false, SeqCst);
    match failure.into_inner().unwrap() {
        None => Ok(()),
        Some(Failure::Error(e)) => Err(e),
        Some(Failure::Panic(p)) => resume_unwind(p),
    }
}

enum Failure {
    Error(TractError),
    Panic(Box<dyn std::any::Any + Send>),
}

/// One split operator: `call(i)` for each chunk `i < chunks`, claimed through `next`, by the
/// caller and at most `seats` helpers (`[board] threads` counts the caller).
struct Job<'a> {
    next: AtomicUsize,
    chunks: usize,
    seats: AtomicUsize,
    call: &'a (dyn Fn(usize) + Sync),
}

impl Job<'_> {
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, SeqCst);
            if i >= self.chunks {
                return;
            }
            (self.call)(i);
        }
    }
}

/// What the caller and its helpers share.
struct Shared {
    /// The job on offer (null when none): a `Job` on the caller's stack, kept alive until
    /// `users` is back to 0 after it is withdrawn.
    job: AtomicPtr<Job<'static>>,
    /// Helpers that may be reading `job`.
    users: AtomicUsize,
    /// Bumped at each job offered, for the helpers to tell a new one.
    generation: AtomicUsize,
    /// A caller has the helpers.
    busy: AtomicBool,
    /// Helpers asleep, woken by `wake` when a job is offered.
    asleep: Mutex<usize>,
    wake: Condvar,
    /// Helpers started.
    started: Mutex<usize>,
}

impl Shared {
    fn publish(&self, job: &Job) {
        // SAFETY: only the lifetime is erased; `retract` waits for every reader to be done.
        let erased = unsafe { std::mem::transmute::<&Job, &Job<'static>>(job) };
        self.job.store(erased as *const Job as *mut Job, SeqCst);
        self.generation.fetch_add(1, SeqCst);
        if *self.asleep.lock().unwrap() > 0 {
            self.wake.notify_all();
        }
    }

    /// Withdraws the job and waits for the helpers inside it to finish their chunks.
    fn retract(&self) {
        self.job.store(std::ptr::null_mut(), SeqCst);
        while self.users.load(SeqCst) != 0 {
            std::hint::spin_loop();
        }
    }

    fn helper(&self) {
        let mut seen = self.generation.load(SeqCst);
        loop {
            let idle = Instant::now();
            while self.generation.load(SeqCst) == seen {
                if idle.elapsed() < SPIN {
                    // Yielding, not spinning: tract's own split operators wake rayon's
                    // threads, which may need this core.
                    std::thread::yield_now();
                    continue;
                }
                let mut asleep = self.asleep.lock().unwrap();
                *asleep += 1;
                while self.generation.load(SeqCst) == seen {
                    asleep = self.wake.wait(asleep).unwrap();
                }
                *asleep -= 1;
            }
            seen = self.generation.load(SeqCst);
            // Counted before the job is read: `retract` then waits for this helper, or this
            // helper reads null.
            self.users.fetch_add(1, SeqCst);
            let job = self.job.load(SeqCst);
            if !job.is_null() {
                // SAFETY: the job stays alive while `users` counts this helper.
                let job = unsafe { &*job };
                if job
                    .seats
                    .fetch_update(SeqCst, SeqCst, |s| s.checked_sub(1))
                    .is_ok()
                {
                    job.work();
                }
            }
            self.users.fetch_sub(1, SeqCst);
        }
    }
}

/// The helpers, at least `n` of them started, if `n` > 0.
fn helpers(n: usize) -> Option<&'static Shared> {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    if n == 0 {
        return None;
    }
    let shared = SHARED.get_or_init(|| Shared {
        job: AtomicPtr::new(std::ptr::null_mut()),
        users: AtomicUsize::new(0),
        generation: AtomicUsize::new(0),
        busy: AtomicBool::new(false),
        asleep: Mutex::new(0),
        wake: Condvar::new(),
        started: Mutex::new(0),
    });
    let mut started = shared.started.lock().unwrap();
    while *started < n {
        let spawned = std::thread::Builder::new()
            .name("ocelli-kernels".into())
            .spawn(move || shared.helper());
        // Without a helper the work stays on the calling thread.
        if spawned.is_err() {
            break;
        }
        *started += 1;
    }
    Some(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unit written once, by the call given its first unit, whatever the thread count,
    /// with a short last unit, and with calls splitting their own work (run serially).
    #[test]
    fn each_unit_is_written_once() {
        for threads in [1, 2, 3, 4] {
            for (len, unit) in [(1000, 7), (10, 4), (64, 8), (5, 10), (16, 16)] {
                let mut out = vec![0u32; len];
                run(threads, &mut out, unit, |first, chunk| {
                    for (i, v) in chunk.iter_mut().enumerate() {
                        *v += (first * unit + i) as u32 + 1;
                    }
                    let mut inner = vec![0u8; 64];
                    run(threads, &mut inner, 1, |_, c| {
                        c.fill(1);
                        Ok(())
                    })?;
                    assert!(inner.iter().all(|v| *v == 1));
                    Ok(())
                })
                .unwrap();
                let want: Vec<u32> = (1..=len as u32).collect();
                assert_eq!(
                    out, want,
                    "{threads} threads, {len} values in units of {unit}"
                );
            }
        }
    }

    /// An error or a panic in any chunk reaches the caller once the others are done, and the
    /// helpers serve the next call.
    #[test]
    fn failures_reach_the_caller() {
        let mut out = vec![0u8; 4096];
        let err = run(2, &mut out, 16, |first, _| {
            if first == 128 {
                tract_onnx::tract_core::internal::bail!("chunk at {first}");
            }
            Ok(())
        });
        assert_eq!(err.unwrap_err().to_string(), "chunk at 128");
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            run(2, &mut out, 16, |first, _| {
                assert!(first != 0, "first chunk");
                Ok(())
            })
        }));
        assert!(panicked.is_err());
        run(2, &mut out, 16, |_, c| {
            c.fill(3);
            Ok(())
        })
        .unwrap();
        assert!(out.iter().all(|v| *v == 3));
    }
}
