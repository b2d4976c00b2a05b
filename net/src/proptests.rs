//! "Decoders never panic": random bytes and mutated valid frames into every
//! decoder. Each must return (`Ok` or `Err`), never panic and never try to
//! allocate for a count it has not checked (that would abort the test
//! process, as it would abort the broker).

use bytes::Bytes;
use futures_lite::future::block_on;
use proptest::prelude::*;

use crate::apis::{self, SUPPORTED_APIS};
use crate::codec::tests::{sample_body, sample_frame};
use crate::codec::{decode_frame, decode_request_body, BodyLimits};
use crate::frame::FrameReader;
use crate::header::RequestHeader;
use crate::produce::ProduceRequest;

/// One edit of a valid input.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR one byte.
    Flip { at: usize, mask: u8 },
    /// Overwrite four bytes with an extreme int32 (count and length fields).
    Extreme { at: usize, value: i32 },
    /// Overwrite one byte with a varint-ish extreme.
    Byte { at: usize, value: u8 },
    /// Drop everything from here on.
    Truncate { at: usize },
    /// Insert a byte.
    Insert { at: usize, value: u8 },
    /// Remove a byte.
    Remove { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (
            at,
            prop::sample::select(vec![i32::MAX, i32::MIN, -1, -2, 0x7fff, 0x1_0000, 1 << 30])
        )
            .prop_map(|(at, value)| Mutation::Extreme { at, value }),
        (at, prop::sample::select(vec![0u8, 0x7f, 0x80, 0xff, 0xfe]))
            .prop_map(|(at, value)| Mutation::Byte { at, value }),
        at.prop_map(|at| Mutation::Truncate { at }),
        (at, any::<u8>()).prop_map(|(at, value)| Mutation::Insert { at, value }),
        at.prop_map(|at| Mutation::Remove { at }),
    ]
}

fn apply(input: &[u8], mutations: &[Mutation]) -> Bytes {
    let mut bytes = input.to_vec();
    for mutation in mutations {
        let length = bytes.len().max(1);
        match *mutation {
            Mutation::Flip { at, mask } => {
                if let Some(byte) = bytes.get_mut(at % length) {
                    *byte ^= mask;
                }
            }
            Mutation::Extreme { at, value } => {
                let at = at % length;
                for (offset, byte) in value.to_be_bytes().into_iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + offset) {
                        *slot = byte;
                    }
                }
            }
            Mutation::Byte { at, value } => {
                if let Some(byte) = bytes.get_mut(at % length) {
                    *byte = value;
                }
            }
            Mutation::Truncate { at } => bytes.truncate(at % length),
            Mutation::Insert { at, value } => bytes.insert(at % (bytes.len() + 1), value),
            Mutation::Remove { at } => {
                if !bytes.is_empty() {
                    bytes.remove(at % length);
                }
            }
        }
    }
    Bytes::from(bytes)
}

fn supported_pair() -> impl Strategy<Value = (i16, i16)> {
    prop::sample::select(
        SUPPORTED_APIS
            .iter()
            .flat_map(|&(api_key, min, max)| (min..=max).map(move |version| (api_key, version)))
            .collect::<Vec<_>>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn header_decoder_never_panics(input in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = RequestHeader::decode(&Bytes::from(input));
    }

    #[test]
    fn header_decoder_survives_mutated_headers(
        (api_key, version) in supported_pair(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let frame = sample_frame(api_key, version, 7);
        let _ = RequestHeader::decode(&apply(&frame, &mutations));
    }

    #[test]
    fn produce_decoder_never_panics(version in 3i16..=9, input in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = ProduceRequest::decode(&Bytes::from(input), version);
    }

    #[test]
    fn produce_decoder_survives_mutated_requests(
        version in 3i16..=9,
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let body = sample_body(apis::PRODUCE, version);
        let _ = ProduceRequest::decode(&apply(&body, &mutations), version);
    }

    #[test]
    fn fetch_request_decoder_never_panics(version in 4i16..=12, input in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_request_body(apis::FETCH, version, &Bytes::from(input));
    }

    #[test]
    fn fetch_request_decoder_survives_mutated_requests(
        version in 4i16..=12,
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let body = sample_body(apis::FETCH, version);
        let _ = decode_request_body(apis::FETCH, version, &apply(&body, &mutations));
    }

    #[test]
    fn control_plane_dispatch_never_panics(
        (api_key, version) in supported_pair(),
        input in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let _ = decode_request_body(api_key, version, &Bytes::from(input));
    }

    #[test]
    fn control_plane_dispatch_survives_mutated_requests(
        (api_key, version) in supported_pair(),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let body = sample_body(api_key, version);
        let _ = decode_request_body(api_key, version, &apply(&body, &mutations));
    }

    #[test]
    fn whole_frames_never_panic(
        (api_key, version) in supported_pair(),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let frame = sample_frame(api_key, version, 3);
        let limits = BodyLimits {
            control_body_bytes_max: 1 << 20,
            entries_max: 1 << 10,
        };
        let _ = decode_frame(&apply(&frame, &mutations), limits);
    }

    #[test]
    fn frame_reader_never_panics(input in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut reader = FrameReader::new(64);
        let mut source = &input[..];
        block_on(async {
            // Each frame consumes at least the 4-byte prefix, so this bound is never hit.
            for _ in 0..=input.len() {
                match reader.next_frame(&mut source).await {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        });
    }
}

#[test]
fn extreme_counts_in_every_position_of_every_sample_are_survived() {
    // Deterministic sweep: an extreme int32 and an extreme varint at every
    // offset of every supported sample body.
    for &(api_key, min, max) in SUPPORTED_APIS {
        for version in min..=max {
            let body = sample_body(api_key, version);
            for at in 0..body.len() {
                for mutation in [
                    Mutation::Extreme { at, value: i32::MAX },
                    Mutation::Extreme { at, value: -2 },
                    Mutation::Byte { at, value: 0xff },
                ] {
                    let mutated = apply(&body, &[mutation]);
                    let _ = decode_request_body(api_key, version, &mutated);
                }
            }
        }
    }
}
