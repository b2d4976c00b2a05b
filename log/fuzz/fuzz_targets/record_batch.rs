//! RecordBatch validation and offset assignment, as a Produce reaches the
//! log.
//!
//! Input: byte 0 is flags (bit 0: fix the CRC of every batch first; bit 1:
//! append as a leader, stamping epoch `flags >> 2`), the rest is a record
//! set as a client sends it (batches back to back).
//!
//! Checks:
//! - `validate` agrees with `BatchHeader::parse`, `validate_header_only` and
//!   `compute_crc`; writing a base offset and leader epoch keeps a batch
//!   valid and changes only those fields; `build_batch` rebuilds an accepted
//!   compressed batch byte for byte (when its two timestamps are equal,
//!   which is what `build_batch` writes; it frames a compressed section as
//!   given, but builds an uncompressed one's records from values).
//! - On a fresh log, appended four times: an append is accepted only if
//!   every batch validates; a refused append stores nothing; accepted
//!   batches get offsets from the log end on, are served back unchanged but for the broker's fields, and
//!   are all there, the same, after the log is closed and reopened.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shardline_log::{
    build_batch, compute_crc, set_base_offset, set_leader_epoch, validate, validate_header_only, BatchHeader,
    BatchSpec, Codec, Log, Offset, BATCH_HEADER_BYTES,
};
use shardline_log_fuzz::{batch_input, read_all, run, small_config, valid_batches, without_broker_fields, Scratch};

/// Bit of byte 0: append with `append_with_epoch`.
const FLAG_LEADER: u8 = 2;

/// Times the record set is appended to the same log: enough that offsets
/// run on across appends and that index entries are written far from the
/// segment's base (a 61-byte batch appended four times gets one at its
/// fourth copy, with the `small_config` index interval of 128 bytes).
const APPENDS: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Some((flags, records)) = batch_input(data) else {
        return;
    };
    check_one_batch(&records);
    let leader_epoch = (flags & FLAG_LEADER != 0).then_some(i32::from(flags >> 2));
    run(check_appends(records, leader_epoch));
});

fn check_one_batch(bytes: &[u8]) {
    let Ok(header) = validate(bytes) else {
        return;
    };
    let total = header.total_bytes();
    assert!(total >= BATCH_HEADER_BYTES && total <= bytes.len());
    assert_eq!(BatchHeader::parse(bytes), Some(header));
    assert_eq!(validate_header_only(bytes), Ok(header));
    assert_eq!(compute_crc(&bytes[..total]), Some(header.crc));
    assert_eq!(i64::from(header.record_count), header.offset_count());
    assert!(header.codec().is_some());

    let mut stamped = bytes[..total].to_vec();
    set_base_offset(&mut stamped, Offset(header.base_offset.0 ^ 0x5a5a));
    set_leader_epoch(&mut stamped, header.partition_leader_epoch ^ 0x33);
    let restamped = validate(&stamped).expect("stamping broker fields keeps a batch valid");
    assert_eq!(
        restamped,
        BatchHeader {
            base_offset: Offset(header.base_offset.0 ^ 0x5a5a),
            partition_leader_epoch: header.partition_leader_epoch ^ 0x33,
            ..header
        }
    );

    if header.base_timestamp_ms == header.max_timestamp_ms && header.codec() != Some(Codec::None) {
        let mut rebuilt = build_batch(&BatchSpec {
            base_offset: header.base_offset,
            record_count: header.record_count,
            timestamp_ms: header.base_timestamp_ms,
            attributes: header.attributes,
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
            payload: &bytes[BATCH_HEADER_BYTES..total],
        });
        set_leader_epoch(&mut rebuilt, header.partition_leader_epoch);
        assert_eq!(rebuilt, &bytes[..total], "build_batch must rebuild an accepted batch");
    }
}

async fn append(log: &Log, records: &[u8], leader_epoch: Option<i32>) -> bool {
    let records = Bytes::copy_from_slice(records);
    let end_before = log.log_end();
    let result = match leader_epoch {
        Some(epoch) => log.append_with_epoch(records, epoch).await,
        None => log.append(records).await,
    };
    match result {
        Ok(info) => {
            assert_eq!(info.base_offset, end_before, "offsets are assigned from the log end");
            assert_eq!(log.log_end(), Offset(info.last_offset.0 + 1));
            true
        }
        Err(_) => {
            assert_eq!(log.log_end(), end_before, "a refused append must store nothing");
            false
        }
    }
}

async fn check_appends(records: Vec<u8>, leader_epoch: Option<i32>) {
    let sent = valid_batches(&records);
    let all_valid = !sent.is_empty() && sent.last().is_some_and(|(_, range)| range.end == records.len());
    let scratch = Scratch::new("log");
    let log = Log::open(scratch.path(), small_config())
        .await
        .expect("open an empty log");

    let mut expected = Vec::new();
    for _ in 0..APPENDS {
        let end_before = log.log_end();
        if append(&log, &records, leader_epoch).await {
            assert!(all_valid, "accepted a record set that does not validate batch by batch");
            let offsets: i64 = sent.iter().map(|(header, _)| header.offset_count()).sum();
            assert_eq!(log.log_end(), Offset(end_before.0 + offsets));
            expected.extend(
                sent.iter()
                    .map(|(_, range)| without_broker_fields(&records[range.clone()])),
            );
        }
    }
    let stored = read_all(&log);
    let stored_plain: Vec<Vec<u8>> = stored.iter().map(|batch| without_broker_fields(batch)).collect();
    assert_eq!(stored_plain, expected, "served batches differ from the accepted ones");
    if let Some(epoch) = leader_epoch {
        for batch in &stored {
            assert_eq!(validate(batch).map(|header| header.partition_leader_epoch), Ok(epoch));
        }
    }
    let log_end = log.log_end();
    log.close().await.expect("close");
    drop(log);

    let log = Log::open(scratch.path(), small_config())
        .await
        .expect("reopen what was written");
    assert_eq!(log.log_end(), log_end, "reopening changed the log end");
    assert_eq!(read_all(&log), stored, "reopening changed what is served");
    log.close().await.expect("close");
}
