//! The bytes of one file, sparse: 4 KiB pages in a map, a missing page is a
//! hole (reads as zeros, `SEEK_HOLE` finds it). Pages are shared (`Arc`)
//! between the file's current and durable copies, so making a file durable
//! clones a map of pointers, not its bytes; a write copies only the pages it
//! touches.
//!
//! ```text
//!   size ───────────────────────────────────────────────┐
//!   page 0      page 1      page 2 (hole)  page 3       │
//!   ┌──────────┬──────────┬ ─ ─ ─ ─ ─ ─ ┬──────────┐    ▼
//!   │ 4096 B   │ 4096 B   │   absent     │ 4096 B   │ …  (bytes past `size` are zero)
//!   └──────────┴──────────┴ ─ ─ ─ ─ ─ ─ ┴──────────┘
//! ```

use std::{collections::BTreeMap, sync::Arc};

/// Bytes per page of the sparse map (the kernel's page size here).
pub(crate) const PAGE_BYTES: u64 = 4096;
const PAGE_USIZE: usize = PAGE_BYTES as usize;

/// Bytes per sector: the unit in which an unsynced write survives a cut or
/// not (a disk writes whole sectors; a write torn by power loss keeps some of
/// its sectors).
pub(crate) const SECTOR_BYTES: u64 = 512;

type Page = Arc<[u8; PAGE_USIZE]>;

/// One file's size and bytes.
#[derive(Clone, Default, Debug)]
pub(crate) struct FileData {
    size: u64,
    /// Page index → page. No page at or past `size.div_ceil(PAGE_BYTES)`.
    pages: BTreeMap<u64, Page>,
}

impl FileData {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// 512-byte blocks allocated (for `stat`).
    pub(crate) fn blocks(&self) -> u64 {
        self.pages.len() as u64 * (PAGE_BYTES / 512)
    }

