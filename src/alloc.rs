/*!
The global allocator: a bump arena in front of the system allocator.

baton is started once per job and most of its runs last a few milliseconds,
so what costs is not allocating but touching fresh memory. Every first
touch of a page is a page fault, and on a virtual machine one costs several
microseconds. musl's allocator gives each size class its own mapping, so a
run of `baton run` used to fault in about 25 heap pages. Here allocations are
carved one after another from a 256 KiB zero-filled static (`.bss`: pages
exist only once touched), so a whole run fits in a few pages.

Memory freed in the arena is reused only when it was the last allocation (a
stack-like pattern, which covers the temporary strings and vectors of a
decision). The rest is not reused: a long-waiting baton that is woken many
times eventually fills the arena, and from then on every allocation goes
to the system allocator, so the arena bounds the waste at 256 KiB.
*/

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const SIZE: usize = 256 * 1024;

#[repr(C, align(4096))]
struct Memory([u8; SIZE]);

/// Bump allocation in its own arena, then [`System`].
pub(crate) struct Bump {
    memory: UnsafeCell<Memory>,
    /// Offset of the first free byte of the arena.
    next: AtomicUsize,
}

// SAFETY: the arena's bytes are only reached through pointers that `alloc`
// hands out, and an atomic bump of `next` reserves each range for exactly
// one owner.
unsafe impl Sync for Bump {}

impl Bump {
    pub(crate) const fn new() -> Self {
        Bump {
            memory: UnsafeCell::new(Memory([0; SIZE])),
            next: AtomicUsize::new(0),
        }
    }

    fn base(&self) -> usize {
        self.memory.get() as usize
    }

    /// The arena offset of `ptr`, if it points into the arena.
    fn offset(&self, ptr: *mut u8) -> Option<usize> {
        (ptr as usize)
            .checked_sub(self.base())
            .filter(|o| *o < SIZE)
    }
}

// SAFETY: every range handed out is within the arena (`Bump::memory`), aligned as asked,
// and reserved by a successful compare-exchange, so no two live
// allocations overlap; anything else is delegated to `System` unchanged.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut cur = self.next.load(Relaxed);
        loop {
            let start = (self.base() + cur).next_multiple_of(layout.align()) - self.base();
            let Some(end) = start.checked_add(layout.size()).filter(|e| *e <= SIZE) else {
                // SAFETY: `layout` is the caller's valid, non-zero layout.
                return unsafe { System.alloc(layout) };
            };
            match self.next.compare_exchange_weak(cur, end, Relaxed, Relaxed) {
                Ok(_) => return (self.base() + start) as *mut u8,
                Err(now) => cur = now,
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match self.offset(ptr) {
            // The last allocation is given back; others stay used.
            Some(off) => {
                let _ = self
                    .next
                    .compare_exchange(off + layout.size(), off, Relaxed, Relaxed);
            }
            // SAFETY: `ptr` came from `System.alloc` with this layout.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(off) = self.offset(ptr) else {
            // SAFETY: `ptr` came from `System` with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        };
        // The last allocation grows or shrinks in place.
        if off + new_size <= SIZE
            && self
                .next
                .compare_exchange(off + layout.size(), off + new_size, Relaxed, Relaxed)
                .is_ok()
        {
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the alignment is the caller's and `new_size` is non-zero.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as for `alloc`.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both ranges are live, distinct allocations of at least
            // `layout.size()` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size());
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_allocations_are_aligned_disjoint_and_fall_back() {
        static A: Bump = Bump::new();
        let a = &A;
        let mut seen: Vec<(usize, usize)> = Vec::new();
        // SAFETY: valid layouts; every pointer is checked and freed once.
        unsafe {
            for (size, align) in [(1, 1), (24, 8), (100, 64), (4096, 4096), (7, 2)] {
                let l = Layout::from_size_align(size, align).unwrap();
                let p = a.alloc(l);
                assert!(!p.is_null() && (p as usize).is_multiple_of(align));
                assert!(a.offset(p).is_some());
                let r = (p as usize, p as usize + size);
                assert!(seen.iter().all(|s| r.1 <= s.0 || s.1 <= r.0));
                seen.push(r);
            }
            // The last one is given back and its place reused.
            let l = Layout::from_size_align(16, 8).unwrap();
            let p = a.alloc(l);
            a.dealloc(p, l);
            assert_eq!(a.alloc(l), p);
            // Growing the last allocation keeps it in place and its bytes.
            *p = 42;
            let q = a.realloc(p, l, 64);
            assert_eq!((q, *q), (p, 42));
            // Beyond the arena: the system allocator.
            let big = Layout::from_size_align(SIZE, 8).unwrap();
            let s = a.alloc(big);
            assert!(!s.is_null() && a.offset(s).is_none());
            a.dealloc(s, big);
        }
    }
}
