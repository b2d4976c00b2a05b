//! The SIGBUS guard: an I/O error under a segment's mapping fails a read
//! instead of killing the broker.
//!
//! Segments are read through shared mappings (`segment.rs`, Mapping rules).
//! When the kernel cannot fill a mapped page — the disk returns an I/O error
//! on page-in, or someone else shrank the file below the page — the access
//! raises SIGBUS, whose default action kills the process: every partition
//! of every shard would go down for one bad sector.
//!
//! So every mapping the log makes is registered here, and a process-wide
//! SIGBUS handler (installed once, with the first registration) looks the
//! faulting address up:
//! - **in a registered range**: it maps an anonymous zero page over the
//!   faulting page (`MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS`, read-only),
//!   sets that range's *faulted* flag and returns. The access is retried and
//!   reads zeros. The log checks the flag after every read through a mapping
//!   and fails the read with EIO instead of returning what it read
//!   (`Segment::with_data`); zeros are never a valid batch header, so the
//!   walk itself stops at the damage too.
//! - **anywhere else** (a fault that is not ours, or a SIGBUS sent by
//!   `kill`): the previous handler runs (Rust's runtime installs one that
//!   tells stack overflows apart), or the default action is restored and
//!   the signal taken again: the process dies as it did before.
//!
//! The handler takes no lock and allocates nothing: the registry is a
//! fixed array of atomics ([`GUARDED_MAPPINGS_MAX`] slots), each a small
//! sequence lock so the handler never reads a range half written. A range
//! stays registered until the last owner of its mapping is gone (slices
//! handed to Fetch responses included), and is unregistered *before* it is
//! unmapped, so an address the kernel hands to another mapping afterwards
//! is never mistaken for ours.
//!
//! What the guard does not do: bytes already handed out (a Fetch response
//! being written to a socket) that fault later read zeros — a consumer's
//! CRC check refuses them — and a kernel copy from them (`send`) fails with
//! EFAULT instead. The mapping is marked faulted either way, so the next
//! read of the segment fails. If the registry is full, a new mapping is used
//! unguarded (one warning says so): a fault there kills the process, as
//! before this module existed. A SIGBUS handler installed later by someone
//! else replaces this one.

use std::{
    ffi::c_int,
    sync::{
        atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering},
        Once,
    },
};

/// Most mappings guarded at once, process-wide. Linux lets a process hold
/// at most `vm.max_map_count` mappings (65,530 by default), so with default
/// settings every mapping of the broker fits. A slot is 32 bytes: the table
/// is 2 MiB of zero-initialised memory, of which only the pages up to the
/// highest slot ever used are touched (slots are taken lowest first, and the
/// handler scans only up to that high-water mark). When every slot is taken,
/// a new mapping is still used, unguarded, and one warning is logged.
pub(crate) const GUARDED_MAPPINGS_MAX: usize = 65_536;

/// The process's registry.
static REGISTRY: Registry<GUARDED_MAPPINGS_MAX> = Registry::new();

/// Installs the handler once.
static INSTALL: Once = Once::new();

/// The handler SIGBUS had before ours (`sighandler_t`) and its flags, kept
/// to forward faults that are not ours. Written once, before ours is
/// installed.
static PREVIOUS_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PREVIOUS_FLAGS: AtomicI32 = AtomicI32::new(0);

/// Bytes of a memory page, read at install time (`sysconf` is not
/// async-signal-safe, so the handler must not call it).
static PAGE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Whether a full registry was already reported.
static FULL_REPORTED: AtomicBool = AtomicBool::new(false);

/// One registered range. `sequence` is odd while the slot is being changed;
/// `len == 0` marks a free slot.
struct Slot {
    sequence: AtomicUsize,
    start: AtomicUsize,
    len: AtomicUsize,
    faulted: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            sequence: AtomicUsize::new(0),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            faulted: AtomicBool::new(false),
        }
    }
}

/// A fixed table of address ranges, safe to read from a signal handler:
/// only atomic loads and stores, no lock, no allocation. All accesses are
/// `SeqCst`: registration is rare and the lookup runs only on a fault.
pub(crate) struct Registry<const SLOTS: usize> {
    slots: [Slot; SLOTS],
    /// One past the highest slot ever taken: lookups scan no further.
    high_water: AtomicUsize,
}

impl<const SLOTS: usize> Registry<SLOTS> {
    pub(crate) const fn new() -> Self {
        Registry {
            slots: [const { Slot::new() }; SLOTS],
            high_water: AtomicUsize::new(0),
        }
    }

