//! Record-batch compression as Kafka defines it: which codec, how its bytes look, and the bounds on
//! reading them back.
//!
//! In a RecordBatch v2 only the *records* are compressed: the 61-byte header (offsets, timestamps,
//! producer fields, record count) stays readable, bits 0..2 of its attributes name the codec, and
//! the CRC-32C covers the compressed bytes as they travel. The records section, all records back to
//! back exactly as an uncompressed batch holds them, is compressed as one unit:
//!
//! ```text
//!  uncompressed:  | header (61 B, codec bits 0) | record | record | ... | record |
//!  compressed:    | header (61 B, codec bits c) | codec c applied to  record | record | ... | record |
//! ```
//!
//! | codec  | bits | what Kafka puts there | what the bench writes |
//! | ------ | ---- | --------------------- | --------------------- |
//! | gzip   | 1    | a gzip stream (RFC 1952) | one gzip member, level [`GZIP_LEVEL`] |
//! | snappy | 2    | the Java client: xerial snappy-java framing; librdkafka: one raw Snappy block | one raw Snappy block |
//! | lz4    | 3    | the LZ4 frame format (since Kafka 0.10 with a correct header checksum) | one LZ4 frame: independent 64 KiB blocks, no block or content checksum, no content size |
//! | zstd   | 4    | a Zstandard frame | one frame, level [`ZSTD_LEVEL`], content size in the header |
//!
//! The codecs' state lives as long as the producer: a fresh deflate or LZ4 frame encoder per batch
//! allocates and zeroes its tables each time, measured at a quarter of the work of compressing a
//! 16 KiB batch. So the bench keeps a deflate stream (reset per batch), a Snappy encoder and a
//! Zstandard context, and writes the two containers around them itself, both fixed and small:
//!
//! ```text
//!  gzip (RFC 1952):  | 1f 8b | 08 (deflate) | 00 (no flags) | 00 00 00 00 (no mtime) | 00 | ff (OS unknown) |
//!                    | raw deflate stream | CRC-32 (IEEE) of the input, u32 LE | input length mod 2^32, u32 LE |
//!
//!  LZ4 frame:        | 04 22 4d 18 (magic, LE) | 60 (FLG: version 01, independent blocks) | 40 (BD: 64 KiB) |
//!                    | 82 (HC: second byte of xxHash32 of FLG BD) |
//!                    ( | block size u32 LE, high bit set = stored uncompressed | block | )*  | 00 00 00 00 (end) |
//! ```
//! Reading goes through the crates' own decoders (`flate2`'s gzip, `lz4_flex`'s frame), so every
//! batch the bench writes is checked against an implementation it did not write (and against
//! kafka-protocol's codecs, including the C liblz4, in the batch tests).
//!
//! **Snappy.** Kafka's Java client wraps raw Snappy blocks in snappy-java's framing:
//!
//! ```text
//!  byte 0                8            12           16
//!       +----------------+------------+------------+------------------------------------------------
//!       | magic          | version    | compatible | ( block length | raw Snappy block of that length )*
//!       | 82 "SNAPPY" 00 | i32 BE = 1 | i32 BE = 1 |   i32 BE       |
//!       +----------------+------------+------------+------------------------------------------------
//! ```
//! librdkafka writes one raw block instead. Every reader accepts both: Kafka brokers and Java
//! consumers read through snappy-java's `SnappyInputStream`, which decodes input without the magic
//! as one raw block, and librdkafka, kafka-python, sarama and franz-go look for the magic and fall
//! back to raw. Raw is what librdkafka producers send, so every broker already takes it; the bench
//! writes raw and reads both.
//!
//! **LZ4.** Kafka's reader (`Lz4BlockInputStream`) decompresses each block on its own, so blocks
//! must be independent; older brokers also ignore a content checksum they do not expect. The bench
//! therefore writes the plainest frame every version reads.
//!
//! Decompression is bounded by [`DECOMPRESSED_RECORDS_BYTES_MAX`]: a batch that inflates beyond it
//! is an error, not an allocation.

use std::{
    fmt,
    io::{self, Read},
    str::FromStr,
};

use crate::batch::BatchDecodeError;

/// Gzip level: zlib's default, which Kafka's Java client and librdkafka use unless told otherwise.
pub const GZIP_LEVEL: u32 = 6;
/// Zstandard level: Kafka's default `compression.zstd.level` (KIP-390) and librdkafka's.
pub const ZSTD_LEVEL: i32 = 3;
/// Largest records section a compressed batch may inflate to. The bench's own batches stay under
/// `--batch-bytes` (at most 16 MiB); a broker returns one batch per partition beyond
/// `max.partition.fetch.bytes` at most (KIP-74). 64 MiB leaves room for other writers' batches and
/// stops a corrupt or hostile batch from claiming memory without end.
pub const DECOMPRESSED_RECORDS_BYTES_MAX: usize = 64 << 20;

