//! The test binary's allocator: the system one, plus a per-thread record of
//! the largest single allocation since `reset_peak`, so a hostile-input test
//! sees a parser reserving memory its input does not justify.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct PeakTracking;

thread_local! {
    // const-initialised and without a destructor: touching it never allocates.
    static PEAK: Cell<usize> = const { Cell::new(0) };
    // Bytes this thread allocated less those it freed, and the most since
    // `reset_live_peak` (what a single-threaded piece of code holds at once).
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static LIVE_PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = PEAK.try_with(|p| {
        if size > p.get() {
            p.set(size)
        }
    });
}

fn note_live(delta: isize) {
    let _ = LIVE.try_with(|l| {
        l.set(l.get() + delta);
        let _ = LIVE_PEAK.try_with(|p| p.set(p.get().max(l.get())));
    });
}

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for PeakTracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        note_live(layout.size() as isize);
        // SAFETY: the caller's contract is forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        note_live(layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_live(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // Both blocks are held while the bytes move.
        note_live(new_size as isize);
        note_live(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

pub fn reset_peak() {
    PEAK.with(|p| p.set(0));
}

/// The largest single allocation this thread made since `reset_peak`.
pub fn peak() -> usize {
    PEAK.with(|p| p.get())
}

/// Starts measuring what this thread holds at most from now.
pub fn reset_live_peak() {
    LIVE.with(|l| LIVE_PEAK.with(|p| p.set(l.get())));
}

/// The most bytes this thread held at once since `reset_live_peak`, above
/// what it held then.
pub fn live_peak_since(start: isize) -> isize {
    LIVE_PEAK.with(|p| p.get()) - start
}

/// What this thread holds now (allocated less freed by it).
pub fn live() -> isize {
    LIVE.with(|l| l.get())
}