    /// Takes a free slot for `[start, start + len)`; `None` when the table
    /// is full.
    ///
    /// # Panics
    /// If `len` is 0 (an empty range guards nothing and would read as free).
    pub(crate) fn register(&self, start: usize, len: usize) -> Option<usize> {
        assert!(len > 0, "a registered range holds at least one byte");
        assert!(
            start.checked_add(len).is_some(),
            "a registered range lies in the address space"
        );
        for (index, slot) in self.slots.iter().enumerate() {
            let sequence = slot.sequence.load(Ordering::SeqCst);
            if !sequence.is_multiple_of(2) || slot.len.load(Ordering::SeqCst) != 0 {
                continue;
            }
            // Claim it: any change since `sequence` was read (a registration,
            // a release) moved the sequence on, so the slot is still free.
            if slot
                .sequence
                .compare_exchange(sequence, sequence + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue;
            }
            slot.start.store(start, Ordering::SeqCst);
            slot.len.store(len, Ordering::SeqCst);
            slot.faulted.store(false, Ordering::SeqCst);
            slot.sequence.store(sequence + 2, Ordering::SeqCst);
            self.high_water.fetch_max(index + 1, Ordering::SeqCst);
            return Some(index);
        }
        None
    }

    /// Frees slot `index`, taken by [`Registry::register`].
    ///
    /// # Panics
    /// If the slot is not registered.
    pub(crate) fn unregister(&self, index: usize) {
        let slot = self.slots.get(index);
        let slot = slot.filter(|slot| slot.len.load(Ordering::SeqCst) != 0);
        let slot = slot.unwrap_or_else(|| panic!("unregistering slot {index}, which is not registered"));
        // The owner is the only writer of a taken slot: its sequence is even.
        let sequence = slot.sequence.fetch_add(1, Ordering::SeqCst);
        assert!(
            sequence.is_multiple_of(2),
            "a registered slot is changed only by its owner"
        );
        slot.len.store(0, Ordering::SeqCst);
        slot.start.store(0, Ordering::SeqCst);
        slot.sequence.store(sequence + 2, Ordering::SeqCst);
    }

    /// The slot whose range holds `address`, read consistently (a slot
    /// changed while it was read is skipped: its owner is not the one
    /// faulting on it, see the module doc).
    pub(crate) fn lookup(&self, address: usize) -> Option<usize> {
        let scanned = self.high_water.load(Ordering::SeqCst).min(SLOTS);
        for (index, slot) in self.slots.iter().enumerate().take(scanned) {
            let before = slot.sequence.load(Ordering::SeqCst);
            if !before.is_multiple_of(2) {
                continue;
            }
            let start = slot.start.load(Ordering::SeqCst);
            let len = slot.len.load(Ordering::SeqCst);
            if slot.sequence.load(Ordering::SeqCst) != before {
                continue;
            }
            if len > 0 && address >= start && address - start < len {
                return Some(index);
            }
        }
        None
    }

    pub(crate) fn mark_faulted(&self, index: usize) {
        if let Some(slot) = self.slots.get(index) {
            slot.faulted.store(true, Ordering::SeqCst);
        }
    }

    pub(crate) fn faulted(&self, index: usize) -> bool {
        self.slots
            .get(index)
            .is_some_and(|slot| slot.faulted.load(Ordering::SeqCst))
    }
}

/// A mapped range registered with the process's guard, unregistered when
/// released or dropped. Release it before the range is unmapped.
pub(crate) struct Guard {
    /// `None`: the registry was full, the range is not guarded.
    slot: Option<usize>,
}

impl Guard {
    /// Registers `[start, start + len)`, a mapping starting on a page
    /// boundary, installing the handler first if this is the first one.
    ///
    /// # Panics
    /// If `len` is 0 or `start` is not page-aligned (the handler replaces
    /// whole pages, which must all lie in the mapping).
    pub(crate) fn register(start: *const u8, len: usize) -> Guard {
        INSTALL.call_once(install);
        let page = PAGE_BYTES.load(Ordering::SeqCst);
        let start = start as usize;
        assert!(
            page.is_power_of_two() && start.is_multiple_of(page),
            "a guarded mapping starts on a page boundary"
        );
        let slot = REGISTRY.register(start, len);
        if slot.is_none() && !FULL_REPORTED.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                guarded_mappings_max = GUARDED_MAPPINGS_MAX,
                "every SIGBUS guard slot is taken: new segment mappings are used unguarded, \
                 and an I/O error under one of them kills the process"
            );
        }
        Guard { slot }
    }

    /// Whether an access to the range faulted and read a zero page.
    pub(crate) fn faulted(&self) -> bool {
        self.slot.is_some_and(|slot| REGISTRY.faulted(slot))
    }

    /// Unregisters the range (idempotent).
    pub(crate) fn release(&mut self) {
        if let Some(slot) = self.slot.take() {
            REGISTRY.unregister(slot);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.release();
    }
}