    /// Writes `data` at `offset`, growing the file if it ends past `size`.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let position = offset + done as u64;
            let in_page = (position % PAGE_BYTES) as usize;
            let n = (PAGE_USIZE - in_page).min(data.len() - done);
            let page = self
                .pages
                .entry(position / PAGE_BYTES)
                .or_insert_with(|| Arc::new([0; PAGE_USIZE]));
            let page = Arc::make_mut(page);
            match (page.get_mut(in_page..in_page + n), data.get(done..done + n)) {
                (Some(to), Some(from)) => to.copy_from_slice(from),
                _ => unreachable!("in_page + n ≤ PAGE_BYTES and done + n ≤ data.len()"),
            }
            done += n;
        }
        self.size = self.size.max(offset + data.len() as u64);
        self.check();
    }

    /// Up to `len` bytes from `offset`, fewer at the end of the file.
    pub(crate) fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        let end = self.size.min(offset.saturating_add(len));
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; (end - offset) as usize];
        for (&index, page) in self.pages.range(offset / PAGE_BYTES..end.div_ceil(PAGE_BYTES)) {
            let page_start = index * PAGE_BYTES;
            let from = offset.max(page_start);
            let to = end.min(page_start + PAGE_BYTES);
            let source = page.get((from - page_start) as usize..(to - page_start) as usize);
            let target = out.get_mut((from - offset) as usize..(to - offset) as usize);
            if let (Some(source), Some(target)) = (source, target) {
                target.copy_from_slice(source);
            }
        }
        out
    }

    /// Sets the size: shrinking drops the bytes past it (a later growth reads
    /// zeros there), growing adds a hole.
    pub(crate) fn set_size(&mut self, size: u64) {
        if size < self.size {
            self.pages.split_off(&size.div_ceil(PAGE_BYTES));
            self.zero_in_page(size, PAGE_BYTES - size % PAGE_BYTES);
        }
        self.size = size;
        self.check();
    }

    /// Zeroes `len` bytes from `offset` (`FALLOC_FL_PUNCH_HOLE`): whole pages
    /// become holes; the size does not change.
    pub(crate) fn punch_hole(&mut self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return;
        }
        let first_whole = offset.div_ceil(PAGE_BYTES);
        let last_whole = end / PAGE_BYTES;
        if first_whole < last_whole {
            let kept_tail = self.pages.split_off(&last_whole);
            self.pages.split_off(&first_whole);
            self.pages.extend(kept_tail);
        }
        // The partial pages at either end.
        let head_end = end.min(first_whole * PAGE_BYTES);
        if offset < head_end {
            self.zero_in_page(offset, head_end - offset);
        }
        let tail_start = (last_whole * PAGE_BYTES).max(offset);
        if tail_start < end && tail_start >= first_whole * PAGE_BYTES {
            self.zero_in_page(tail_start, end - tail_start);
        }
        self.check();
    }

    /// Zeroes `len` bytes from `offset`, all inside one page (no-op on a hole).
    fn zero_in_page(&mut self, offset: u64, len: u64) {
        let in_page = (offset % PAGE_BYTES) as usize;
        let end = (in_page + len as usize).min(PAGE_USIZE);
        if in_page == 0 && end == PAGE_USIZE {
            self.pages.remove(&(offset / PAGE_BYTES));
        } else if let Some(page) = self.pages.get_mut(&(offset / PAGE_BYTES)) {
            if let Some(bytes) = Arc::make_mut(page).get_mut(in_page..end) {
                bytes.fill(0);
            }
        }
    }

    /// `SEEK_DATA`: the first offset ≥ `from` that is not in a hole, `None`
    /// (ENXIO) if there is none before the end.
    pub(crate) fn seek_data(&self, from: u64) -> Option<u64> {
        let (&index, _) = self.pages.range(from / PAGE_BYTES..).next()?;
        let at = from.max(index * PAGE_BYTES);
        (at < self.size).then_some(at)
    }

    /// `SEEK_HOLE`: the first offset ≥ `from` in a hole, where the end of the
    /// file counts as one; `None` (ENXIO) if `from` is at or past the end.
    pub(crate) fn seek_hole(&self, from: u64) -> Option<u64> {
        if from >= self.size {
            return None;
        }
        let mut index = from / PAGE_BYTES;
        for (&present, _) in self.pages.range(index..) {
            if present != index {
                break;
            }
            index += 1;
        }
        Some((index * PAGE_BYTES).max(from).min(self.size))
    }

    /// Data pages are whole and none lies past the end (checked after every
    /// change: a model that drifts would make every cut meaningless).
    fn check(&self) {
        if let Some((&last, _)) = self.pages.last_key_value() {
            assert!(
                last < self.size.div_ceil(PAGE_BYTES),
                "page {last} past the end of a {}-byte file",
                self.size
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_read_back_across_pages_and_holes_read_zero() {
        let mut file = FileData::default();
        file.write(4090, b"0123456789");
        file.write(3 * PAGE_BYTES, b"x");
        assert_eq!(file.size(), 3 * PAGE_BYTES + 1);
        assert_eq!(file.read(4090, 10), b"0123456789");
        assert_eq!(file.read(2 * PAGE_BYTES, 3), vec![0; 3]);
        assert_eq!(file.read(3 * PAGE_BYTES, 100), b"x");
        assert_eq!(file.read(3 * PAGE_BYTES + 1, 100), b"");
        assert_eq!(file.seek_hole(0), Some(2 * PAGE_BYTES));
        assert_eq!(file.seek_data(2 * PAGE_BYTES), Some(3 * PAGE_BYTES));
        assert_eq!(file.seek_data(3 * PAGE_BYTES + 1), None);
    }

    #[test]
    fn shrinking_drops_bytes_and_growing_again_reads_zeros() {
        let mut file = FileData::default();
        file.write(0, &[7; 10_000]);
        file.set_size(5000);
        file.set_size(10_000);
        assert_eq!(file.read(4999, 2), vec![7, 0]);
        assert_eq!(file.read(9000, 1000), vec![0; 1000]);
        file.set_size(0);
        assert_eq!(file.blocks(), 0);
    }

    #[test]
    fn a_punched_hole_reads_zero_keeps_the_size_and_seeks_as_a_hole() {
        let mut file = FileData::default();
        file.write(0, &[1; 5 * PAGE_USIZE]);
        file.punch_hole(100, 3 * PAGE_BYTES);
        assert_eq!(file.size(), 5 * PAGE_BYTES);
        assert_eq!(file.read(99, 2), vec![1, 0]);
        assert_eq!(file.read(3 * PAGE_BYTES + 99, 2), vec![0, 1]);
        assert_eq!(file.seek_hole(0), Some(PAGE_BYTES));
        assert_eq!(file.seek_data(PAGE_BYTES), Some(3 * PAGE_BYTES));
        // Inside one page.
        file.punch_hole(4 * PAGE_BYTES + 10, 10);
        assert_eq!(file.read(4 * PAGE_BYTES + 9, 12), [&[1][..], &[0; 10], &[1]].concat());
        // Past the end: nothing.
        file.punch_hole(6 * PAGE_BYTES, 10);
        assert_eq!(file.size(), 5 * PAGE_BYTES);
    }
}
