//! The lossy file system mounted for real (root, /dev/fuse): plain syscalls,
//! then the partition log itself (io_uring writes and fdatasync, mmap reads,
//! SEEK_HOLE) across power cuts. These fail, never skip, when FUSE cannot be
//! mounted: CI must notice that the power-cut tests lost their ground.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::FileExt,
    path::Path,
    rc::Rc,
    time::Duration,
};

use bytes::Bytes;
use log_common::{read_all, run};
use shardline_log::{build_batch, validate, BatchSpec, Durability, Log, LogConfig};
use shardline_powercut::{seed_from_env, LossyMount, SplitMix64, Tear};

/// The log's own test helpers (a glommio executor as a shard runs one; every
/// stored batch read back), one copy for both crates' tests.
#[path = "../../log/tests/common/mod.rs"]
mod log_common;

fn mount(dir: &Path) -> LossyMount {
    LossyMount::mount(dir).unwrap_or_else(|e| panic!("cannot mount the power-cut file system: {e}"))
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

/// A lossy disk mounted on a fresh directory, with an empty `log`
/// directory (its entry durable) in it, and the seeded choices of a run.
struct LogDisk {
    _tmp: tempfile::TempDir,
    disk: LossyMount,
    dir: std::path::PathBuf,
    rng: SplitMix64,
    seed: u64,
}

impl LogDisk {
    fn new(what: &str) -> LogDisk {
        let seed = seed_from_env();
        eprintln!("{what} power-cut seed {seed} (POWERCUT_SEED={seed} replays the cut decisions)");
        let tmp = tempfile::tempdir().unwrap();
        let disk = mount(tmp.path());
        let dir = tmp.path().join("log");
        fs::create_dir(&dir).unwrap();
        sync_dir(tmp.path());
        LogDisk {
            _tmp: tmp,
            disk,
            dir,
            rng: SplitMix64::new(seed),
            seed,
        }
    }

    /// The next cut's choices (when, which tear, the tear's seed) and a
    /// thread that cuts the power that long after it is told the log is
    /// open (a cut during recovery would only fail the open).
    fn arm_cut(&mut self, after_ms_max: u64) -> Cut {
        let after = Duration::from_millis(self.rng.up_to(after_ms_max));
        let tear = Tear::ALL[self.rng.up_to(2) as usize];
        let tear_seed = self.rng.next_u64();
        let switch = self.disk.switch();
        let (opened, wait_open) = std::sync::mpsc::channel::<()>();
        let cutter = std::thread::spawn(move || {
            let _ = wait_open.recv();
            std::thread::sleep(after);
            switch.cut();
        });
        Cut {
            after,
            tear,
            tear_seed,
            opened,
            cutter,
        }
    }
}

/// One armed power cut (`LogDisk::arm_cut`).
struct Cut {
    after: Duration,
    tear: Tear,
    tear_seed: u64,
    /// Tell it the log is open: the clock starts.
    opened: std::sync::mpsc::Sender<()>,
    cutter: std::thread::JoinHandle<()>,
}

#[test]
fn plain_file_io_survives_a_cut_only_where_it_was_synced() {
    let tmp = tempfile::tempdir().unwrap();
    let mut disk = mount(tmp.path());
    let root = tmp.path();
    fs::create_dir(root.join("d")).unwrap();
    sync_dir(root);
    let mut kept = File::create(root.join("d/kept")).unwrap();
    kept.write_all(b"durable").unwrap();
    kept.sync_data().unwrap();
    kept.write_all(b" and not").unwrap();
    sync_dir(&root.join("d"));
    let mut orphan = File::create(root.join("d/orphan")).unwrap();
    orphan.write_all(b"synced data, unsynced name").unwrap();
    orphan.sync_all().unwrap();
    fs::write(root.join("d/new.tmp"), b"x").unwrap();
    fs::rename(root.join("d/new.tmp"), root.join("d/new")).unwrap();
    // A preallocated file with a hole, as a segment is.
    let sparse = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(root.join("d/sparse"))
        .unwrap();
    sparse.set_len(1 << 20).unwrap();
    sparse.write_all_at(b"head", 0).unwrap();
    sparse.sync_data().unwrap();
    sync_dir(&root.join("d"));
    drop((kept, orphan, sparse));
    let before = disk.counters();
    assert!(before.file_syncs >= 3 && before.dir_syncs >= 3, "{before:?}");

    disk.cut();
    assert!(
        fs::read(root.join("d/kept")).is_err(),
        "reads fail once the power is off"
    );
    let report = disk.power_on(Tear::Lose, 1).unwrap();
    assert_eq!(fs::read(root.join("d/kept")).unwrap(), b"durable", "{report}");
    assert_eq!(fs::read(root.join("d/orphan")).unwrap(), b"synced data, unsynced name");
    assert_eq!(
        fs::read(root.join("d/new")).unwrap(),
        b"",
        "renamed and dir-synced, data never synced"
    );
    let sparse = File::open(root.join("d/sparse")).unwrap();
    assert_eq!(sparse.metadata().unwrap().len(), 1 << 20);
    // SAFETY: lseek on a descriptor we own.
    let hole = unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&sparse), 0, libc::SEEK_HOLE) };
    assert_eq!(hole, 4096, "SEEK_HOLE answers through FUSE");

    // Now the orphan's name was never synced: a second cut loses it.
    File::create(root.join("d/orphan2")).unwrap().sync_all().unwrap();
    let report = disk.power_on(Tear::Lose, 2).unwrap();
    assert!(!root.join("d/orphan2").exists(), "{report}");
    assert!(report.to_string().contains("names lost: [orphan2]"), "{report}");
}

