//! The global allocator and its one setting.
//!
//! The only `unsafe` code of the project: two calls to mimalloc's C API for its options
//! (`mi_option_set_default`, and `mi_option_get` in the test), which take and return plain
//! integers. The root crate denies `unsafe_code` and allows it in this module alone; the
//! library crates forbid it.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_long};

/// The dataflow allocates and frees many small records per event (keys, feature rows,
/// contexts) on every worker thread; mimalloc's per-thread free lists serve that pattern in
/// about a third less time than the system allocator (BENCHMARKS.md, "Third lever: the
/// allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long mimalloc keeps freed memory before it gives it back to the system, unless
/// `MIMALLOC_PURGE_DELAY` says otherwise: 10 s instead of its 1 s. The sinks' Parquet writers
/// free and allocate again buffers of a similar size (encoded pages, compressed chunks) with
/// every file, every second or so; at 1 s much of that memory went back to the system and was
/// faulted in again, and zeroed, often as 2 MiB pages: about 60,000 page faults and 5% of a
/// model-free backfill's time on the columnar bench's million events, against 4,000–9,000 at
/// 10 s, for 4–7% more resident memory (BENCHMARKS.md, "The allocator's purge delay, shared
/// user ids"). Memory freed for good still goes back, 10 s later.
pub const PURGE_DELAY_MS: c_long = 10_000;

/// mimalloc v3's `mi_option_purge_delay`: its index in `mi_option_t`, for which
/// `libmimalloc-sys` has no constant (`purge_delay_is_the_option_we_set` checks it).
const MI_OPTION_PURGE_DELAY: c_int = 15;

unsafe extern "C" {
    fn mi_option_set_default(option: c_int, value: c_long);
    #[cfg(test)]
    fn mi_option_get(option: c_int) -> c_long;
}

/// Sets [`PURGE_DELAY_MS`] unless the environment set the option (mimalloc reads
/// `MIMALLOC_*` variables when the process loads, and `set_default` leaves those alone).
pub fn tune() {
    // SAFETY: sets one process-wide integer option; mimalloc checks the index and reads the
    // value when it next purges. No memory is touched.
    unsafe { mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_delay_is_the_option_we_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads one process-wide integer option.
        let get = || unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
        // mimalloc v3's default purge delay; no other option's default is 1000, so a release
        // whose `mi_option_t` moved the index fails here instead of setting another option.
        assert_eq!(get(), 1000);
        tune();
        assert_eq!(get(), PURGE_DELAY_MS);
    }
}
