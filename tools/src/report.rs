//! What a command hands back to `main`: a verdict (exit status 0 or 1) and the
//! lines it wrote on the way.

use std::{fmt, io::Write};

use crate::error::ToolError;

/// What a command found, once it ran to the end. Failing to run at all is a
/// [`ToolError`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing wrong was found (exit status 0).
    Healthy,
    /// Corruption was found and reported (exit status 1).
    Corrupt,
}

/// Standard output of a command: one `line` call per line. A failed write is
/// [`ToolError::Output`], so a closed pipe ends the command instead of
/// panicking as `println!` would.
pub(crate) struct Report<'a> {
    out: &'a mut dyn Write,
}

impl<'a> Report<'a> {
    /// A report writing to `out`.
    pub(crate) fn new(out: &'a mut dyn Write) -> Report<'a> {
        Report { out }
    }

    /// Writes one line (the newline is added).
    pub(crate) fn line(&mut self, line: fmt::Arguments<'_>) -> Result<(), ToolError> {
        self.out
            .write_fmt(line)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(ToolError::Output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_with_a_newline_and_write_errors_are_output_errors() {
        let mut buffer = Vec::new();
        let mut report = Report::new(&mut buffer);
        report.line(format_args!("a={}", 1)).unwrap();
        report.line(format_args!("b")).unwrap();
        assert_eq!(buffer, b"a=1\nb\n");

        let mut full = [0u8; 3];
        let mut cursor = std::io::Cursor::new(&mut full[..]);
        let mut report = Report::new(&mut cursor);
        assert!(matches!(
            report.line(format_args!("too long")),
            Err(ToolError::Output(_))
        ));
    }
}
