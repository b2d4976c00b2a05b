//! Length-prefixed frames, in both directions.
//!
//! ```text
//! +----------------------+------------------------------------------+
//! | length: i32 (BE)     | length bytes: request or response         |
//! +----------------------+------------------------------------------+
//!   4 bytes, not counted    request:  header (header.rs) + body
//!   in `length`             response: header (header.rs) + body
//! ```
//!
//! Reading: a length below 0 or above `max_frame_bytes` is refused before
//! anything is allocated for it; a peer that closes the connection inside a
//! frame gets [`NetError::FrameTruncated`]. Frames come out as [`Bytes`]
//! split from one read buffer, so a record set inside a frame can be handed
//! to the log as a slice, without a copy. Reads land directly in that
//! buffer: small reads adapt their size between 4 and 64 KiB (one syscall
//! picks up several pipelined requests, an idle connection holds little),
//! and the missing part of a large frame is read in chunks of at most 1 MiB,
//! so memory is committed only as bytes actually arrive.
//!
//! Writing: a [`ResponseFrame`] is the 4-byte prefix plus a list of pieces
//! (owned header bytes, and for Fetch the record slices untouched). How the
//! pieces reach the socket is `conn.rs`'s business.

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt};

use crate::error::{EncodeError, NetError};
use crate::header::encode_response_header;

/// Size of the length prefix.
pub(crate) const LENGTH_PREFIX_BYTES: usize = 4;

/// Smallest and largest size of one read while no large frame is pending.
/// The size doubles after a read that filled it and halves after one that
/// used less than a quarter, so a busy connection reads many pipelined
/// requests per syscall and an idle one keeps little memory.
const READ_BYTES_MIN: usize = 4 << 10;
const READ_BYTES_MAX: usize = 64 << 10;

/// When at least this much of the current frame is still missing, read it
/// in chunks of up to `DIRECT_READ_BYTES_MAX`.
const DIRECT_READ_BYTES_MIN: usize = READ_BYTES_MAX;

/// Upper bound of one read into a large frame: the memory zeroed (and so
/// committed) ahead of bytes that have not arrived yet.
const DIRECT_READ_BYTES_MAX: usize = 1 << 20;

/// Splits a byte stream into frames.
#[derive(Debug)]
pub(crate) struct FrameReader {
    /// Received bytes not yet returned as frames.
    buffer: BytesMut,
    /// Size of the next small read (`READ_BYTES_MIN..=READ_BYTES_MAX`).
    read_bytes: usize,
    /// Largest accepted `length`.
    max_frame_bytes: usize,
}

impl FrameReader {
    pub(crate) fn new(max_frame_bytes: usize) -> Self {
        FrameReader {
            buffer: BytesMut::new(),
            read_bytes: READ_BYTES_MIN,
            max_frame_bytes,
        }
    }

    /// The next frame's length (its prefix read and checked against
    /// `max_frame_bytes`, its body perhaps not yet arrived), or `Ok(None)`
    /// when the peer closed the connection cleanly between frames.
    pub(crate) async fn next_length<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<Option<usize>, NetError> {
        loop {
            if let Some(prefix) = self.buffer.first_chunk::<LENGTH_PREFIX_BYTES>() {
                let length = i32::from_be_bytes(*prefix);
                return match usize::try_from(length) {
                    Ok(frame_bytes) if frame_bytes <= self.max_frame_bytes => Ok(Some(frame_bytes)),
                    _ => Err(NetError::FrameLength {
                        length,
                        max_frame_bytes: self.max_frame_bytes,
                    }),
                };
            }
            let received_bytes = self.buffer.len();
            let read_bytes = self.fill(reader, LENGTH_PREFIX_BYTES - received_bytes).await?;
            if read_bytes == 0 {
                if received_bytes == 0 {
                    return Ok(None);
                }
                return Err(NetError::FrameTruncated {
                    expected_bytes: LENGTH_PREFIX_BYTES,
                    received_bytes,
                });
            }
        }
    }

