//! The slow-request log: a request whose handling (decode to answer) took
//! longer than `--slow-request-ms` is one INFO line naming its API, version,
//! correlation id, time taken and the partitions it touched (first few), so
//! an operator can tell which partition or API is slow without a log line
//! per request. A Fetch's long-poll wait, up to the max wait it asked for,
//! does not count.
//!
//! The request path pays only copies of a few integers; the partitions are
//! read from the response, and only when the request was slow.

use std::{fmt::Write, time::Duration};

use kafka_protocol::messages::ApiKey;
use shardline_net::{Request, RequestBody, ResponseBody};

/// Partitions named in one slow-request line; the rest are counted.
const PARTITIONS_LOGGED_MAX: usize = 8;

/// What a request is watched with.
pub(super) struct SlowWatch {
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    /// Over this the request is slow; `None`: not watched.
    threshold: Option<Duration>,
}

impl SlowWatch {
    /// Watches `request` against `slow_request_ms` (0: off).
    pub(super) fn new(request: &Request, slow_request_ms: u64) -> SlowWatch {
        let allowance_ms = match &request.body {
            RequestBody::Fetch(fetch) => u64::try_from(fetch.max_wait_ms).unwrap_or(0),
            _ => 0,
        };
        SlowWatch {
            api_key: request.header.api_key,
            api_version: request.header.api_version,
            correlation_id: request.header.correlation_id,
            threshold: (slow_request_ms > 0)
                .then(|| Duration::from_millis(slow_request_ms.saturating_add(allowance_ms))),
        }
    }

    /// Logs the request if it took longer than its threshold.
    pub(super) fn check(&self, elapsed: Duration, response: Option<&ResponseBody>) {
        let Some(threshold) = self.threshold else {
            return;
        };
        if elapsed <= threshold {
            return;
        }
        let api = ApiKey::try_from(self.api_key).map_or_else(|()| self.api_key.to_string(), |key| format!("{key:?}"));
        tracing::info!(
            api = %api,
            api_version = self.api_version,
            correlation_id = self.correlation_id,
            elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            threshold_ms = u64::try_from(threshold.as_millis()).unwrap_or(u64::MAX),
            partitions = %partitions_of(response),
            "slow request"
        );
    }
}

/// `topic-partition` of the partitions a Produce or Fetch answer names
/// (first [`PARTITIONS_LOGGED_MAX`], then how many more), `-` for others.
fn partitions_of(response: Option<&ResponseBody>) -> String {
    let named: Vec<(&str, i32)> = match response {
        Some(ResponseBody::Produce(produce)) => produce
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.as_str(), p.index)))
            .collect(),
        Some(ResponseBody::Fetch(fetch)) => fetch
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.as_str(), p.partition_index)))
            .collect(),
        _ => Vec::new(),
    };
    if named.is_empty() {
        return "-".to_string();
    }
    let mut out = String::new();
    for (topic, index) in named.iter().take(PARTITIONS_LOGGED_MAX) {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{topic}-{index}");
    }
    if named.len() > PARTITIONS_LOGGED_MAX {
        let _ = write!(out, " and {} more", named.len() - PARTITIONS_LOGGED_MAX);
    }
    out
}