fn payload(n: u64) -> Vec<u8> {
    let bytes = 200 + (n * 7919 % 3000) as usize;
    (0..bytes).map(|i| (n as usize * 31 + i) as u8).collect()
}

/// Bytes of the batch header the log does not rewrite start here: base
/// offset (0..8) and leader epoch (12..16) are the log's to set; from the
/// magic on, everything is the sender's and covered by the CRC.
const SENDER_BYTES_FROM: usize = 16;

/// Batch `n` as sent, and the part of it the log must store unchanged.
fn batch(n: u64) -> Vec<u8> {
    build_batch(&BatchSpec::plain(1, 1_700_000_000_000, &payload(n)))
}

fn sender_bytes(n: u64) -> Vec<u8> {
    batch(n)[SENDER_BYTES_FROM..].to_vec()
}

/// Every batch stored, by base offset: the part the sender wrote.
fn stored_batches(log: &Log) -> BTreeMap<i64, Vec<u8>> {
    read_all(log)
        .into_iter()
        .map(|batch| {
            (
                validate(&batch).unwrap().base_offset.0,
                batch[SENDER_BYTES_FROM..].to_vec(),
            )
        })
        .collect()
}

/// Cuts per run of the log test (each a few hundred ms).
const LOG_CUTS: u64 = 12;

