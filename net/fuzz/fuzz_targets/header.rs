//! Request header decoder: any bytes in, `Ok` or `Err` out, never a panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
// Links libFuzzer's malloc limit on the stable toolchain.
use shardline_fuzz_support as _;
use shardline_net::RequestHeader;

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    if let Ok((_, body)) = RequestHeader::decode(&frame) {
        assert!(body.len() <= frame.len());
    }
});
