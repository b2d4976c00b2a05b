//! A persistent MQTT session as stored in `__mqtt_sessions` (drawn in
//! engine/src/mqtt/stored.rs: magic, format, CRC-32C, body).
//!
//! Input: byte 0 is flags (bit 0: fix the checksum first, so the input
//! reaches the body's decoder), the rest is the stored value.
//!
//! Checks: decoding fails with an error or gives a session; a decoded
//! session encodes to bytes that decode to the same session.
#![no_main]

use libfuzzer_sys::fuzz_target;
// Links libFuzzer's malloc limit on the stable toolchain.
use shardline_engine::fuzz_api::{decode_mqtt_session, reencode_mqtt_session};
use shardline_fuzz_support as _;

/// Bytes before the body: magic, format, checksum.
const HEADER_BYTES: usize = 6;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut stored = rest.to_vec();
    if flags & 1 == 1 && stored.len() >= HEADER_BYTES {
        let crc = crc32c::crc32c(&stored[HEADER_BYTES..]);
        stored[2..HEADER_BYTES].copy_from_slice(&crc.to_be_bytes());
    }
    let Ok(decoded) = decode_mqtt_session(&stored) else {
        return;
    };
    let again = reencode_mqtt_session(&stored).expect("a decoded session encodes");
    assert_eq!(
        decode_mqtt_session(&again).as_deref(),
        Ok(decoded.as_str()),
        "a session survives its encoding"
    );
});