#[test]
fn the_log_keeps_every_acknowledged_batch_across_power_cuts() {
    let mut disk = LogDisk::new("log");
    let (seed, dir) = (disk.seed, disk.dir.clone());
    let config = || LogConfig {
        segment_bytes_max: 32 << 10,
        durability: Durability::Always,
        ..LogConfig::default()
    };
    // Offset → payload of every acknowledged batch so far.
    let mut acknowledged: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    let mut sent: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut next_payload = 0u64;
    let mut last_report = String::new();
    for cut in 0..LOG_CUTS {
        let Cut {
            after: cut_after,
            tear,
            tear_seed: cut_seed,
            opened,
            cutter,
        } = disk.arm_cut(300);
        let dir_for_run = dir.clone();
        let first = next_payload;
        let (stored, acked) = run(move || async move {
            let log = Rc::new(Log::open(&dir_for_run, config()).await.unwrap());
            let stored = stored_batches(&log);
            opened.send(()).unwrap();
            let mut acked = Vec::new();
            let mut n = first;
            // Four appenders at a time share fsyncs (group commit), until
            // the power goes (an append fails) or the bound.
            'load: for _ in 0..2000 {
                let mut tasks = Vec::new();
                for _ in 0..4 {
                    let log = Rc::clone(&log);
                    let bytes = batch(n);
                    let id = n;
                    n += 1;
                    tasks.push(glommio::spawn_local(async move {
                        (id, log.append(Bytes::from(bytes)).await)
                    }));
                }
                let mut failed = false;
                for task in tasks {
                    let (id, result) = task.await;
                    match result {
                        Ok(info) => acked.push((id, info.base_offset.0)),
                        Err(_) => failed = true,
                    }
                }
                if failed {
                    break 'load;
                }
            }
            (stored, (acked, n))
        });
        cutter.join().unwrap();
        let (acked, last_payload) = acked;
        // What the previous power-on left must hold every batch acknowledged before it.
        for (offset, bytes) in &acknowledged {
            assert_eq!(
                stored.get(offset),
                Some(bytes),
                "cut {cut}: acknowledged batch at {offset} lost or changed (seed {seed})\n{last_report}"
            );
        }
        for (offset, bytes) in &stored {
            assert!(
                sent.values().any(|s| s == bytes),
                "cut {cut}: batch at {offset} was never sent (seed {seed})\n{last_report}"
            );
        }
        for id in first..last_payload {
            sent.insert(id, sender_bytes(id));
        }
        for (id, offset) in acked {
            acknowledged.insert(offset, sender_bytes(id));
        }
        next_payload = last_payload;
        last_report = disk.disk.power_on(tear, cut_seed).unwrap().to_string();
        eprintln!(
            "cut {cut} ({tear:?}) after {cut_after:?}: {} batches acknowledged so far",
            acknowledged.len()
        );
    }
    // The last power-on, checked once more.
    let stored = run(move || async move { stored_batches(&Log::open(&dir, config()).await.unwrap()) });
    for (offset, bytes) in &acknowledged {
        assert_eq!(
            stored.get(offset),
            Some(bytes),
            "acknowledged batch at {offset} lost or changed (seed {seed})\n{last_report}"
        );
    }
    assert!(disk.disk.counters().file_syncs > 0);
}

#[test]
fn o_direct_writes_reach_the_file_system_and_a_sync_makes_them_durable() {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut disk = mount(tmp.path());
    let path = tmp.path().join("direct");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .expect("O_DIRECT open on FUSE");
    sync_dir(tmp.path());
    // O_DIRECT wants aligned buffers: a 4 KiB-aligned page from the allocator.
    let layout = std::alloc::Layout::from_size_align(4096, 4096).unwrap();
    // SAFETY: non-zero size; freed below with the same layout.
    let buffer = unsafe { std::alloc::alloc_zeroed(layout) };
    // SAFETY: `buffer` is 4096 valid bytes.
    let page = unsafe { std::slice::from_raw_parts_mut(buffer, 4096) };
    page.fill(7);
    file.write_all_at(page, 0).unwrap();
    file.sync_data().unwrap();
    page.fill(9);
    file.write_all_at(page, 4096).unwrap();
    // SAFETY: allocated above with `layout`.
    unsafe { std::alloc::dealloc(buffer, layout) };
    drop(file);
    let report = disk.power_on(Tear::Lose, 0).unwrap();
    assert_eq!(fs::read(&path).unwrap(), vec![7; 4096], "{report}");
}

/// Seeds tried for the out-of-order tail below; about one in ten gives it.
const SCATTER_SEEDS_MAX: u64 = 300;

