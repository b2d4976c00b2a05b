//! Hand-written Produce decoder. The first byte picks the version (3..=9);
//! every record set that decodes must be a slice of the input.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
// Links libFuzzer's malloc limit on the stable toolchain.
use shardline_fuzz_support as _;
use shardline_net::ProduceRequest;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let version = 3 + i16::from(selector % 7);
    let body = Bytes::copy_from_slice(body);
    if let Ok(request) = ProduceRequest::decode(&body, version) {
        let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len() + 1;
        for partition in request.topics.iter().flat_map(|topic| &topic.partitions) {
            if let Some(records) = partition.records.as_ref().filter(|records| !records.is_empty()) {
                assert!(range.contains(&(records.as_ptr() as usize)));
            }
        }
    }
});
