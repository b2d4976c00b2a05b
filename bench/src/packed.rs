//! Many short byte strings stored back to back in one buffer: key names, vocabulary words. One
//! allocation for all of them instead of one each (a million keys take about 20 MB this way).

/// Byte strings back to back; string i runs from the end of string i-1 (or 0) to `ends[i]`.
#[derive(Debug, Clone, Default)]
pub struct PackedBytes {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl PackedBytes {
    /// Room for `count` strings of about `average_bytes` each.
    pub fn with_capacity(count: usize, average_bytes: usize) -> PackedBytes {
        PackedBytes {
            bytes: Vec::with_capacity(count.saturating_mul(average_bytes)),
            ends: Vec::with_capacity(count),
        }
    }

    /// Appends one string; returns it as stored.
    pub fn push(&mut self, string: &[u8]) -> &[u8] {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(string);
        self.ends.push(self.bytes.len());
        self.bytes.get(start..).unwrap_or_default()
    }

    /// Number of strings.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// String `index`; empty if there is no such string.
    pub fn get(&self, index: usize) -> &[u8] {
        let start = index
            .checked_sub(1)
            .and_then(|before| self.ends.get(before))
            .copied()
            .unwrap_or(0);
        let end = self.ends.get(index).copied().unwrap_or(start);
        self.bytes.get(start..end).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_come_back_as_pushed() {
        let mut packed = PackedBytes::with_capacity(3, 4);
        assert_eq!(packed.push(b"key-0"), b"key-0");
        packed.push(b"");
        packed.push(b"abc");
        assert_eq!(packed.len(), 3);
        assert_eq!(packed.get(0), b"key-0");
        assert_eq!(packed.get(1), b"");
        assert_eq!(packed.get(2), b"abc");
        assert_eq!(packed.get(3), b"", "out of range is empty, not a panic");
    }
}
