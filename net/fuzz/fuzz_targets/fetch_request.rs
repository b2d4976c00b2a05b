//! Fetch request decoding (shape walk, then kafka-protocol). The first byte
//! picks the version (4..=12).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
// Links libFuzzer's malloc limit on the stable toolchain.
use shardline_fuzz_support as _;
use shardline_net::decode_request_body;

/// Kafka API key of Fetch.
const FETCH: i16 = 1;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let version = 4 + i16::from(selector % 9);
    let _ = decode_request_body(FETCH, version, &Bytes::copy_from_slice(body));
});