/// After a power cut the bytes past the last synced position are a torn
/// tail even when a later batch in them reached the disk whole and an
/// earlier one did not (write-back is not in order): recovery must cut the
/// log at the first torn batch, not keep the rest as "damage in the middle"
/// that no reader can get past.
#[test]
fn a_torn_tail_with_a_whole_batch_after_it_is_cut_at_the_first_torn_batch() {
    let synced_batches = 3u64;
    let unsynced_batches = 6u64;
    for seed in 0..SCATTER_SEEDS_MAX {
        let tmp = tempfile::tempdir().unwrap();
        let mut disk = mount(tmp.path());
        let dir = tmp.path().join("log");
        fs::create_dir(&dir).unwrap();
        sync_dir(tmp.path());
        let config = |durability| LogConfig {
            durability,
            ..LogConfig::default()
        };
        let at = dir.clone();
        run(move || async move {
            let log = Log::open(&at, config(Durability::Always)).await.unwrap();
            for n in 0..synced_batches {
                log.append(Bytes::from(build_batch(&BatchSpec::plain(
                    1,
                    1_700_000_000_000,
                    &payload(n),
                ))))
                .await
                .unwrap();
            }
            log.close().await.unwrap();
            // Acknowledged after the write only: these stay in the page cache.
            let log = Log::open(&at, config(Durability::Never)).await.unwrap();
            for n in synced_batches..synced_batches + unsynced_batches {
                log.append(Bytes::from(build_batch(&BatchSpec::plain(
                    1,
                    1_700_000_000_000,
                    &payload(n),
                ))))
                .await
                .unwrap();
            }
            // Dropped without close: a crash.
        });
        let report = disk.power_on(Tear::Scatter, seed).unwrap();
        // Is the tail torn with a whole batch after the first torn one?
        let segment = fs::read(dir.join("00000000000000000000.log")).unwrap();
        let mut position = 0;
        while let Ok(header) = validate(&segment[position..]) {
            position += header.total_bytes();
        }
        let torn_at = position;
        let whole_after = (torn_at + 1..segment.len().saturating_sub(61))
            .any(|p| segment[p + 16] == 2 && validate(&segment[p..]).is_ok());
        if !whole_after {
            continue;
        }
        eprintln!("seed {seed}: torn at byte {torn_at}, a whole batch after it\n{report}");
        let (end, served) = run(move || async move {
            let log = Log::open(&dir, config(Durability::Always)).await.unwrap();
            let end = log.log_end().0;
            let mut served = Vec::new();
            let mut from = log.log_start();
            while from < log.log_end() {
                match log.read(from, 1 << 20, log.log_end()) {
                    Ok(read) => {
                        served.push(read.next_offset.0);
                        from = read.next_offset;
                    }
                    Err(e) => {
                        served.push(-1);
                        eprintln!("read at {} failed: {e}", from.0);
                        break;
                    }
                }
            }
            (end, served)
        });
        assert!(
            !served.contains(&-1),
            "seed {seed}: the log cannot be read up to its end {end} (reads: {served:?})\n{report}"
        );
        assert!(
            (synced_batches as i64..synced_batches as i64 + unsynced_batches as i64).contains(&end),
            "seed {seed}: log end {end}: the tail must be cut at the first torn batch\n{report}"
        );
        return;
    }
    panic!("no seed below {SCATTER_SEEDS_MAX} tore the tail with a whole batch after it: the test proves nothing");
}

/// Cuts per run of the compaction test.
const CLEAN_CUTS: u64 = 8;

/// Keys the compaction test writes (few: every segment holds superseded ones).
const CLEAN_KEYS: u64 = 16;

/// Record `n` of the compaction test: key `n % CLEAN_KEYS`, value `n`.
fn keyed(n: u64) -> Vec<u8> {
    let key = (n % CLEAN_KEYS).to_be_bytes();
    let value = n.to_be_bytes();
    shardline_log::build_keyed_batch(1_000, &[(Some(&key[..]), Some(&value[..]))])
}