    /// The next frame's payload (without its prefix), or `Ok(None)` when the
    /// peer closed the connection cleanly between frames.
    pub(crate) async fn next_frame<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> Result<Option<Bytes>, NetError> {
        loop {
            let needed_bytes = match self.buffer.first_chunk::<LENGTH_PREFIX_BYTES>() {
                None => LENGTH_PREFIX_BYTES,
                Some(prefix) => {
                    let length = i32::from_be_bytes(*prefix);
                    let frame_bytes = match usize::try_from(length) {
                        Ok(frame_bytes) if frame_bytes <= self.max_frame_bytes => frame_bytes,
                        _ => {
                            return Err(NetError::FrameLength {
                                length,
                                max_frame_bytes: self.max_frame_bytes,
                            })
                        }
                    };
                    let needed_bytes = LENGTH_PREFIX_BYTES + frame_bytes;
                    if self.buffer.len() >= needed_bytes {
                        self.buffer.advance(LENGTH_PREFIX_BYTES);
                        let frame = self.buffer.split_to(frame_bytes).freeze();
                        assert_eq!(frame.len(), frame_bytes);
                        return Ok(Some(frame));
                    }
                    needed_bytes
                }
            };
            let received_bytes = self.buffer.len();
            assert!(received_bytes < needed_bytes);
            let read_bytes = self.fill(reader, needed_bytes - received_bytes).await?;
            if read_bytes == 0 {
                if received_bytes == 0 {
                    return Ok(None);
                }
                return Err(NetError::FrameTruncated {
                    expected_bytes: needed_bytes,
                    received_bytes,
                });
            }
        }
    }

    /// One read from `reader` into the buffer; returns the bytes added
    /// (0 = end of stream).
    async fn fill<R: AsyncRead + Unpin>(&mut self, reader: &mut R, missing_bytes: usize) -> Result<usize, NetError> {
        let small = missing_bytes < DIRECT_READ_BYTES_MIN;
        let chunk_bytes = if small {
            self.read_bytes
        } else {
            // Reserve the whole frame once (virtual memory only), so growing
            // it chunk by chunk never copies what has arrived.
            self.buffer.reserve(missing_bytes);
            missing_bytes.min(DIRECT_READ_BYTES_MAX)
        };
        let start = self.buffer.len();
        self.buffer.resize(start + chunk_bytes, 0);
        let result = match self.buffer.get_mut(start..) {
            Some(target) => reader.read(target).await,
            None => Ok(0),
        };
        let read_bytes = match result {
            Ok(read_bytes) => read_bytes.min(chunk_bytes),
            Err(error) => {
                self.buffer.truncate(start);
                return Err(NetError::Io(error));
            }
        };
        self.buffer.truncate(start + read_bytes);
        if small {
            self.read_bytes = if read_bytes == chunk_bytes {
                (chunk_bytes * 2).min(READ_BYTES_MAX)
            } else if read_bytes < chunk_bytes / 4 {
                (chunk_bytes / 2).max(READ_BYTES_MIN)
            } else {
                chunk_bytes
            };
        }
        Ok(read_bytes)
    }
}

/// One encoded response: the length prefix and the pieces that follow it, to
/// be written in order.
#[derive(Debug)]
pub(crate) struct ResponseFrame {
    pub(crate) prefix: [u8; LENGTH_PREFIX_BYTES],
    pub(crate) pieces: Vec<Bytes>,
}

impl ResponseFrame {
    /// Bytes on the wire, prefix included.
    pub(crate) fn wire_bytes(&self) -> usize {
        LENGTH_PREFIX_BYTES + self.pieces.iter().map(Bytes::len).sum::<usize>()
    }

    /// The whole frame in one buffer (tests and tools; the connection does
    /// not use this).
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut out = self.prefix.to_vec();
        for piece in &self.pieces {
            out.extend_from_slice(piece);
        }
        out
    }
}

/// Builds a [`ResponseFrame`]: small fields go to an owned buffer, shared
/// slices (Fetch records) are kept as they are.
#[derive(Debug)]
pub(crate) struct FrameBuilder {
    current: BytesMut,
    pieces: Vec<Bytes>,
}

impl FrameBuilder {
    /// A frame that starts with the response header.
    pub(crate) fn new(correlation_id: i32, header_version: i16) -> Self {
        let mut current = BytesMut::with_capacity(256);
        encode_response_header(&mut current, correlation_id, header_version);
        FrameBuilder {
            current,
            pieces: Vec::new(),
        }
    }

    /// Where small fields are written.
    pub(crate) fn buf(&mut self) -> &mut BytesMut {
        &mut self.current
    }

