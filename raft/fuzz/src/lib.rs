//! Helpers shared by the metadata group's fuzz targets: CRC fix-up of
//! frames, and `Scratch` directories (from `fuzz-support`, which also
//! enforces libFuzzer's malloc limit).

pub use shardline_fuzz_support::Scratch;

/// Bit of an input's first byte: recompute the CRC of every frame before
/// use, so the input reaches the decoders behind the checksum.
pub const FLAG_FIX_CRC: u8 = 1;

/// Bytes of the magic at the start of every metadata file.
pub const MAGIC_BYTES: usize = 8;

/// Largest payload length the fix-up follows (the file format's bound).
const FRAME_PAYLOAD_BYTES_MAX: usize = 256 << 20;

/// Recomputes the CRC of every whole frame from `from` on. `big_endian`:
/// the peer RPC frames (tcp.rs); otherwise the files' little-endian
/// frames (codec.rs). Both are `len u32, crc32c u32, payload`.
pub fn fix_frame_crcs(bytes: &mut [u8], from: usize, big_endian: bool) {
    let mut at = from;
    while let Some(length) = bytes.get(at..at + 4) {
        let length: [u8; 4] = length.try_into().expect("four bytes");
        let length = if big_endian {
            u32::from_be_bytes(length)
        } else {
            u32::from_le_bytes(length)
        } as usize;
        let start = at + 8;
        if length == 0 || length > FRAME_PAYLOAD_BYTES_MAX || start + length > bytes.len() {
            return;
        }
        let crc = crc32c::crc32c(&bytes[start..start + length]);
        let crc = if big_endian {
            crc.to_be_bytes()
        } else {
            crc.to_le_bytes()
        };
        bytes[at + 4..start].copy_from_slice(&crc);
        at = start + length;
    }
}

/// Splits an input into its flag byte and its bytes, with frame CRCs fixed
/// when the flag asks for it.
pub fn input(data: &[u8], frames_from: usize, big_endian: bool) -> Option<Vec<u8>> {
    let (&flags, rest) = data.split_first()?;
    let mut bytes = rest.to_vec();
    if flags & FLAG_FIX_CRC != 0 {
        fix_frame_crcs(&mut bytes, frames_from, big_endian);
    }
    Some(bytes)
}

/// A decoder of one metadata file in a directory (`fuzz_api::load_vote`,
/// `fuzz_api::open_snapshot`): what it holds, printed, `None` if absent.
pub type Load = fn(&std::path::Path) -> Result<Option<String>, String>;

/// An encoder round trip (`fuzz_api::resave_vote`, `resave_snapshot`):
/// loads the file of the first directory and saves it into the second.
pub type Resave = fn(&std::path::Path, &std::path::Path) -> Result<(), String>;

/// The body of the single-frame file targets (`vote_file`,
/// `snapshot_file`): writes the input (CRC fixed if its flag byte says so)
/// as `file_name`; if it loads, saves it again with the encoder into a
/// second directory and checks that it loads the same there.
pub fn check_resave(data: &[u8], file_name: &str, load: Load, resave: Resave) {
    let Some(file) = input(data, MAGIC_BYTES, false) else {
        return;
    };
    let from = Scratch::new("resave-from");
    from.write(file_name, &file);
    let Ok(loaded) = load(from.path()) else {
        return;
    };
    assert!(loaded.is_some(), "a {file_name} file that loads holds something");
    let to = Scratch::new("resave-to");
    resave(from.path(), to.path()).unwrap_or_else(|error| panic!("save a loaded {file_name}: {error}"));
    assert_eq!(
        load(to.path()),
        Ok(loaded),
        "a saved {file_name} must load back the same"
    );
}
