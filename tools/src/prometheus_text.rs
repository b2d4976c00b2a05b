//! Just enough of the Prometheus text format 0.0.4 for `shardctl top`:
//! fetch `/metrics` over HTTP/1.1 and read its samples.
//!
//! ```text
//! # HELP name text            skipped
//! # TYPE name counter         skipped
//! name{label="value",...} 12  a sample: name, labels (\\, \" and \n escaped), value
//! name 3.5                    a sample without labels
//! ```
//! A line that is not a sample is skipped, never trusted: the page comes
//! from the network. Bounded: at most [`PAGE_BYTES_MAX`] are read.

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use crate::error::ToolError;

/// Largest /metrics page read (a broker with the default bounds writes a
/// few MiB at most).
const PAGE_BYTES_MAX: u64 = 32 << 20;
/// Longest the tool waits to connect or for the page.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub(crate) fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// `GET /metrics` from `addr` (`host:port`): the body, as text.
pub(crate) fn fetch(addr: &str) -> Result<String, ToolError> {
    let failed = |reason: String| ToolError::Broker {
        context: "GET /metrics",
        addr: addr.to_string(),
        reason,
    };
    let resolved = addr
        .to_socket_addrs()
        .map_err(|e| failed(e.to_string()))?
        .next()
        .ok_or_else(|| failed("no address".into()))?;
    let mut stream = TcpStream::connect_timeout(&resolved, HTTP_TIMEOUT).map_err(|e| failed(e.to_string()))?;
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(HTTP_TIMEOUT)))
        .map_err(|e| failed(e.to_string()))?;
    stream
        .write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| failed(e.to_string()))?;
    let mut page = Vec::new();
    stream
        .take(PAGE_BYTES_MAX)
        .read_to_end(&mut page)
        .map_err(|e| failed(e.to_string()))?;
    let page = String::from_utf8_lossy(&page);
    let (head, body) = page
        .split_once("\r\n\r\n")
        .ok_or_else(|| failed("not an HTTP response".into()))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1).is_none_or(|code| code != "200") {
        return Err(failed(format!("answered `{status}`")));
    }
    Ok(body.to_string())
}

/// Every sample of the page (lines that are not samples are skipped).
pub(crate) fn parse(page: &str) -> Vec<Sample> {
    page.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Reads `k="v",...}`; returns the labels and what follows the `}`.
fn parse_labels(mut rest: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (at, c) = chars.next()?;
            match c {
                '"' => break at,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        rest = after.get(end + 1..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_and_escapes_are_read_and_junk_skipped() {
        let page = "# HELP x y\n# TYPE x counter\n\
                    shardline_requests_total{shard=\"0\",api=\"Produce\",version=\"9\"} 12\n\
                    up 1\n\
                    weird{a=\"q\\\"uote\\\\\"} 2.5\n\
                    h_bucket{le=\"+Inf\"} +Inf\n\
                    broken{a=\"1\" x\n\
                    novalue\n";
        let samples = parse(page);
        assert_eq!(samples.len(), 4, "{samples:?}");
        assert_eq!(samples[0].name, "shardline_requests_total");
        assert_eq!(samples[0].label("api"), Some("Produce"));
        assert_eq!(samples[0].value, 12.0);
        assert_eq!(samples[1].labels, vec![]);
        assert_eq!(samples[2].label("a"), Some("q\"uote\\"));
        assert!(samples[3].value.is_infinite());
    }
}
