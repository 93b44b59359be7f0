//! Bounds the memory a script can take: a counting global allocator (the
//! binary installs it) and a check the engine makes on every operation.
//!
//! Rhai's own size limits walk a whole array after every change, which
//! makes filling one quadratic, and cannot see a string that doubles in one
//! step; a byte count kept by the allocator costs one atomic add per
//! allocation and catches both. A single call that asks for a size at
//! once (`s.pad(1 << 30, 'x')`) is checked before it allocates
//! ([`register_growth`]).
//!
//! `GlobalAlloc` can only be implemented with `unsafe`: this is the only
//! unsafe code outside the process module, and it only forwards to the
//! system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rhai::{Array, Blob, Dynamic, Engine, ImmutableString, INT};

use super::errors::{self, ScriptResult};

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

/// Fails, naming `what` and the limit, when `bytes` more would take the
/// heap over `limit`.
pub fn check_room(what: &str, bytes: usize, limit: usize) -> Result<(), String> {
    let used = in_use();
    if used.saturating_add(bytes) <= limit {
        return Ok(());
    }
    Err(format!(
        "{what} would take {} MiB more, and the script holds {} MiB of the limit of {} MiB (set VMSCRIPT_MAX_MEMORY_MB to change it)",
        bytes >> 20,
        used >> 20,
        limit >> 20
    ))
}

/// Rhai's functions that grow a value by a size given as a number (`pad`,
/// `blob(len)`), checked against the memory limit before they allocate.
/// One such call can ask for any size at once, and the engine only looks
/// at the heap between operations; Rhai's own size limits would do it,
/// but they walk a whole array after each change (see the module
/// documentation). These overrides behave as Rhai's own otherwise.
pub fn register_growth(e: &mut Engine) {
    use super::docs::func;
    let limit = limit();
    let check =
        move |what: &str, bytes: usize| check_room(what, bytes, limit).map_err(errors::host);
    let wanted = |len: INT, have: usize| usize::try_from(len).unwrap_or(0).saturating_sub(have);
    func(
        "pad(string: String, len: int, character: char)",
        "Pads the string with `character` to `len` characters (bounded by the memory limit).",
    )
    .register_into_engine(
        e,
        move |s: &mut ImmutableString, len: INT, c: char| -> ScriptResult<()> {
            let n = wanted(len, s.chars().count());
            if n > 0 {
                check("pad", n.saturating_mul(c.len_utf8()))?;
                s.make_mut().extend(std::iter::repeat_n(c, n));
            }
            Ok(())
        },
    );
    func(
        "pad(string: String, len: int, padding: String)",
        "Pads the string with copies of `padding` to `len` characters (bounded by the memory limit).",
    )
    .register_into_engine(
        e,
        move |s: &mut ImmutableString, len: INT, padding: &str| -> ScriptResult<()> {
            let n = wanted(len, s.chars().count());
            if n > 0 && !padding.is_empty() {
                check("pad", n.saturating_mul(4))?;
                s.make_mut().extend(padding.chars().cycle().take(n));
            }
            Ok(())
        },
    );
    func(
        "pad(array: Array, len: int, item: any)",
        "Pads the array with copies of `item` to `len` items (bounded by the memory limit).",
    )
    .register_into_engine(
        e,
        move |a: &mut Array, len: INT, item: Dynamic| -> ScriptResult<()> {
            let n = wanted(len, a.len());
            if n > 0 {
                check("pad", n.saturating_mul(std::mem::size_of::<Dynamic>()))?;
                a.resize(a.len() + n, item);
            }
            Ok(())
        },
    );
    func(
        "pad(blob: Blob, len: int, value: int)",
        "Pads the BLOB with the byte `value` to `len` bytes (bounded by the memory limit).",
    )
    .register_into_engine(
        e,
        move |b: &mut Blob, len: INT, value: INT| -> ScriptResult<()> {
            let n = wanted(len, b.len());
            if n > 0 {
                check("pad", n)?;
                b.resize(b.len() + n, (value & 0xff) as u8);
            }
            Ok(())
        },
    );
    func(
        "blob(len: int) -> Blob",
        "A BLOB of `len` zero bytes (bounded by the memory limit).",
    )
    .register_into_engine(e, move |len: INT| -> ScriptResult<Blob> {
        let n = wanted(len, 0);
        check("blob", n)?;
        Ok(vec![0; n])
    });
    func(
        "blob(len: int, value: int) -> Blob",
        "A BLOB of `len` bytes `value` (bounded by the memory limit).",
    )
    .register_into_engine(e, move |len: INT, value: INT| -> ScriptResult<Blob> {
        let n = wanted(len, 0);
        check("blob", n)?;
        Ok(vec![(value & 0xff) as u8; n])
    });
}
