//! Bounds the memory a script can take: a counting global allocator (the
//! binary installs it) and a check the engine makes on every operation.
//!
//! Rhai's own size limits walk a whole array after every change, which
//! makes filling one quadratic, and cannot see a string that doubles in one
//! step; a byte count kept by the allocator costs one atomic add per
//! allocation and catches both.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static IN_USE: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the bytes it has handed out.
pub struct CountingAlloc;

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            IN_USE.fetch_add(new_size, Ordering::Relaxed);
            IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

/// Bytes allocated and not yet freed (0 when the allocator is not installed).
pub fn in_use() -> usize {
    IN_USE.load(Ordering::Relaxed)
}

/// The heap size above which scripts are stopped, in bytes:
/// `$VMSCRIPT_MAX_MEMORY_MB`, else 4 GiB.
pub fn limit() -> usize {
    std::env::var("VMSCRIPT_MAX_MEMORY_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(4 << 30, |mb| mb << 20)
}

/// The error message when the heap is over `limit`, if it is.
pub fn exceeded(limit: usize) -> Option<String> {
    let used = in_use();
    (used > limit).then(|| {
        format!(
            "the script holds {} MiB of memory, over the limit of {} MiB (set VMSCRIPT_MAX_MEMORY_MB to change it)",
            used >> 20,
            limit >> 20
        )
    })
}