/// Attributes bits 0..2: the codec.
pub const ATTRIBUTES_CODEC_MASK: i16 = 0x07;

/// The gzip header the bench writes: deflate, no flags, no mtime, no extra flags, OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff];
/// The LZ4 frame header the bench writes: magic, FLG (version 01, independent blocks, nothing
/// else), BD (64 KiB blocks), HC (xxHash32 of `60 40` with seed 0, shifted right 8, low byte).
const LZ4_FRAME_HEADER: [u8; 7] = [0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82];
/// Largest uncompressed block the LZ4 frame header above allows.
const LZ4_BLOCK_BYTES_MAX: usize = 64 << 10;
/// Block size flag: the block is stored uncompressed.
const LZ4_BLOCK_UNCOMPRESSED: u32 = 0x8000_0000;

/// snappy-java's stream magic (the first 8 bytes of its framing).
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// snappy-java's header: magic, version, compatible version.
const XERIAL_HEADER_BYTES: usize = 16;
/// Bytes of a snappy-java block length.
const XERIAL_BLOCK_LENGTH_BYTES: usize = 4;

/// `--compression`: the codec of every batch the bench writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Records stored as they are (attributes bits 0).
    None,
    /// gzip (1).
    Gzip,
    /// Snappy (2).
    Snappy,
    /// LZ4 frame (3).
    Lz4,
    /// Zstandard (4).
    Zstd,
}

impl Compression {
    /// Every codec, in Kafka's numbering.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec bits of a batch's attributes.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec named by a batch's attributes; `None` for bits Kafka does not define (5..7).
    pub fn from_attributes(attributes: i16) -> Option<Compression> {
        let bits = attributes & ATTRIBUTES_CODEC_MASK;
        Compression::ALL
            .into_iter()
            .find(|codec| codec.attribute_bits() == bits)
    }

    /// Kafka's name for the codec.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|codec| codec.name() == text)
            .ok_or_else(|| format!("unknown compression `{text}` (use none, gzip, snappy, lz4 or zstd)"))
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Compresses records sections with one codec, keeping the codec's state between batches.
pub struct Compressor {
    codec: Compression,
    state: CodecState,
}

/// Per-codec state reused from batch to batch.
enum CodecState {
    None,
    Gzip(flate2::Compress),
    Snappy(Box<snap::raw::Encoder>),
    Lz4,
    Zstd(Box<zstd::bulk::Compressor<'static>>),
}

impl fmt::Debug for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressor").field("codec", &self.codec).finish()
    }
}

impl Compressor {
    /// A compressor for `codec`.
    pub fn new(codec: Compression) -> io::Result<Compressor> {
        let state = match codec {
            Compression::None => CodecState::None,
            Compression::Gzip => CodecState::Gzip(flate2::Compress::new(flate2::Compression::new(GZIP_LEVEL), false)),
            Compression::Snappy => CodecState::Snappy(Box::new(snap::raw::Encoder::new())),
            Compression::Lz4 => CodecState::Lz4,
            Compression::Zstd => CodecState::Zstd(Box::new(zstd::bulk::Compressor::new(ZSTD_LEVEL)?)),
        };
        Ok(Compressor { codec, state })
    }

    /// The codec.
    pub fn codec(&self) -> Compression {
        self.codec
    }

    /// Appends `records` compressed with the codec to `out` (for `None`, appends them as they are).
    pub fn compress_into(&mut self, records: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let start = out.len();
        match &mut self.state {
            CodecState::None => out.extend_from_slice(records),
            CodecState::Gzip(deflate) => gzip_into(deflate, records, out)?,
            CodecState::Snappy(encoder) => {
                out.resize(start + snap::raw::max_compress_len(records.len()), 0);
                let target = out.get_mut(start..).unwrap_or_default();
                let written = encoder.compress(records, target).map_err(io::Error::other)?;
                out.truncate(start + written);
            }
            CodecState::Lz4 => lz4_frame_into(records, out)?,
            CodecState::Zstd(context) => {
                out.resize(start + zstd::zstd_safe::compress_bound(records.len()), 0);
                let target = out.get_mut(start..).unwrap_or_default();
                let written = context.compress_to_buffer(records, target)?;
                out.truncate(start + written);
            }
        }
        assert!(out.len() > start || records.is_empty(), "a codec wrote nothing");
        Ok(())
    }
}

