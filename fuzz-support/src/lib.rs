//! Support shared by Shardline's fuzz crates (`net/fuzz`, `log/fuzz`,
//! `raft/fuzz`). Every fuzz target links it (`use shardline_fuzz_support as
//! _;` where it uses nothing else from it), which brings:
//!
//! ## libFuzzer's malloc limit on the stable toolchain
//! libFuzzer enforces `-malloc_limit_mb` (any single allocation above the
//! limit is reported as out-of-memory, with the input saved as `oom-…`)
//! through malloc hooks that a sanitizer runtime installs for it: it calls
//! `__sanitizer_install_malloc_and_free_hooks` if that function exists.
//! Without a sanitizer — the stable toolchain has none — the function does
//! not exist and the limit is silently ignored; an allocation that is
//! never touched (`vec![0; n]` is `calloc`, lazily mapped) does not show
//! in the RSS limit either. This crate defines that function and a global
//! allocator that calls the installed hook before every allocation, so
//! libFuzzer's own check works. Under a sanitizer (`scripts/fuzz` sets
//! `--cfg fuzzing_sanitizer`) the runtime's own hooks are used instead.
//!
//! ## Scratch directories and seeds
//! [`Scratch`]: a fresh directory per input, on tmpfs when there is one.
//! [`write_seed`]: how the seed tools (`net-seeds`, `log-seeds`,
//! `raft-seeds`) lay out what they write.

use std::path::{Path, PathBuf};

#[cfg(not(fuzzing_sanitizer))]
mod malloc_hooks {
    use std::{
        alloc::{GlobalAlloc, Layout, System},
        ffi::{c_int, c_void},
        sync::atomic::{AtomicUsize, Ordering},
    };

    /// The hooks libFuzzer installs (`MallocHook`, `FreeHook` in
    /// FuzzerLoop.cpp).
    type MallocHook = unsafe extern "C" fn(*const c_void, usize);
    type FreeHook = unsafe extern "C" fn(*const c_void);

    /// The installed malloc hook as an address, 0 while none is.
    static MALLOC_HOOK: AtomicUsize = AtomicUsize::new(0);

    /// What a sanitizer runtime provides and libFuzzer calls once, at start.
    #[no_mangle]
    pub extern "C" fn __sanitizer_install_malloc_and_free_hooks(
        malloc_hook: Option<MallocHook>,
        _free_hook: Option<FreeHook>,
    ) -> c_int {
        MALLOC_HOOK.store(malloc_hook.map_or(0, |hook| hook as usize), Ordering::Release);
        1
    }

    fn report(size: usize) {
        let hook = MALLOC_HOOK.load(Ordering::Acquire);
        if hook != 0 {
            // SAFETY: the only non-zero value ever stored is a `MallocHook`
            // libFuzzer handed over, valid for the life of the process. It
            // only counts, compares `size` with the limit and, past it,
            // reports and exits; it reads nothing through the pointer.
            unsafe {
                let hook: MallocHook = std::mem::transmute::<usize, MallocHook>(hook);
                hook(std::ptr::null(), size);
            }
        }
    }

    /// The system allocator, telling libFuzzer the size of every allocation
    /// first.
    pub struct HookedAllocator;

    // SAFETY: every call is passed unchanged to `System`; `report` neither
    // allocates through this allocator's state nor touches the memory.
    unsafe impl GlobalAlloc for HookedAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            report(layout.size());
            System.alloc(layout)
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            report(layout.size());
            System.alloc_zeroed(layout)
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            report(new_size);
            System.realloc(ptr, layout, new_size)
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }
    }

    #[global_allocator]
    static ALLOCATOR: HookedAllocator = HookedAllocator;
}

/// A directory for one input, on tmpfs when there is one (no disk I/O),
/// empty when made and removed when dropped.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A new, empty directory; `name` must be unique among the scratch
    /// directories alive at once in this process.
    pub fn new(name: &str) -> Scratch {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let path = base.join(format!("shardline-fuzz-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("scratch directory");
        Scratch { path }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` as the file `name` in it.
    pub fn write(&self, name: &str, contents: &[u8]) {
        std::fs::write(self.path.join(name), contents).expect("write into the scratch directory");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes one seed input, `OUT_DIR/<target>/<name>`: `flags` (the target's
/// flag byte, if it reads one) followed by `contents`.
pub fn write_seed(out: &Path, target: &str, name: &str, flags: Option<u8>, contents: &[u8]) {
    let dir = out.join(target);
    std::fs::create_dir_all(&dir).expect("seed directory");
    let seed: Vec<u8> = flags.into_iter().chain(contents.iter().copied()).collect();
    std::fs::write(dir.join(name), seed).expect("write seed");
}