/// Installs `on_sigbus` as the SIGBUS handler, keeping the previous one.
fn install() {
    // SAFETY: sysconf with a valid name has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = usize::try_from(page).ok().filter(|page| page.is_power_of_two());
    // 4 KiB when the system cannot say: a smaller page than the real one
    // would only leave part of a faulting page unreplaced (it faults again
    // and is forwarded), never reach past a mapping.
    PAGE_BYTES.store(page.unwrap_or(4096), Ordering::SeqCst);
    // SAFETY: a zeroed sigaction is a valid value to fill in; `sa_mask` is
    // then initialised with sigemptyset.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: same as above; sigaction fills `previous` in.
    let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigbus as extern "C" fn(c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
    // SA_ONSTACK: run on the thread's alternate stack when it has one, as
    // Rust's own handler needs for a stack overflow we forward to it.
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `action.sa_mask` is a valid sigset_t to initialise; then a
    // valid action and out-pointer are passed to sigaction. No other thread
    // installs SIGBUS handlers inside this crate (`Once`).
    let installed = unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, &mut previous)
    };
    if installed != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "installing the SIGBUS guard failed: an I/O error under a mapped segment kills the process"
        );
        return;
    }
    // The handler can run only once ours is installed, but forwarding
    // reads these: a fault between the two stores is forwarded to SIG_DFL
    // at worst, which is what a fault that is not ours gets anyway.
    PREVIOUS_FLAGS.store(previous.sa_flags, Ordering::SeqCst);
    PREVIOUS_HANDLER.store(previous.sa_sigaction, Ordering::SeqCst);
}

/// The SIGBUS handler. Async-signal-safe: atomics, `mmap`, `sigaction`
/// and `raise` only; `errno` is kept.
extern "C" fn on_sigbus(signal: c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: errno is thread-local; saved here and restored on every return.
    let errno = unsafe { *libc::__errno_location() };
    if !info.is_null() && replace_faulting_page(info) {
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = errno };
        return;
    }
    forward(signal, info, context);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Maps a zero page over the page holding the faulting address if it lies in