    /// Appends `slice` by reference (no copy here).
    pub(crate) fn push_shared(&mut self, slice: Bytes) {
        if slice.is_empty() {
            return;
        }
        if !self.current.is_empty() {
            self.pieces.push(self.current.split().freeze());
        }
        self.pieces.push(slice);
    }

    /// The finished frame; fails if it does not fit an `i32` prefix.
    pub(crate) fn finish(mut self) -> Result<ResponseFrame, EncodeError> {
        if !self.current.is_empty() {
            self.pieces.push(self.current.freeze());
        }
        let payload_bytes: usize = self.pieces.iter().map(Bytes::len).sum();
        let Ok(length) = i32::try_from(payload_bytes) else {
            return Err(EncodeError::TooLarge {
                field: "response frame",
                bytes: payload_bytes,
            });
        };
        Ok(ResponseFrame {
            prefix: length.to_be_bytes(),
            pieces: self.pieces,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use futures_lite::future::block_on;

    fn frames_of(input: &[u8], max_frame_bytes: usize) -> (Vec<Bytes>, Result<(), NetError>) {
        let mut reader = FrameReader::new(max_frame_bytes);
        // A reader that hands out at most 3 bytes per read, to cross every boundary.
        let mut source = futures_lite::io::BufReader::with_capacity(3, input);
        let mut frames = Vec::new();
        let result = block_on(async {
            loop {
                match reader.next_frame(&mut source).await? {
                    Some(frame) => frames.push(frame),
                    None => return Ok(()),
                }
            }
        });
        (frames, result)
    }

    #[test]
    fn splits_pipelined_frames_across_small_reads() {
        let input = [0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0, 0, 0, 0, 1, b'c'];
        let (frames, result) = frames_of(&input, 16);
        result.unwrap();
        assert_eq!(
            frames,
            vec![Bytes::from_static(b"ab"), Bytes::new(), Bytes::from_static(b"c")]
        );
    }

    #[test]
    fn large_frame_is_read_directly_and_intact() {
        let payload: Vec<u8> = (0..(3 << 20) + 17).map(|index: usize| (index % 251) as u8).collect();
        let mut input = (payload.len() as i32).to_be_bytes().to_vec();
        input.extend_from_slice(&payload);
        let mut reader = FrameReader::new(4 << 20);
        let mut source = &input[..];
        let frame = block_on(reader.next_frame(&mut source)).unwrap().unwrap();
        assert_eq!(&frame[..], &payload[..]);
    }

    #[test]
    fn bad_prefixes_and_truncation_are_errors() {
        let (_, result) = frames_of(&[0xff, 0xff, 0xff, 0xff], 16);
        assert!(matches!(result, Err(NetError::FrameLength { length: -1, .. })));
        let (_, result) = frames_of(&[0, 0, 0, 17], 16);
        assert!(matches!(result, Err(NetError::FrameLength { length: 17, .. })));
        let (_, result) = frames_of(&[0, 0, 0, 4, 1, 2], 16);
        assert!(matches!(
            result,
            Err(NetError::FrameTruncated {
                expected_bytes: 8,
                received_bytes: 6
            })
        ));
        let (_, result) = frames_of(&[0, 0], 16);
        assert!(matches!(
            result,
            Err(NetError::FrameTruncated { expected_bytes: 4, .. })
        ));
        let (frames, result) = frames_of(&[], 16);
        assert!(frames.is_empty() && result.is_ok());
    }

    #[test]
    fn builder_keeps_shared_slices_and_prefixes_the_length() {
        let mut builder = FrameBuilder::new(5, 1);
        builder.buf().put_u8(9);
        let records = Bytes::from(vec![7u8; 100]);
        builder.push_shared(records.clone());
        builder.buf().put_u8(8);
        let frame = builder.finish().unwrap();
        assert_eq!(frame.pieces.len(), 3);
        assert_eq!(frame.pieces[1].as_ptr(), records.as_ptr());
        let bytes = frame.to_vec();
        assert_eq!(frame.wire_bytes(), bytes.len());
        assert_eq!(&bytes[..4], &((bytes.len() - 4) as i32).to_be_bytes());
        assert_eq!(&bytes[4..10], &[0, 0, 0, 5, 0, 9]);
    }
}
