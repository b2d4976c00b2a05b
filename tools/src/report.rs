//! What a command hands back to `main`: a verdict (exit status 0 or 1) and
//! what it wrote on the way, as aligned tables and lines for people or as
//! one JSON object for scripts (`--output json`).
//!
//! ```text
//! --output table (default)          --output json
//! TOPIC   PARTITIONS  REPLICAS      {"topics":[{"topic":"a","partitions":3,"replicas":1}],
//! a                3         1       "created":"a"}
//! ```
//! In JSON every table is a key holding an array of row objects (keys are
//! the column names), every field a key; lines written by commands without
//! tables (`log dump`) go to `"lines"`. The object is written when the
//! command ends ([`Report::finish`]), so it is whole or absent.

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

/// How output is written (the global `--output` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// Aligned tables and lines, for people.
    Table,
    /// One JSON object, for scripts.
    Json,
}

/// One cell or field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Text(String),
    Int(i64),
    Float(f64),
    /// Absent (JSON `null`, `-` in a table).
    Null,
}

impl Value {
    pub(crate) fn text(s: impl Into<String>) -> Value {
        Value::Text(s.into())
    }

    fn is_number(&self) -> bool {
        matches!(self, Value::Int(_) | Value::Float(_))
    }

    fn write_json(&self, out: &mut String) {
        match self {
            Value::Text(s) => json_string(s, out),
            Value::Int(n) => out.push_str(&n.to_string()),
            Value::Float(x) if x.is_finite() => out.push_str(&format!("{x:.3}")),
            Value::Float(_) | Value::Null => out.push_str("null"),
        }
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Value {
        Value::Int(i64::from(n))
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Value {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_string())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(s),
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x:.2}"),
            Value::Null => f.write_str("-"),
        }
    }
}

/// Appends `s` as a JSON string (RFC 8259 escapes).
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Rows under named columns.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// The JSON key of the table.
    name: &'static str,
    /// Column names: JSON keys, and (upper-cased) the table header.
    columns: Vec<&'static str>,
    rows: Vec<Vec<Value>>,
}

impl Table {
    pub(crate) fn new(name: &'static str, columns: &[&'static str]) -> Table {
        Table {
            name,
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row: one value per column.
    ///
    /// # Panics
    /// If the row does not have one value per column (a bug in the command).
    pub(crate) fn row(&mut self, row: Vec<Value>) {
        assert_eq!(
            row.len(),
            self.columns.len(),
            "table {}: one value per column",
            self.name
        );
        self.rows.push(row);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn lines_for_test(&self) -> Vec<String> {
        self.lines()
    }

    /// The table as aligned lines: numbers right-aligned, text left-aligned.
    fn lines(&self) -> Vec<String> {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(ToString::to_string).collect())
            .collect();
        let header: Vec<String> = self.columns.iter().map(|c| c.to_uppercase()).collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                cells
                    .iter()
                    .filter_map(|row| row.get(i))
                    .chain(header.get(i))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let numeric: Vec<bool> = (0..self.columns.len())
            .map(|i| {
                !self.rows.is_empty()
                    && self
                        .rows
                        .iter()
                        .all(|row| row.get(i).is_some_and(|v| v.is_number() || *v == Value::Null))
            })
            .collect();
        let render = |row: &[String]| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                if i > 0 {
                    line.push_str("  ");
                }
                if numeric.get(i).copied().unwrap_or(false) {
                    line.push_str(&format!("{cell:>width$}"));
                } else {
                    line.push_str(&format!("{cell:<width$}"));
                }
            }
            line.trim_end().to_string()
        };
        std::iter::once(render(&header))
            .chain(cells.iter().map(|row| render(row)))
            .collect()
    }

    fn write_json(&self, out: &mut String) {
        out.push('[');
        for (r, row) in self.rows.iter().enumerate() {
            if r > 0 {
                out.push(',');
            }
            out.push('{');
            for (i, (column, value)) in self.columns.iter().zip(row).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(column, out);
                out.push(':');
                value.write_json(out);
            }
            out.push('}');
        }
        out.push(']');
    }
}

/// Standard output of a command. A failed write is [`ToolError::Output`], so
/// a closed pipe ends the command instead of panicking as `println!` would.
pub(crate) struct Report<'a> {
    out: &'a mut dyn Write,
    format: OutputFormat,
    /// JSON: keys written so far, in order, with their encoded values.
    entries: Vec<(String, String)>,
    /// JSON: the lines of commands that write lines.
    lines: Vec<String>,
    /// Table: tables written so far (a blank line goes between two).
    tables_written: usize,
}

