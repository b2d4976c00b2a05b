//! The metadata group's peer TCP stream (`len u32 BE, crc32c u32 BE,
//! payload` frames of FlatBuffers RpcRequest / RpcResponse; drawn in
//! raft/src/tcp.rs), read as the server reads a connection.
//!
//! Input: byte 0 is flags (bit 0: fix every frame's CRC first), the rest is
//! what a peer sends.
//!
//! The same bytes are also read as the Hello that opens a peer connection
//! (raft/src/peer_auth.rs): it is accepted only if it starts with the magic
//! `SLRH`.
//!
//! Checks: reading stops at the first bad frame with an error, never a
//! panic; every payload that decodes as a request or a response encodes
//! again to bytes that decode to the same thing and encode the same; a
//! re-encoded payload, framed, reads back as one good frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_raft::fuzz_api::{decode_rpc_payload, peer_hello, read_rpc_stream, rpc_frame};
use shardline_raft_fuzz::input;

fuzz_target!(|data: &[u8]| {
    let Some(stream) = input(data, 0, true) else {
        return;
    };
    if peer_hello(&stream).is_ok() {
        assert!(stream.starts_with(b"SLRH"), "a Hello without its magic was accepted");
    }
    let read = read_rpc_stream(&stream);
    for frame in read.frames {
        for (decoded, encoded) in [frame.request, frame.response].into_iter().flatten() {
            let again = decode_rpc_payload(&encoded);
            let matches = [again.request, again.response]
                .into_iter()
                .flatten()
                .any(|(text, bytes)| text == decoded && bytes == encoded);
            assert!(matches, "{decoded} did not survive a round trip");
            let framed = rpc_frame(&encoded).expect("a re-encoded payload fits a frame");
            let reread = read_rpc_stream(&framed);
            assert_eq!(reread.error, None);
            assert_eq!(reread.frames.len(), 1);
        }
    }
});
