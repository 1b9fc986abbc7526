//! The test binary's allocator: the system one, plus a per-thread record of
//! the largest single allocation since `reset_peak`, so a hostile-input test
//! sees a parser reserving memory its input does not justify.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct PeakTracking;

thread_local! {
    // const-initialised and without a destructor: touching it never allocates.
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = PEAK.try_with(|p| {
        if size > p.get() {
            p.set(size)
        }
    });
}

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for PeakTracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
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