impl<'a> Report<'a> {
    /// A report writing to `out` in `format`.
    pub(crate) fn new(out: &'a mut dyn Write, format: OutputFormat) -> Report<'a> {
        Report {
            out,
            format,
            entries: Vec::new(),
            lines: Vec::new(),
            tables_written: 0,
        }
    }

    pub(crate) fn format(&self) -> OutputFormat {
        self.format
    }

    fn write_line(&mut self, line: &str) -> Result<(), ToolError> {
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(ToolError::Output)
    }

    /// Writes one line (the newline is added); in JSON it joins `"lines"`.
    pub(crate) fn line(&mut self, line: fmt::Arguments<'_>) -> Result<(), ToolError> {
        match self.format {
            OutputFormat::Table => self.write_line(&line.to_string()),
            OutputFormat::Json => {
                self.lines.push(line.to_string());
                Ok(())
            }
        }
    }

    /// Writes a table (aligned, or a JSON array under its name).
    pub(crate) fn table(&mut self, table: &Table) -> Result<(), ToolError> {
        match self.format {
            OutputFormat::Table => {
                if self.tables_written > 0 {
                    self.write_line("")?;
                }
                self.tables_written += 1;
                for line in table.lines() {
                    self.write_line(&line)?;
                }
                Ok(())
            }
            OutputFormat::Json => {
                let mut encoded = String::new();
                table.write_json(&mut encoded);
                self.entries.push((table.name.to_string(), encoded));
                Ok(())
            }
        }
    }

    /// A value for scripts: a JSON key (nothing in a table: the command's
    /// line says it for people).
    pub(crate) fn field(&mut self, name: &str, value: Value) {
        if self.format == OutputFormat::Json {
            let mut encoded = String::new();
            value.write_json(&mut encoded);
            self.entries.push((name.to_string(), encoded));
        }
    }

    /// Pushes out what was written so far (a live view between refreshes).
    pub(crate) fn flush(&mut self) -> Result<(), ToolError> {
        self.out.flush().map_err(ToolError::Output)
    }

    /// Ends the output: in JSON, writes the one object.
    pub(crate) fn finish(&mut self) -> Result<(), ToolError> {
        if self.format != OutputFormat::Json {
            return Ok(());
        }
        let mut object = String::from("{");
        let lines = std::mem::take(&mut self.lines);
        if !lines.is_empty() {
            let mut encoded = String::from("[");
            for (i, line) in lines.iter().enumerate() {
                if i > 0 {
                    encoded.push(',');
                }
                json_string(line, &mut encoded);
            }
            encoded.push(']');
            self.entries.push(("lines".to_string(), encoded));
        }
        for (i, (key, value)) in self.entries.iter().enumerate() {
            if i > 0 {
                object.push(',');
            }
            json_string(key, &mut object);
            object.push(':');
            object.push_str(value);
        }
        object.push('}');
        self.entries.clear();
        self.write_line(&object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_with_a_newline_and_write_errors_are_output_errors() {
        let mut buffer = Vec::new();
        let mut report = Report::new(&mut buffer, OutputFormat::Table);
        report.line(format_args!("a={}", 1)).unwrap();
        report.line(format_args!("b")).unwrap();
        assert_eq!(buffer, b"a=1\nb\n");

        let mut full = [0u8; 3];
        let mut cursor = std::io::Cursor::new(&mut full[..]);
        let mut report = Report::new(&mut cursor, OutputFormat::Table);
        assert!(matches!(
            report.line(format_args!("too long")),
            Err(ToolError::Output(_))
        ));
    }

    fn sample() -> Table {
        let mut table = Table::new("topics", &["topic", "partitions"]);
        table.row(vec![Value::text("orders"), Value::from(12)]);
        table.row(vec![Value::text("a\"b"), Value::Null]);
        table
    }

    #[test]
    fn tables_align_and_numbers_go_right() {
        let mut buffer = Vec::new();
        let mut report = Report::new(&mut buffer, OutputFormat::Table);
        report.table(&sample()).unwrap();
        report.field("ignored", Value::Int(1));
        report.finish().unwrap();
        let text = String::from_utf8(buffer).unwrap();
        assert_eq!(text, "TOPIC   PARTITIONS\norders          12\na\"b              -\n");
    }

    #[test]
    fn json_is_one_object_with_tables_fields_and_lines() {
        let mut buffer = Vec::new();
        let mut report = Report::new(&mut buffer, OutputFormat::Json);
        report.table(&sample()).unwrap();
        report.field("created", Value::text("orders"));
        report.line(format_args!("tab\there")).unwrap();
        report.finish().unwrap();
        let text = String::from_utf8(buffer).unwrap();
        assert_eq!(
            text,
            "{\"topics\":[{\"topic\":\"orders\",\"partitions\":12},{\"topic\":\"a\\\"b\",\"partitions\":null}],\
             \"created\":\"orders\",\"lines\":[\"tab\\there\"]}\n"
        );
    }
}
