//! Writes seed corpora for the log's `segment_recovery` and `index_file`
//! targets with the real log: the record sets of real clients (the
//! `record_batch` seeds `net-seeds` extracted from captured Produce
//! requests) are appended to a log, and its segment files are the
//! `segment_recovery` seeds; the index the log writes when it seals the
//! `index_file` target's segment is that target's seed.
//!
//! `log-seeds SEEDS_DIR` reads `SEEDS_DIR/record_batch` and writes
//! `SEEDS_DIR/segment_recovery` and `SEEDS_DIR/index_file` (byte 0 of each
//! seed is the targets' flag byte, 0). Run by `scripts/fuzz seeds`.

use std::path::Path;

use bytes::Bytes;
use shardline_fuzz_support::write_seed;
use shardline_log::{Log, Offset};
use shardline_log_fuzz::{index_case, run, segment_file, small_config, Scratch};

/// Appends each record set to a fresh log and writes the segment the log
/// wrote (its batches, without the preallocated tail) as a seed.
async fn segment_seeds(seeds: &Path) {
    let mut written = 0;
    for entry in std::fs::read_dir(seeds.join("record_batch")).expect("record_batch seeds") {
        let entry = entry.expect("seed entry");
        let seed = std::fs::read(entry.path()).expect("seed");
        let Some(records) = seed.get(1..) else { continue };
        let scratch = Scratch::new("log");
        let log = Log::open(scratch.path(), small_config()).await.expect("open a log");
        // Twice, so the segment holds offsets that run on across appends.
        for _ in 0..2 {
            if log.append(Bytes::copy_from_slice(records)).await.is_err() {
                break;
            }
        }
        let size = usize::try_from(log.size_bytes()).expect("segment size");
        log.close().await.expect("close");
        if size == 0 {
            continue;
        }
        let segment = std::fs::read(segment_file(scratch.path(), Offset(0), "log")).expect("segment");
        let name = entry.file_name();
        write_seed(
            seeds,
            "segment_recovery",
            &name.to_string_lossy(),
            Some(0),
            &segment[..size.min(segment.len())],
        );
        written += 1;
    }
    println!("log-seeds: {written} segment seeds");
}

/// The index the log writes for the `index_file` target's sealed segment.
async fn index_seed(seeds: &Path) {
    let case = index_case();
    let scratch = Scratch::new("log");
    let log = Log::open(scratch.path(), small_config()).await.expect("open a log");
    for batch in &case.sealed {
        log.append(Bytes::copy_from_slice(batch)).await.expect("append");
    }
    log.roll().await.expect("roll");
    log.append(Bytes::copy_from_slice(&case.active)).await.expect("append");
    log.close().await.expect("close");
    let index = std::fs::read(segment_file(scratch.path(), Offset(0), "index")).expect("sealed index");
    write_seed(seeds, "index_file", "sealed-by-the-log", Some(0), &index);
}

fn main() {
    let seeds = std::env::args_os().nth(1).expect("usage: log-seeds SEEDS_DIR");
    let seeds = Path::new(&seeds).to_path_buf();
    run(async move {
        segment_seeds(&seeds).await;
        index_seed(&seeds).await;
    });
}
