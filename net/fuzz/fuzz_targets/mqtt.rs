//! MQTT packet decoder (3.1.1 and 5.0): any bytes in, `Ok` or `Err` out,
//! never a panic; a decoded packet encodes again and decodes to itself.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
// Links libFuzzer's malloc limit on the stable toolchain.
use shardline_fuzz_support as _;
use shardline_net::mqtt::{decode_packet, encode_packet, Packet, Version};

/// The bound the fuzzer's packets live under (the engine's default is larger).
const PACKET_BYTES_MAX: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the connection's state: before CONNECT, 3.1.1, 5.0.
    let Some((&state, rest)) = data.split_first() else {
        return;
    };
    let version = match state % 3 {
        0 => None,
        1 => Some(Version::V311),
        _ => Some(Version::V5),
    };
    let input = Bytes::copy_from_slice(rest);
    if let Ok(Some((packet, used))) = decode_packet(&input, version, PACKET_BYTES_MAX) {
        assert!(used <= input.len() && used <= PACKET_BYTES_MAX);
        let level = match (&packet, version) {
            (Packet::Connect(connect), _) => connect.version,
            (_, Some(version)) => version,
            (_, None) => unreachable!("only CONNECT decodes before CONNECT"),
        };
        let mut again = Vec::new();
        encode_packet(&packet, level, &mut again);
        let redecoded = decode_packet(&Bytes::from(again), version, usize::MAX)
            .expect("an encoded packet decodes")
            .expect("whole");
        assert_eq!(redecoded.0, packet);
    }
});