/// a registered range; whether it did.
fn replace_faulting_page(info: *mut libc::siginfo_t) -> bool {
    // SAFETY: `info` is the non-null siginfo the kernel passed (SA_SIGINFO).
    // `si_code > 0` means the kernel raised the signal for a fault, and only
    // then is `si_addr` the faulting address.
    let address = unsafe {
        if (*info).si_code <= 0 {
            return false;
        }
        (*info).si_addr() as usize
    };
    let Some(slot) = REGISTRY.lookup(address) else {
        return false;
    };
    let page = PAGE_BYTES.load(Ordering::SeqCst);
    if !page.is_power_of_two() {
        return false;
    }
    let page_start = address & !(page - 1);
    // SAFETY: the page lies in a live registered mapping: the faulting access
    // holds its owner, and ranges are unregistered before they are unmapped.
    // The mapping starts on a page boundary (checked at registration), so
    // the whole page lies in its pages and nothing else is replaced. The
    // mapping is read-only and only read through slices of its bytes, which
    // now read zeros on this page.
    let mapped = unsafe {
        libc::mmap(
            page_start as *mut libc::c_void,
            page,
            libc::PROT_READ,
            libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        return false;
    }
    REGISTRY.mark_faulted(slot);
    true
}

/// Hands a SIGBUS that is not ours to the handler before ours, or restores
/// the default action and takes the signal again (the process dies with
/// SIGBUS as it would have without the guard).
fn forward(signal: c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let handler = PREVIOUS_HANDLER.load(Ordering::SeqCst);
    let flags = PREVIOUS_FLAGS.load(Ordering::SeqCst);
    if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
        if flags & libc::SA_SIGINFO != 0 {
            // SAFETY: sigaction returned this as the SA_SIGINFO handler in
            // force before ours: a function of this signature.
            let previous: extern "C" fn(c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(handler) };
            previous(signal, info, context);
        } else {
            // SAFETY: sigaction returned this as the plain handler in force
            // before ours: a function of this signature.
            let previous: extern "C" fn(c_int) = unsafe { std::mem::transmute(handler) };
            previous(signal);
        }
        return;
    }
    // SAFETY: a zeroed sigaction with SIG_DFL is the default action;
    // sigaction and raise are async-signal-safe. SIGBUS is blocked while
    // this handler runs, so the raised signal is taken when it returns, with
    // the default action; a fault is also taken again by retrying the access.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut default.sa_mask);
        libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
        libc::raise(libc::SIGBUS);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;

    #[test]
    fn ranges_are_found_until_unregistered_and_slots_are_reused() {
        let registry = Registry::<3>::new();
        let a = registry.register(0x10_000, 0x2000).unwrap();
        let b = registry.register(0x40_000, 0x1000).unwrap();
        assert_ne!(a, b);
        assert_eq!(registry.lookup(0x10_000), Some(a));
        assert_eq!(registry.lookup(0x11_fff), Some(a));
        assert_eq!(registry.lookup(0x12_000), None, "the end is outside");
        assert_eq!(registry.lookup(0x0_ffff), None);
        assert_eq!(registry.lookup(0x40_800), Some(b));
        registry.unregister(a);
        assert_eq!(registry.lookup(0x10_000), None);
        assert_eq!(registry.lookup(0x40_800), Some(b));
        let c = registry.register(0x80_000, 0x1000).unwrap();
        assert_eq!(c, a, "the lowest free slot is taken");
        assert_eq!(registry.lookup(0x80_000), Some(c));
    }

    #[test]
    fn a_full_registry_refuses_and_frees_again() {
        let registry = Registry::<2>::new();
        let a = registry.register(0x1000, 0x1000).unwrap();
        let _b = registry.register(0x3000, 0x1000).unwrap();
        assert_eq!(registry.register(0x5000, 0x1000), None);
        registry.unregister(a);
        assert_eq!(registry.register(0x5000, 0x1000), Some(a));
    }

    #[test]
    fn the_faulted_flag_belongs_to_one_registration() {
        let registry = Registry::<2>::new();
        let a = registry.register(0x1000, 0x1000).unwrap();
        assert!(!registry.faulted(a));
        registry.mark_faulted(a);
        assert!(registry.faulted(a));
        registry.unregister(a);
        let again = registry.register(0x9000, 0x1000).unwrap();
        assert_eq!(again, a);
        assert!(!registry.faulted(again), "a new registration starts unfaulted");
    }

    #[test]
    #[should_panic(expected = "not registered")]
    fn unregistering_a_free_slot_is_a_bug() {
        Registry::<1>::new().unregister(0);
    }

    /// A real fault: a mapped file shrunk under the mapping reads zeros
    /// where it would have raised SIGBUS, and the guard says so.
    #[test]
    fn a_fault_in_a_guarded_mapping_reads_zeros_and_is_flagged() {
        let file = tempfile::tempfile().unwrap();
        let page = 4096 * 4; // at least one page on any supported system
        file.set_len(2 * page as u64).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &[7u8; 16], page as u64).unwrap();
        // SAFETY: a private test file, read only through `map`.
        let map = unsafe { memmap2::MmapOptions::new().len(2 * page).map(&file) }.unwrap();
        let mut guard = Guard::register(map.as_ptr(), map.len());
        assert!(!guard.faulted());
        assert_eq!(map[page], 7);
        file.set_len(0).unwrap();
        // SAFETY: a volatile read of a byte inside the mapping, to make the
        // access happen after the shrink.
        let byte = unsafe { std::ptr::read_volatile(map.as_ptr().add(page + 1)) };
        assert_eq!(byte, 0);
        assert!(guard.faulted());
        guard.release();
        guard.release();
    }

    /// Set in the child process of `a_fault_outside_every_guarded_range_still_kills_the_process`.
    const CHILD_ENV: &str = "SHARDLINE_SIGBUS_CHILD";

    /// In the child: a fault in a mapping that is not registered, with the
    /// handler installed. Returns (passes) in the parent's own test run.
    #[test]
    fn unguarded_fault_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let file = tempfile::tempfile().unwrap();
        let page = 4096 * 4;
        file.set_len(2 * page as u64).unwrap();
        // SAFETY: a private test file, read only through `map`.
        let map = unsafe { memmap2::MmapOptions::new().len(2 * page).map(&file) }.unwrap();
        // SAFETY: as above; `other` is only registered, never read.
        let other = unsafe { memmap2::MmapOptions::new().len(page).map(&file) }.unwrap();
        let _guard = Guard::register(other.as_ptr(), other.len());
        file.set_len(0).unwrap();
        // SAFETY: a volatile read of a byte inside the mapping; it faults.
        let byte = unsafe { std::ptr::read_volatile(map.as_ptr().add(page + 1)) };
        // Not reached: the process dies of the fault.
        std::process::exit(i32::from(byte) + 3);
    }

    #[test]
    fn a_fault_outside_every_guarded_range_still_kills_the_process() {
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sigbus::tests::unguarded_fault_child", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
    }
}
