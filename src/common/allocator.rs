//! The process's allocator: mimalloc, asked the way its own `malloc` is fastest.
//!
//! mimalloc replaced glibc's malloc (a proxied request makes many small, short-lived allocations,
//! and glibc's malloc and free were about a tenth of the profile). The `mimalloc` crate hands
//! every Rust allocation to `mi_malloc_aligned`, whose fast path covers blocks of at most 1 KiB
//! only: a larger one with Rust's usual alignment of 8 (hyper's and rustls's buffers, an answer's
//! body, a log line) went through mimalloc's over-allocating aligned path, about ten times a
//! getJob request, each some 300 instructions more than a plain `mi_malloc` and leaving a
//! block mimalloc must look up again when it is freed. Every mimalloc block is aligned to at
//! least a word (8 bytes), so an allocation asking no more than that is a plain `mi_malloc`;
//! only a larger alignment goes through the aligned calls. BENCHMARKS.md has the measurement.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The alignment every mimalloc block has, whatever its size: a machine word.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc as the global allocator (`#[global_allocator]` in the binary).
pub struct Allocator;

// SAFETY: each call hands mimalloc's own functions a size and (where it is more than a word) the
// layout's alignment, as their contracts ask; mimalloc returns blocks aligned to at least a word
// for the plain calls, null on failure, and frees any block it returned with `mi_free`.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= WORD {
                libmimalloc_sys::mi_malloc(layout.size()) as *mut u8
            } else {
                libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= WORD {
                libmimalloc_sys::mi_zalloc(layout.size()) as *mut u8
            } else {
                libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl.
        unsafe { libmimalloc_sys::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl; the block keeps the layout's alignment.
        unsafe {
            if layout.align() <= WORD {
                libmimalloc_sys::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align())
                    as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size the proxy allocates, at every alignment, comes back aligned as asked, keeps
    /// what was written through a realloc, and zeroed when asked.
    #[test]
    fn blocks_are_aligned_as_asked_and_keep_their_bytes() {
        let allocator = Allocator;
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [
                1,
                7,
                8,
                24,
                40,
                100,
                1000,
                1025,
                3000,
                8192,
                20_000,
                1 << 20,
            ] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; each block is freed once, with its layout.
                unsafe {
                    let p = allocator.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    std::ptr::write_bytes(p, 0xa5, size);
                    let q = allocator.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc {size} align {align}");
                    assert!(std::slice::from_raw_parts(q, size)
                        .iter()
                        .all(|&b| b == 0xa5));
                    allocator.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let z = allocator.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size} align {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    allocator.dealloc(z, layout);
                }
            }
        }
    }
}
