//! Bytes of memory a decoded request takes per byte of its frame, for the
//! largest requests the broker accepts by default (10,000 entries). Produce
//! keeps record sets as slices of the frame, so its decoding must not expand
//! a frame several times over. Prints the figures; checks the bounds the
//! docs state (docs/kafka-wire.md, "Memory per wire byte").
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
};

use bytes::{Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        fetch_request::{FetchPartition, FetchTopic},
        produce_request::{PartitionProduceData, TopicProduceData},
        FetchRequest, ProduceRequest, TopicName,
    },
    protocol::{Encodable, StrBytes},
};
use shardline_net::decode_request_body;

/// Counts bytes allocated (not freed) by this thread's test.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the pointer came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Entries the broker accepts in one request by default (--max-request-entries).
const ENTRIES: usize = 10_000;

const PRODUCE: i16 = 0;
const FETCH: i16 = 1;

fn allocated_by(decode: impl FnOnce()) -> usize {
    let before = ALLOCATED.load(Ordering::Relaxed);
    decode();
    ALLOCATED.load(Ordering::Relaxed) - before
}

fn encode(request: &impl Encodable, version: i16) -> Bytes {
    let mut out = BytesMut::new();
    request.encode(&mut out, version).unwrap();
    out.freeze()
}

fn report(what: &str, allocated: usize, wire: usize) -> f64 {
    let ratio = allocated as f64 / wire as f64;
    println!("{what}: {wire} wire bytes, {allocated} bytes allocated by decoding, {ratio:.3} per wire byte");
    ratio
}

#[test]
fn decoding_does_not_expand_the_largest_default_requests() {
    let name = TopicName(StrBytes::from_static_str("orders"));
    // One partition, one 1 MiB record set: zero copy.
    let big = ProduceRequest::default()
        .with_acks(-1)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name.clone())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(vec![7u8; 1 << 20])))])]);
    let body = encode(&big, 9);
    let allocated = allocated_by(|| drop(decode_request_body(PRODUCE, 9, &body).unwrap()));
    assert!(report("produce, 1 partition of 1 MiB", allocated, body.len()) < 0.01);

    // 10,000 partitions of one small batch each: the worst case per entry.
    let partitions = (0..ENTRIES)
        .map(|i| {
            PartitionProduceData::default()
                .with_index(i32::try_from(i).unwrap())
                .with_records(Some(Bytes::from(vec![1u8; 61])))
        })
        .collect();
    let wide = ProduceRequest::default()
        .with_acks(-1)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name.clone())
            .with_partition_data(partitions)]);
    let body = encode(&wide, 9);
    let allocated = allocated_by(|| drop(decode_request_body(PRODUCE, 9, &body).unwrap()));
    assert!(report("produce, 10,000 partitions of 61 B", allocated, body.len()) < 1.0);

    // A Fetch naming 10,000 partitions (decoded by kafka-protocol).
    let fetch = FetchRequest::default().with_topics(vec![FetchTopic::default().with_topic(name).with_partitions(
        (0..ENTRIES)
            .map(|i| FetchPartition::default().with_partition(i32::try_from(i).unwrap()))
            .collect(),
    )]);
    let body = encode(&fetch, 12);
    let allocated = allocated_by(|| drop(decode_request_body(FETCH, 12, &body).unwrap()));
    assert!(report("fetch, 10,000 partitions", allocated, body.len()) < 8.0);
}
