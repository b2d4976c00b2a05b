//! A whole request frame (header + body, no length prefix), exactly as the
//! connection loop decodes it.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
// Links libFuzzer's malloc limit on the stable toolchain.
use shardline_fuzz_support as _;
use shardline_net::decode_request;

fuzz_target!(|data: &[u8]| {
    let _ = decode_request(&Bytes::copy_from_slice(data));
});