/// One gzip member: the header, `records` deflated by the reused stream, the trailer.
fn gzip_into(deflate: &mut flate2::Compress, records: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    deflate.reset();
    out.extend_from_slice(&GZIP_HEADER);
    // Deflate never grows data by more than a few bytes per 16 KiB block; start there and grow.
    out.reserve(records.len() + records.len() / 1024 + 64);
    loop {
        let consumed = usize::try_from(deflate.total_in()).unwrap_or(usize::MAX);
        let input = records.get(consumed..).unwrap_or_default();
        let status = deflate
            .compress_vec(input, out, flate2::FlushCompress::Finish)
            .map_err(io::Error::other)?;
        match status {
            flate2::Status::StreamEnd => break,
            flate2::Status::Ok | flate2::Status::BufError => out.reserve(out.capacity().max(4096)),
        }
    }
    assert_eq!(
        deflate.total_in(),
        records.len() as u64,
        "deflate consumed its whole input"
    );
    let mut crc = flate2::Crc::new();
    crc.update(records);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the input length modulo 2^32 (RFC 1952): the truncation is the format.
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    Ok(())
}

/// One LZ4 frame of independent 64 KiB blocks (see the module notes for the layout).
fn lz4_frame_into(records: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    out.extend_from_slice(&LZ4_FRAME_HEADER);
    for block in records.chunks(LZ4_BLOCK_BYTES_MAX) {
        let size_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let data_at = out.len();
        out.resize(data_at + lz4_flex::block::get_maximum_output_size(block.len()), 0);
        let target = out.get_mut(data_at..).unwrap_or_default();
        let written = lz4_flex::block::compress_into(block, target).map_err(io::Error::other)?;
        let size = if written < block.len() {
            out.truncate(data_at + written);
            u32::try_from(written).map_err(io::Error::other)?
        } else {
            // Incompressible: stored as it is, as the frame format allows and Kafka's reader expects.
            out.truncate(data_at);
            out.extend_from_slice(block);
            u32::try_from(block.len()).map_err(io::Error::other)? | LZ4_BLOCK_UNCOMPRESSED
        };
        if let Some(slot) = out.get_mut(size_at..data_at) {
            slot.copy_from_slice(&size.to_le_bytes());
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes()); // end mark
    Ok(())
}

/// Decompresses records sections, keeping a Zstandard context between batches.
pub struct Decompressor {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decompressor").finish_non_exhaustive()
    }
}

impl Default for Decompressor {
    fn default() -> Self {
        Decompressor::new()
    }
}

impl Decompressor {
    /// A decompressor for every codec.
    pub fn new() -> Decompressor {
        // Without a context (allocation failed), zstd batches take the streaming path below.
        Decompressor {
            zstd: zstd::bulk::Decompressor::new().ok(),
        }
    }

    /// Replaces `out` with `compressed` decompressed by `codec`, at most `limit` bytes.
    pub fn decompress_into(
        &mut self,
        codec: Compression,
        compressed: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), BatchDecodeError> {
        out.clear();
        let failed = |error: io::Error| BatchDecodeError::Decompress {
            codec: codec.name(),
            detail: error.to_string(),
        };
        match codec {
            Compression::None => {
                if compressed.len() > limit {
                    return Err(BatchDecodeError::DecompressedTooLarge { limit });
                }
                out.extend_from_slice(compressed);
            }
            Compression::Gzip => {
                // Multi-member: Java's GZIPInputStream reads concatenated members too.
                read_bounded(flate2::read::MultiGzDecoder::new(compressed), out, limit).map_err(failed)?;
            }
            Compression::Snappy => snappy_decompress(compressed, out, limit)?,
            Compression::Lz4 => {
                read_bounded(lz4_flex::frame::FrameDecoder::new(compressed), out, limit).map_err(failed)?;
            }
            Compression::Zstd => self.zstd_decompress(compressed, out, limit).map_err(failed)?,
        }
        if out.len() > limit {
            return Err(BatchDecodeError::DecompressedTooLarge { limit });
        }
        Ok(())
    }

    /// One call into a reused context when the frame states its size (the bench's, librdkafka's);
    /// streaming otherwise (Java's `ZstdOutputStream` does not know the size up front) or when the
    /// one-shot call fails (several frames back to back).
    fn zstd_decompress(&mut self, compressed: &[u8], out: &mut Vec<u8>, limit: usize) -> io::Result<()> {
        let stated = zstd::zstd_safe::get_frame_content_size(compressed).ok().flatten();
        if let (Some(context), Some(size)) = (self.zstd.as_mut(), stated) {
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > limit {
                return Err(io::Error::other(format!(
                    "frame states {size} bytes, above the {limit} byte bound"
                )));
            }
            out.reserve(size);
            if context.decompress_to_buffer(compressed, &mut *out).is_ok() {
                return Ok(());
            }
            out.clear();
        }
        read_bounded(zstd::stream::read::Decoder::with_buffer(compressed)?, out, limit)
    }
}

