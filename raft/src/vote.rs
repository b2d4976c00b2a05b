//! The durable Raft vote (`<data_dir>/vote`).
//!
//! ```text
//!  0            8       12       16                 16 + len
//!  ┌────────────┬───────┬────────┬──────────────────┐
//!  │ "SLVOTE01" │ len   │ crc32c │ VoteRecord       │
//!  │ magic, 8 B │ u32LE │ u32 LE │ FlatBuffers, len │
//!  └────────────┴───────┴────────┴──────────────────┘
//! ```
//! The frame (len, crc32c over the payload) is the one drawn in `codec.rs`;
//! `VoteRecord` is in `schema/log.fbs`. The file is replaced atomically
//! (temp file, fsync, rename, directory fsync) before openraft is told the
//! vote is saved, so after a crash the file holds the old or the new vote and
//! the term never goes backwards. A damaged vote file is an error, not a torn
//! tail: forgetting a vote could let this node vote twice in one term.

use std::path::{Path, PathBuf};

use planus::ReadAsRoot;

use crate::{
    codec::{encode_frame, read_frame, vote_from_fb, vote_to_fb, FrameRead, FRAME_HEADER_BYTES},
    error::MetaError,
    files::{read_if_exists, write_atomically},
    generated::shardline::meta as fb,
    types::Vote,
};

/// Magic at the start of the vote file; the last two characters are the
/// format version.
pub(crate) const VOTE_MAGIC: [u8; 8] = *b"SLVOTE01";

/// File name of the vote inside the metadata directory.
pub(crate) const VOTE_FILE_NAME: &str = "vote";

/// The vote file of one metadata directory.
#[derive(Debug, Clone)]
pub(crate) struct VoteFile {
    path: PathBuf,
}

impl VoteFile {
    pub(crate) fn new(dir: &Path) -> Self {
        VoteFile {
            path: dir.join(VOTE_FILE_NAME),
        }
    }

    /// Writes the vote durably; returns once it is on disk.
    pub(crate) fn save(&self, vote: &Vote) -> Result<(), MetaError> {
        let mut builder = planus::Builder::new();
        let record = fb::VoteRecord {
            vote: Some(vote_to_fb(vote)),
        };
        let payload = builder.finish(record, None);
        let mut contents = Vec::with_capacity(VOTE_MAGIC.len() + FRAME_HEADER_BYTES + payload.len());
        contents.extend_from_slice(&VOTE_MAGIC);
        encode_frame(payload, &mut contents);
        // Paired check: what is written must read back as the same vote.
        debug_assert_eq!(
            decode_vote_file(&self.path, &contents).ok().flatten().as_ref(),
            Some(vote)
        );
        write_atomically(&self.path, &contents)
    }

    /// The saved vote, `None` if none was ever saved.
    pub(crate) fn load(&self) -> Result<Option<Vote>, MetaError> {
        match read_if_exists(&self.path)? {
            None => Ok(None),
            Some(contents) => decode_vote_file(&self.path, &contents),
        }
    }
}

pub(crate) fn decode_vote_file(path: &Path, contents: &[u8]) -> Result<Option<Vote>, MetaError> {
    if contents.get(..VOTE_MAGIC.len()) != Some(&VOTE_MAGIC[..]) {
        return Err(MetaError::corrupt(path, 0, "not a Shardline vote file (bad magic)"));
    }
    let offset = VOTE_MAGIC.len() as u64;
    let payload = match read_frame(contents, VOTE_MAGIC.len()) {
        FrameRead::Frame { payload, next } if next == contents.len() => payload,
        FrameRead::Frame { .. } => return Err(MetaError::corrupt(path, offset, "bytes after the vote record")),
        FrameRead::End => return Err(MetaError::corrupt(path, offset, "no vote record")),
        FrameRead::Torn { reason } => return Err(MetaError::corrupt(path, offset, reason)),
    };
    let record = fb::VoteRecordRef::read_as_root(payload)
        .and_then(fb::VoteRecord::try_from)
        .map_err(|error| MetaError::corrupt(path, offset, error.to_string()))?;
    let vote = record
        .vote
        .ok_or_else(|| MetaError::corrupt(path, offset, "vote record without a vote"))?;
    Ok(Some(vote_from_fb(vote)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vote_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let file = VoteFile::new(dir.path());
        assert_eq!(file.load().unwrap(), None);
        file.save(&Vote::new(3, 1)).unwrap();
        file.save(&Vote::new_committed(4, 1)).unwrap();
        let reopened = VoteFile::new(dir.path());
        assert_eq!(reopened.load().unwrap(), Some(Vote::new_committed(4, 1)));
    }

    #[test]
    fn damaged_vote_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = VoteFile::new(dir.path());
        file.save(&Vote::new(3, 1)).unwrap();
        let path = dir.path().join(VOTE_FILE_NAME);
        let mut contents = std::fs::read(&path).unwrap();
        let last = contents.len() - 1;
        contents[last] ^= 0xff;
        std::fs::write(&path, &contents).unwrap();
        assert!(matches!(file.load(), Err(MetaError::Corrupt { .. })));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(file.load(), Err(MetaError::Corrupt { .. })));
    }

    #[test]
    fn a_leftover_temporary_does_not_matter() {
        let dir = tempfile::tempdir().unwrap();
        let file = VoteFile::new(dir.path());
        file.save(&Vote::new(7, 2)).unwrap();
        // A crash between creating the temporary and the rename leaves it.
        std::fs::write(crate::files::temporary_path(&dir.path().join(VOTE_FILE_NAME)), b"half").unwrap();
        assert_eq!(file.load().unwrap(), Some(Vote::new(7, 2)));
    }
}
