//! Serialising a frame record and publishing it allocate nothing once warmed up.
//!
//! Its own test binary: the counting allocator is global. It counts only on the publishing
//! thread, while it is marked, so the writer thread and the clients may allocate as they like.

mod emit_fixtures;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use emit_fixtures::Scene;
use ocelli::emit::{SocketConfig, SocketServer};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    // try_with: the allocator also runs while thread-locals are torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARM_UP: u64 = 200;
const MEASURED: u64 = 1000;

#[test]
fn record_and_publish_allocate_nothing_per_frame() {
    let dir = std::env::temp_dir().join(format!("ocelli-emit-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let server = SocketServer::bind(&SocketConfig::new(dir.join("s.sock"))).unwrap();
    // One client reads everything, one never reads: both the steady and the dropping paths run.
    let reader = UnixStream::connect(server.path()).unwrap();
    let _stalled = UnixStream::connect(server.path()).unwrap();
    let reading =
        std::thread::spawn(move || BufReader::new(reader).lines().map_while(Result::ok).count());
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.stats().clients < 2 {
        assert!(Instant::now() < deadline, "clients did not connect");
        std::thread::sleep(Duration::from_millis(1));
    }

    let scene = Scene::new();
    let mut buf = Vec::new();
    let mut publish = |i| {
        scene.record(i).write_line(&mut buf);
        server.publish(&buf);
    };
    (0..WARM_UP).for_each(&mut publish);
    COUNTING.set(true);
    (WARM_UP..WARM_UP + MEASURED).for_each(&mut publish);
    COUNTING.set(false);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);

    while server.stats().dropped_frames == 0 {
        assert!(
            Instant::now() < deadline,
            "no client was dropped for: the burst did not outrun them"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = server.stats();
    server.shutdown();
    let received = reading.join().unwrap();
    eprintln!("{MEASURED} frames: {allocations} allocations; {received} lines received; {stats:?}");
    assert_eq!(
        allocations, 0,
        "allocations on the publishing thread over {MEASURED} frames"
    );
}