/// Reads all of `reader` into `out`, stopping one byte past `limit` (the caller reports that).
fn read_bounded(reader: impl Read, out: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    let bound = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(bound).read_to_end(out)?;
    Ok(())
}

/// Raw Snappy, or snappy-java's framing of raw blocks (see the module notes).
fn snappy_decompress(compressed: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), BatchDecodeError> {
    let failed = |detail: String| BatchDecodeError::Decompress {
        codec: "snappy",
        detail,
    };
    let mut decoder = snap::raw::Decoder::new();
    let mut append_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), BatchDecodeError> {
        let length = snap::raw::decompress_len(block).map_err(|e| failed(e.to_string()))?;
        let start = out.len();
        if start.saturating_add(length) > limit {
            return Err(BatchDecodeError::DecompressedTooLarge { limit });
        }
        out.resize(start + length, 0);
        let target = out.get_mut(start..).unwrap_or_default();
        let written = decoder.decompress(block, target).map_err(|e| failed(e.to_string()))?;
        out.truncate(start + written);
        Ok(())
    };
    if compressed.get(..XERIAL_MAGIC.len()) != Some(&XERIAL_MAGIC[..]) {
        return append_block(compressed, out);
    }
    let mut rest = compressed
        .get(XERIAL_HEADER_BYTES..)
        .ok_or_else(|| failed("snappy-java header cut short".to_string()))?;
    while !rest.is_empty() {
        let (length, tail) = rest
            .split_first_chunk::<XERIAL_BLOCK_LENGTH_BYTES>()
            .ok_or_else(|| failed("snappy-java block length cut short".to_string()))?;
        let length = usize::try_from(i32::from_be_bytes(*length))
            .map_err(|_| failed("negative snappy-java block length".to_string()))?;
        let block = tail
            .get(..length)
            .ok_or_else(|| failed(format!("snappy-java block of {length} bytes cut short")))?;
        append_block(block, out)?;
        rest = tail.get(length..).unwrap_or_default();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Records-like input: repetitive enough to compress, varied enough not to be trivial.
    fn sample(bytes: usize) -> Vec<u8> {
        (0..bytes).map(|i| b"abcdefgh"[(i * 7 + i / 13) % 8]).collect()
    }

    fn round_trip(codec: Compression, input: &[u8]) -> Vec<u8> {
        round_trip_with(&mut Compressor::new(codec).unwrap(), input)
    }

    fn round_trip_with(compressor: &mut Compressor, input: &[u8]) -> Vec<u8> {
        let codec = compressor.codec();
        let mut compressed = vec![0xee; 5]; // appends after what is there
        compressor.compress_into(input, &mut compressed).unwrap();
        assert_eq!(&compressed[..5], &[0xee; 5]);
        let mut out = Vec::new();
        Decompressor::new()
            .decompress_into(codec, &compressed[5..], &mut out, DECOMPRESSED_RECORDS_BYTES_MAX)
            .unwrap();
        assert_eq!(out, input, "{codec}");
        compressed.split_off(5)
    }

    #[test]
    fn every_codec_round_trips() {
        let mut random = crate::partitioner::SplitMix64::new(17);
        let noise: Vec<u8> = (0..150_000).map(|_| random.next_u64() as u8).collect();
        for codec in Compression::ALL {
            // One compressor for every input: reused state must not leak from batch to batch.
            let mut compressor = Compressor::new(codec).unwrap();
            for size in [1, 100, 70_000, 300_000, 65_536, 65_537] {
                let input = sample(size);
                let compressed = round_trip_with(&mut compressor, &input);
                if codec != Compression::None && size >= 70_000 {
                    assert!(compressed.len() * 2 < input.len(), "{codec} compresses {size} bytes");
                }
            }
            // Incompressible input (LZ4 stores such blocks uncompressed), then compressible again.
            let compressed = round_trip_with(&mut compressor, &noise);
            assert!(
                compressed.len() < noise.len() + noise.len() / 50 + 64,
                "{codec} on noise"
            );
            round_trip_with(&mut compressor, &sample(1000));
        }
    }

    #[test]
    fn attribute_bits_are_kafkas() {
        let bits: Vec<i16> = Compression::ALL.iter().map(|c| c.attribute_bits()).collect();
        assert_eq!(bits, [0, 1, 2, 3, 4]);
        assert_eq!(
            Compression::from_attributes(0x0013),
            Some(Compression::Lz4),
            "other bits ignored"
        );
        assert_eq!(Compression::from_attributes(5), None);
        assert_eq!("zstd".parse::<Compression>(), Ok(Compression::Zstd));
        assert!("brotli".parse::<Compression>().is_err());
    }

    #[test]
    fn formats_are_the_ones_kafka_expects() {
        let input = sample(1000);
        // gzip: the RFC 1952 magic and deflate; the trailer's CRC and length as flate2 writes them.
        let gzip = round_trip(Compression::Gzip, &input);
        assert_eq!(&gzip[..3], &[0x1f, 0x8b, 0x08]);
        let mut reference = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
        reference.write_all(&input).unwrap();
        let reference = reference.finish().unwrap();
        assert_eq!(gzip[gzip.len() - 8..], reference[reference.len() - 8..]);
        // LZ4 frame: magic 0x184D2204 (little-endian), FLG version 01 with independent blocks and
        // nothing else, BD 64 KiB, and the header checksum lz4_flex computes for the same header.
        let lz4 = round_trip(Compression::Lz4, &input);
        assert_eq!(&lz4[..4], &[0x04, 0x22, 0x4d, 0x18]);
        assert_eq!(lz4[4], 0b0110_0000, "FLG");
        assert_eq!(lz4[5], 0b0100_0000, "BD");
        let frame = lz4_flex::frame::FrameInfo::new()
            .block_size(lz4_flex::frame::BlockSize::Max64KB)
            .block_mode(lz4_flex::frame::BlockMode::Independent);
        let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(frame, Vec::new());
        encoder.write_all(&input).unwrap();
        assert_eq!(lz4[..7], encoder.finish().unwrap()[..7], "header with its checksum");
        assert_eq!(lz4[lz4.len() - 4..], [0, 0, 0, 0], "end mark");
        // Zstandard frame magic 0xFD2FB528 (little-endian).
        assert_eq!(&round_trip(Compression::Zstd, &input)[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        // Raw Snappy starts with the uncompressed length as a varint (1000 = 0xe8 0x07).
        assert_eq!(&round_trip(Compression::Snappy, &input)[..2], &[0xe8, 0x07]);
    }

    #[test]
    fn snappy_java_framing_is_read_too() {
        let first = sample(5000);
        let second = b"and a second block".to_vec();
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&1i32.to_be_bytes());
        for block in [&first, &second] {
            let raw = snap::raw::Encoder::new().compress_vec(block).unwrap();
            framed.extend_from_slice(&(raw.len() as i32).to_be_bytes());
            framed.extend_from_slice(&raw);
        }
        let mut out = Vec::new();
        Decompressor::new()
            .decompress_into(Compression::Snappy, &framed, &mut out, 1 << 20)
            .unwrap();
        assert_eq!(out, [first, second].concat());
        framed.truncate(framed.len() - 3);
        assert!(Decompressor::new()
            .decompress_into(Compression::Snappy, &framed, &mut out, 1 << 20)
            .is_err());
    }

    #[test]
    fn zstd_without_a_stated_size_is_read_by_streaming() {
        let input = sample(200_000);
        let streamed = zstd::stream::encode_all(&input[..], ZSTD_LEVEL).unwrap();
        let two_frames = [streamed.clone(), streamed].concat();
        let mut out = Vec::new();
        Decompressor::new()
            .decompress_into(Compression::Zstd, &two_frames, &mut out, 1 << 20)
            .unwrap();
        assert_eq!(out, [&input[..], &input[..]].concat());
    }

    #[test]
    fn inflation_beyond_the_bound_is_an_error_not_an_allocation() {
        let input = vec![0u8; 1 << 20];
        for codec in Compression::ALL {
            let mut compressed = Vec::new();
            Compressor::new(codec)
                .unwrap()
                .compress_into(&input, &mut compressed)
                .unwrap();
            let mut out = Vec::new();
            let result = Decompressor::new().decompress_into(codec, &compressed, &mut out, 4096);
            assert!(result.is_err(), "{codec}");
            assert!(
                out.len() <= 4097 || codec == Compression::None,
                "{codec}: {}",
                out.len()
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage: Vec<u8> = (0..300u32).map(|i| (i * 37 % 251) as u8).collect();
        for codec in Compression::ALL.into_iter().skip(1) {
            let mut out = Vec::new();
            assert!(
                Decompressor::new()
                    .decompress_into(codec, &garbage, &mut out, 1 << 20)
                    .is_err(),
                "{codec}"
            );
        }
    }
}