/// The cleaner at work while records are appended, and the power cut at
/// a random moment — mid-swap included: after every cut the log holds,
/// for every key, its latest acknowledged record at its offset or a later
/// record of the key that was sent; and every record it holds was sent,
/// at the offset it was acknowledged at.
#[test]
fn the_cleaner_keeps_every_latest_record_across_power_cuts() {
    use log_common::read_records;
    use shardline_log::CleanerConfig;

    let mut disk = LogDisk::new("cleaner");
    let (seed, dir) = (disk.seed, disk.dir.clone());
    let config = || LogConfig {
        segment_bytes_max: 8 << 10,
        index_interval_bytes: 512,
        durability: Durability::Always,
        ..LogConfig::default()
    };
    // Record n → the offset it was acknowledged at.
    let mut acknowledged: BTreeMap<u64, i64> = BTreeMap::new();
    let mut next = 0u64;
    let mut last_report = String::new();
    let check = |stored: &[log_common::StoredRecord],
                 acknowledged: &BTreeMap<u64, i64>,
                 sent_below: u64,
                 when: &str,
                 report: &str| {
        let mut latest_stored: BTreeMap<u64, i64> = BTreeMap::new();
        for (offset, key, value) in stored {
            let n = u64::from_be_bytes(value.as_deref().unwrap().try_into().unwrap());
            assert!(
                n < sent_below,
                "{when}: record {n} was never sent (seed {seed})\n{report}"
            );
            assert_eq!(key.as_deref().unwrap(), &(n % CLEAN_KEYS).to_be_bytes()[..]);
            if let Some(acked_at) = acknowledged.get(&n) {
                assert_eq!(acked_at, offset, "{when}: record {n} moved (seed {seed})\n{report}");
            }
            latest_stored.insert(n % CLEAN_KEYS, *offset);
        }
        let mut latest_acked: BTreeMap<u64, (u64, i64)> = BTreeMap::new();
        for (n, offset) in acknowledged {
            latest_acked.insert(n % CLEAN_KEYS, (*n, *offset));
        }
        for (key, (n, offset)) in latest_acked {
            let kept = latest_stored.get(&key).is_some_and(|stored| *stored >= offset);
            assert!(
                kept,
                "{when}: key {key} lost its latest acknowledged record {n} at {offset} (seed {seed})\n{report}"
            );
        }
    };
    for cut in 0..CLEAN_CUTS {
        let Cut {
            after: cut_after,
            tear,
            tear_seed: cut_seed,
            opened,
            cutter,
        } = disk.arm_cut(400);
        let dir_for_run = dir.clone();
        let first = next;
        let (stored, acked, sent_below, passes) = run(move || async move {
            let log = Rc::new(Log::open(&dir_for_run, config()).await.unwrap());
            let stored = read_records(&log);
            opened.send(()).unwrap();
            let stop = Rc::new(std::cell::Cell::new(false));
            let cleaner = {
                let (log, stop) = (Rc::clone(&log), Rc::clone(&stop));
                glommio::spawn_local(async move {
                    let eager = CleanerConfig {
                        min_cleanable_dirty_ratio: 0.0,
                        ..CleanerConfig::default()
                    };
                    let mut passes = 0u64;
                    while !stop.get() {
                        match log.clean(&eager).await {
                            Ok(Some(_)) => passes += 1,
                            Ok(None) => glommio::timer::sleep(Duration::from_millis(2)).await,
                            Err(_) => break,
                        }
                    }
                    passes
                })
            };
            let mut acked = Vec::new();
            let mut n = first;
            for _ in 0..20_000 {
                let id = n;
                n += 1;
                match log.append(Bytes::from(keyed(id))).await {
                    Ok(info) => acked.push((id, info.base_offset.0)),
                    Err(_) => break,
                }
            }
            stop.set(true);
            let passes = cleaner.await;
            (stored, acked, n, passes)
        });
        cutter.join().unwrap();
        check(&stored, &acknowledged, first, &format!("after cut {cut}"), &last_report);
        acknowledged.extend(acked);
        next = sent_below;
        last_report = disk.disk.power_on(tear, cut_seed).unwrap().to_string();
        eprintln!(
            "cut {cut} ({tear:?}) after {cut_after:?}: {} records acknowledged, {passes} cleaning passes",
            acknowledged.len()
        );
    }
    let stored = run(move || async move { read_records(&Log::open(&dir, config()).await.unwrap()) });
    check(&stored, &acknowledged, next, "at the end", &last_report);
    assert!(
        stored.len() < acknowledged.len() / 2,
        "the cleaner compacted: {} of {} records left",
        stored.len(),
        acknowledged.len()
    );
}
