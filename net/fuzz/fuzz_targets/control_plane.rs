//! Every supported (API, version) body decoder. The first two bytes pick the
//! pair from SUPPORTED_APIS.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
// Links libFuzzer's malloc limit on the stable toolchain.
use shardline_fuzz_support as _;
use shardline_net::{decode_request_body, SUPPORTED_APIS};

fuzz_target!(|data: &[u8]| {
    let [api_selector, version_selector, body @ ..] = data else {
        return;
    };
    let Some(&(api_key, min, max)) = SUPPORTED_APIS.get(usize::from(*api_selector) % SUPPORTED_APIS.len()) else {
        return;
    };
    let span = u8::try_from(max - min + 1).unwrap_or(1);
    let version = min + i16::from(version_selector % span);
    let _ = decode_request_body(api_key, version, &Bytes::copy_from_slice(body));
});
