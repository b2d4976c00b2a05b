//! One scrape's families, in a fixed order, from the gathered snapshots.
//! Every name, label and help text of `/metrics` is here; docs/operations.md
//! (Monitoring) lists them with the alert each serves.

use std::collections::HashMap;

use kafka_protocol::{messages::ApiKey, ResponseError};

use super::{
    exposition::{Exposition, Format, Kind},
    histogram::HistogramSnapshot,
    snapshot::ShardSnapshot,
    Gathered, LeftOut,
};

/// Kafka's name of an API key (`Produce`), or its number.
fn api_name(api_key: i16) -> String {
    ApiKey::try_from(api_key).map_or_else(|_| api_key.to_string(), |key| format!("{key:?}"))
}

/// Kafka's name of an error code (`NotLeaderOrFollower`), or its number.
fn error_name(code: i16) -> String {
    ResponseError::try_from_code(code).map_or_else(|| code.to_string(), |error| format!("{error:?}"))
}

/// Writes one family whose every shard has one sample.
fn per_shard(
    page: &mut Exposition,
    shards: &[&ShardSnapshot],
    name: &'static str,
    kind: Kind,
    help: &str,
    value: impl Fn(&ShardSnapshot) -> u64,
) {
    page.family(name, kind, help);
    for snapshot in shards {
        let shard = snapshot.shard.to_string();
        page.sample(&[("shard", &shard)], value(snapshot));
    }
}

/// Writes one histogram family with one histogram per shard.
fn per_shard_histogram(
    page: &mut Exposition,
    shards: &[&ShardSnapshot],
    name: &'static str,
    help: &str,
    histogram: impl Fn(&ShardSnapshot) -> HistogramSnapshot,
) {
    page.family(name, Kind::Histogram, help);
    for snapshot in shards {
        let shard = snapshot.shard.to_string();
        page.histogram(&[("shard", &shard)], &histogram(snapshot));
    }
}

pub(super) fn render(gathered: &Gathered, left_out: &mut LeftOut, format: Format) -> String {
    let mut page = Exposition::new(format);
    let shards: Vec<&ShardSnapshot> = gathered.shards.iter().filter_map(|(_, s)| s.as_ref()).collect();

    page.family(
        "shardline_shard_up",
        Kind::Gauge,
        "1 if the shard answered this scrape in time, else 0 (its series are missing).",
    );
    for (shard, snapshot) in &gathered.shards {
        page.sample(&[("shard", &shard.to_string())], u64::from(snapshot.is_some()));
    }

    requests(&mut page, &shards);
    connections(&mut page, &shards);
    mqtt(&mut page, &shards);
    cleaner(&mut page, &shards);
    fetch_sessions(&mut page, &shards);
    cross_shard(&mut page, &shards);
    storage(&mut page, &shards);
    partitions(&mut page, &shards);
    groups(&mut page, &shards);
    raft(&mut page, gathered);
    process(&mut page, gathered);

    let partitions_left_out: u64 = shards.iter().map(|s| s.partitions_left_out).sum();
    let offsets_left_out: u64 = shards.iter().map(|s| s.committed_left_out).sum();
    for (family, count) in [
        ("partition", partitions_left_out),
        ("consumer_group_offset", offsets_left_out),
    ] {
        let total = left_out.entry(family).or_insert(0);
        *total = total.saturating_add(count);
    }
    page.family(
        "shardline_metrics_series_left_out",
        Kind::Counter,
        "Series left out of scrapes by a bound (partitions, consumer-group offsets per shard), summed over scrapes.",
    );
    for (family, total) in left_out.iter() {
        page.sample(&[("family", family)], *total);
    }
    page.family(
        "shardline_metrics_gather_seconds",
        Kind::Gauge,
        "Time this scrape took to gather every shard's snapshot.",
    );
    page.sample_float(&[], gathered.gather_time.as_secs_f64());
    page.finish()
}

fn requests(page: &mut Exposition, shards: &[&ShardSnapshot]) {
    page.family(
        "shardline_requests",
        Kind::Counter,
        "Kafka requests handled, by API and version.",
    );
    for snapshot in shards {
        let shard = snapshot.shard.to_string();
        for (api_key, version, count) in &snapshot.requests {
            let api = api_name(*api_key);
            let version = version.to_string();
            page.sample(&[("shard", &shard), ("api", &api), ("version", &version)], *count);
        }
    }
    page.family(
        "shardline_request_errors",
        Kind::Counter,
        "Kafka error codes answered, by API and code (api=\"none\": outside a request, e.g. authentication).",
    );
    for snapshot in shards {
        let shard = snapshot.shard.to_string();
        let mut errors = snapshot.errors.clone();
        errors.sort_unstable();
        for (api_key, code, count) in errors {
            let api = api_key.map_or_else(|| "none".to_string(), api_name);
            let (code_text, error) = (code.to_string(), error_name(code));
            let labels: [(&str, &str); 4] = [
                ("shard", &shard),
                ("api", &api),
                ("code", &code_text),
                ("error", &error),
            ];
            page.sample(&labels, count);
        }
        if snapshot.errors_left_out > 0 {
            let labels: [(&str, &str); 4] = [
                ("shard", &shard),
                ("api", "other"),
                ("code", "other"),
                ("error", "other"),
            ];
            page.sample(&labels, snapshot.errors_left_out);
        }
    }
    page.family(
        "shardline_request_latency_seconds",
        Kind::Histogram,
        "Time from a request's decode to its answer, by API (a Fetch includes its long-poll wait).",
    );
    for snapshot in shards {
        let shard = snapshot.shard.to_string();
        for (api_key, histogram) in &snapshot.latencies {
            let api = api_name(*api_key);
            page.histogram(&[("shard", &shard), ("api", &api)], histogram);
        }
    }
    per_shard(
        page,
        shards,
        "shardline_requests_in_flight",
        Kind::Gauge,
        "Requests being handled now.",
        |s| s.requests_in_flight,
    );
    page.family(
        "shardline_forwarded_requests",
        Kind::Counter,
        "Client requests whose work ran partly on another shard (kind=partition: produce, fetch, offsets; kind=group: coordinator requests).",
    );
    for snapshot in shards {
        let shard = snapshot.shard.to_string();
        page.sample(
            &[("shard", &shard), ("kind", "partition")],
            snapshot.forwarded_partition_requests,
        );
        page.sample(
            &[("shard", &shard), ("kind", "group")],
            snapshot.forwarded_group_requests,
        );
    }
    per_shard(
        page,
        shards,
        "shardline_produced_records",
        Kind::Counter,
        "Records clients produced to partitions of this shard (appended and acknowledged).",
        |s| s.produced_records,
    );
    per_shard(
        page,
        shards,
        "shardline_produced_bytes",
        Kind::Counter,
        "Bytes of record batches clients produced to partitions of this shard (appended and acknowledged).",
        |s| s.produced_bytes,
    );
    per_shard(
        page,
        shards,
        "shardline_network_received_bytes",
        Kind::Counter,
        "Bytes read from Kafka connections accepted by this shard (inside TLS).",
        |s| s.net.bytes_received,
    );
    per_shard(
        page,
        shards,
        "shardline_network_sent_bytes",
        Kind::Counter,
        "Bytes written to Kafka connections accepted by this shard (inside TLS).",
        |s| s.net.bytes_sent,
    );
}

fn connections(page: &mut Exposition, shards: &[&ShardSnapshot]) {
    per_shard(
        page,
        shards,
        "shardline_connections_open",
        Kind::Gauge,
        "Kafka connections open.",
        |s| s.connections.open,
    );
    per_shard(
        page,
        shards,
        "shardline_connections_accepted",
        Kind::Counter,
        "Kafka connections accepted and served.",
        |s| s.connections.accepted,
    );
    per_shard(
        page,
        shards,
        "shardline_connections_refused",
        Kind::Counter,
        "Kafka connections closed on arrival: the shard served its share of --max-connections.",
        |s| s.connections.refused,
    );
    per_shard(
        page,
        shards,
        "shardline_connections_closed_idle",
        Kind::Counter,
        "Kafka connections closed after --connections-max-idle-ms without a request.",
        |s| s.connections.closed_idle,
    );
}

/// One per-shard family: name, kind, help and the value it reads.
type Family = (&'static str, Kind, &'static str, fn(&ShardSnapshot) -> u64);

/// Writes each of `families` with one sample per shard.
fn per_shard_families(page: &mut Exposition, shards: &[&ShardSnapshot], families: &[Family]) {
    for &(name, kind, help, value) in families {
        per_shard(page, shards, name, kind, help, value);
    }
}

fn mqtt(page: &mut Exposition, shards: &[&ShardSnapshot]) {
    let families: [Family; 10] = [
        (
            "shardline_mqtt_connections_open",
            Kind::Gauge,
            "MQTT connections open.",
            |s| s.mqtt.open,
        ),
        (
            "shardline_mqtt_connections_accepted",
            Kind::Counter,
            "MQTT connections accepted and served.",
            |s| s.mqtt.accepted,
        ),
        (
            "shardline_mqtt_connections_refused",
            Kind::Counter,
            "MQTT connections closed on arrival: the shard served its share of --max-connections.",
            |s| s.mqtt.refused,
        ),
        (
            "shardline_mqtt_published",
            Kind::Counter,
            "MQTT PUBLISHes and wills stored in the log by connections of this shard.",
            |s| s.mqtt.published,
        ),
        (
            "shardline_mqtt_append_rounds",
            Kind::Counter,
            "Append rounds of this shard's MQTT connections (one batch and durable wait per partition each).",
            |s| s.mqtt.append_rounds,
        ),
        (
            "shardline_mqtt_delivered",
            Kind::Counter,
            "PUBLISHes written to MQTT subscribers of this shard.",
            |s| s.mqtt.delivered,
        ),
        (
            "shardline_mqtt_subscribers_dropped",
            Kind::Counter,
            "MQTT subscribers disconnected because their delivery queue stayed full.",
            |s| s.mqtt.subscribers_dropped,
        ),
        (
            "shardline_mqtt_sessions_resumed",
            Kind::Counter,
            "Persistent MQTT sessions resumed by a CONNECT (session present).",
            |s| s.mqtt.sessions_resumed,
        ),
        (
            "shardline_mqtt_sessions_saved",
            Kind::Counter,
            "Saves of persistent MQTT sessions to __mqtt_sessions.",
            |s| s.mqtt.sessions_saved,
        ),
        (
            "shardline_mqtt_offline_messages_dropped",
            Kind::Counter,
            "Messages a resumed MQTT session was not sent: beyond its offline bound.",
            |s| s.mqtt.offline_dropped,
        ),
    ];
    per_shard_families(page, shards, &families);
}

fn cleaner(page: &mut Exposition, shards: &[&ShardSnapshot]) {
    let families: [Family; 4] = [
        (
            "shardline_log_cleaner_passes",
            Kind::Counter,
            "Cleaning passes of compacted partitions on this shard that rewrote segments.",
            |s| s.cleaned.passes,
        ),
        (
            "shardline_log_cleaner_segments_swapped",
            Kind::Counter,
            "Segments the log cleaner replaced by their cleaned copies.",
            |s| s.cleaned.segments_swapped,
        ),
        (
            "shardline_log_cleaner_bytes_removed",
            Kind::Counter,
            "Bytes the log cleaner removed from segments (superseded records and expired tombstones).",
            |s| s.cleaned.bytes_removed,
        ),
        (
            "shardline_log_cleaner_records_removed",
            Kind::Counter,
            "Records the log cleaner removed: superseded by a later record with their key, or tombstones past delete.retention.ms.",
            |s| s.cleaned.records_removed,
        ),
    ];
    per_shard_families(page, shards, &families);
}

fn fetch_sessions(page: &mut Exposition, shards: &[&ShardSnapshot]) {
    let families: [Family; 5] = [
        (
            "shardline_fetch_sessions_open",
            Kind::Gauge,
            "Incremental fetch sessions (KIP-227) held by this shard's connections.",
            |s| s.fetch_sessions.open,
        ),
        (
            "shardline_fetch_sessions_created",
            Kind::Counter,
            "Fetch sessions opened by full fetches on this shard.",
            |s| s.fetch_sessions.created,
        ),
        (
            "shardline_fetch_sessions_incremental",
            Kind::Counter,
            "Incremental fetches served from a session: the request named only what changed.",
            |s| s.fetch_sessions.incremental,
        ),
        (
            "shardline_fetch_sessions_evicted",
            Kind::Counter,
            "Fetch sessions dropped to make room (idle, a follower's need, a connection's bound) or grown past their bound.",
            |s| s.fetch_sessions.evicted,
        ),
        (
            "shardline_fetch_sessions_not_made",
            Kind::Counter,
            "Fetches that asked for a session and were answered without one (full table, too many partitions).",
            |s| s.fetch_sessions.not_made,
        ),
    ];
    per_shard_families(page, shards, &families);
}

fn cross_shard(page: &mut Exposition, shards: &[&ShardSnapshot]) {
    page.family(
        "shardline_cross_shard_messages",
        Kind::Counter,
        "Messages this shard sent to another shard (work for partitions or groups it owns; scrapes).",
    );
    for snapshot in shards {
        let shard = snapshot.shard.to_string();
        for (to, count) in snapshot.cross_shard_messages.iter().enumerate() {
            if to != snapshot.shard {
                page.sample(&[("shard", &shard), ("to_shard", &to.to_string())], *count);
            }
        }
    }
    per_shard_histogram(
        page,
        shards,
        "shardline_cross_shard_round_trip_seconds",
        "Time from sending work to another shard to its answer.",
        |s| s.cross_shard_round_trip.clone(),
    );
}

fn storage(page: &mut Exposition, shards: &[&ShardSnapshot]) {
    per_shard_histogram(
        page,
        shards,
        "shardline_log_fsync_seconds",
        "fdatasync of partition segment data while serving (its count is the number of fsyncs).",
        |s| HistogramSnapshot::of_syncs(&s.log),
    );
    per_shard(
        page,
        shards,
        "shardline_log_append_bytes",
        Kind::Counter,
        "Bytes of record batches written into partition segments (client produce, replication, group commits).",
        |s| s.log.append_bytes,
    );
    per_shard(
        page,
        shards,
        "shardline_log_read_bytes",
        Kind::Counter,
        "Bytes of record batches read from partition segments (consumers, followers, coordinator loads).",
        |s| s.log.read_bytes,
    );
    per_shard(
        page,
        shards,
        "shardline_metadata_applied_epoch",
        Kind::Gauge,
        "Epoch of the newest metadata image whose partitions this shard has opened.",
        |s| s.applied_epoch,
    );
}

fn partitions(page: &mut Exposition, shards: &[&ShardSnapshot]) {
    type Field = fn(&super::snapshot::PartitionSnapshot) -> u64;
    let families: [(&'static str, &str, Field); 7] = [
        (
            "shardline_partition_log_start_offset",
            "First offset of the partition's log on this node.",
            |p| u64::try_from(p.log_start).unwrap_or(0),
        ),
        (
            "shardline_partition_log_end_offset",
            "Offset the partition's next record gets on this node.",
            |p| u64::try_from(p.log_end).unwrap_or(0),
        ),
        (
            "shardline_partition_high_watermark",
            "Offset below which every in-sync replica has the partition's records (what consumers read).",
            |p| u64::try_from(p.high_watermark).unwrap_or(0),
        ),
        (
            "shardline_partition_last_stable_offset",
            "Offset below which read_committed consumers read: the first offset of the oldest open transaction, or the high watermark.",
            |p| u64::try_from(p.last_stable_offset).unwrap_or(0),
        ),
        (
            "shardline_partition_size_bytes",
            "Bytes of segment data of the partition on this node.",
            |p| p.size_bytes,
        ),
        (
            "shardline_partition_leader",
            "1 if this node leads the partition.",
            |p| u64::from(p.leader),
        ),
        (
            "shardline_partition_under_replicated",
            "1 if this node leads the partition and its in-sync replicas are fewer than its replicas.",
            |p| u64::from(p.under_replicated),
        ),
    ];
    for (name, help, field) in families {
        page.family(name, Kind::Gauge, help);
        for snapshot in shards {
            let shard = snapshot.shard.to_string();
            for partition in &snapshot.partitions {
                let index = partition.partition.to_string();
                let labels: [(&str, &str); 3] = [("topic", &partition.topic), ("partition", &index), ("shard", &shard)];
                page.sample(&labels, field(partition));
            }
        }
    }
}

fn groups(page: &mut Exposition, shards: &[&ShardSnapshot]) {
    // The high watermark of every partition held on this node, to join the
    // commits against (each partition is on one shard of a node).
    let watermarks: HashMap<(&str, i32), i64> = shards
        .iter()
        .flat_map(|s| s.partitions.iter())
        .map(|p| ((p.topic.as_str(), p.partition), p.high_watermark))
        .collect();
    let mut committed: Vec<_> = shards.iter().flat_map(|s| s.committed.iter()).collect();
    committed.sort_unstable_by(|a, b| (&a.group, &a.topic, a.partition).cmp(&(&b.group, &b.topic, b.partition)));
    page.family(
        "shardline_consumer_group_committed_offset",
        Kind::Gauge,
        "Offset a consumer group committed for a partition (on the node coordinating the group).",
    );
    for commit in &committed {
        let index = commit.partition.to_string();
        let labels: [(&str, &str); 3] = [
            ("group", &commit.group),
            ("topic", &commit.topic),
            ("partition", &index),
        ];
        page.sample_signed(&labels, commit.offset);
    }
    page.family(
        "shardline_consumer_group_lag",
        Kind::Gauge,
        "Records between a group's committed offset and the partition's high watermark (partitions held on this node).",
    );
    for commit in &committed {
        let Some(high_watermark) = watermarks.get(&(commit.topic.as_str(), commit.partition)) else {
            continue;
        };
        let index = commit.partition.to_string();
        let labels: [(&str, &str); 3] = [
            ("group", &commit.group),
            ("topic", &commit.topic),
            ("partition", &index),
        ];
        let lag = high_watermark.saturating_sub(commit.offset.max(0)).max(0);
        page.sample(&labels, u64::try_from(lag).unwrap_or(0));
    }
}

fn raft(page: &mut Exposition, gathered: &Gathered) {
    let raft = &gathered.raft;
    let index = |value: Option<u64>| value.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
    let gauges: [(&'static str, &str, i64); 5] = [
        (
            "shardline_raft_term",
            "Current term of the metadata Raft group.",
            index(Some(raft.term)),
        ),
        (
            "shardline_raft_leader",
            "Node id of the metadata group's leader, -1 if none is known.",
            index(raft.leader),
        ),
        (
            "shardline_raft_last_log_index",
            "Index of the last entry in this node's metadata log (-1: none).",
            index(raft.last_log_index),
        ),
        (
            "shardline_raft_commit_index",
            "Index of the last metadata entry this node knows committed (-1: none or not answered).",
            index(raft.commit_index),
        ),
        (
            "shardline_raft_applied_index",
            "Index of the last metadata entry applied to this node's image (= the image epoch).",
            index(raft.applied_index),
        ),
    ];
    for (name, help, value) in gauges {
        page.family(name, Kind::Gauge, help);
        page.sample_signed(&[], value);
    }
    page.family(
        "shardline_raft_apply_lag",
        Kind::Gauge,
        "Committed metadata entries not yet applied on this node (commit index - applied index).",
    );
    let lag = raft
        .commit_index
        .map_or(0, |commit| commit.saturating_sub(raft.applied_index.unwrap_or(0)));
    page.sample(&[], lag);
}

fn process(page: &mut Exposition, gathered: &Gathered) {
    let process = gathered.process;
    let gauges = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            process.resident_bytes,
        ),
        ("process_open_fds", "Number of open file descriptors.", process.open_fds),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            process.max_fds,
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(value) = value {
            page.family(name, Kind::Gauge, help);
            page.sample(&[], value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::{
        histogram::LatencyHistogram,
        probe::CleanerSnapshot,
        snapshot::{CommittedSnapshot, ConnectionSnapshot, MqttSnapshot, PartitionSnapshot},
        ProcessSnapshot, RaftSnapshot,
    };

    fn shard(id: usize) -> ShardSnapshot {
        let latency = LatencyHistogram::default();
        latency.record(Duration::from_millis(2));
        ShardSnapshot {
            shard: id,
            requests: vec![(0, 9, 3)],
            errors: vec![(Some(0), 6, 1), (None, 58, 2)],
            errors_left_out: 0,
            latencies: vec![(0, latency.snapshot())],
            requests_in_flight: 0,
            forwarded_partition_requests: 0,
            forwarded_group_requests: 0,
            produced_records: 30,
            produced_bytes: 3000,
            cross_shard_messages: vec![0, 4],
            cross_shard_round_trip: LatencyHistogram::default().snapshot(),
            connections: ConnectionSnapshot::default(),
            mqtt: MqttSnapshot::default(),
            cleaned: CleanerSnapshot::default(),
            fetch_sessions: crate::kafka::FetchSessionCounts::default(),
            net: shardline_net::NetStats::default(),
            log: shardline_log::thread_stats(),
            applied_epoch: 5,
            partitions: vec![PartitionSnapshot {
                topic: format!("t{id}"),
                partition: 0,
                log_start: 0,
                log_end: 30,
                high_watermark: 30,
                last_stable_offset: 30,
                size_bytes: 4096,
                leader: true,
                under_replicated: false,
            }],
            partitions_left_out: 2,
            committed: vec![CommittedSnapshot {
                group: "g".into(),
                topic: "t0".into(),
                partition: 0,
                offset: 25,
            }],
            committed_left_out: 0,
        }
    }

    fn gathered() -> Gathered {
        Gathered {
            shards: vec![(0, Some(shard(0))), (1, None)],
            raft: RaftSnapshot {
                term: 2,
                leader: Some(1),
                last_log_index: Some(9),
                commit_index: Some(9),
                applied_index: Some(8),
            },
            process: ProcessSnapshot {
                resident_bytes: Some(1 << 20),
                open_fds: Some(12),
                max_fds: None,
            },
            gather_time: Duration::from_millis(1),
        }
    }

    #[test]
    fn a_scrape_names_shards_apis_errors_and_joins_lag() {
        let mut left_out = LeftOut::new();
        let body = render(&gathered(), &mut left_out, Format::Prometheus);
        for expected in [
            "shardline_shard_up{shard=\"0\"} 1\n",
            "shardline_shard_up{shard=\"1\"} 0\n",
            "shardline_requests_total{shard=\"0\",api=\"Produce\",version=\"9\"} 3\n",
            "shardline_request_errors_total{shard=\"0\",api=\"Produce\",code=\"6\",error=\"NotLeaderOrFollower\"} 1\n",
            "shardline_request_errors_total{shard=\"0\",api=\"none\",code=\"58\",error=\"SaslAuthenticationFailed\"} 2\n",
            "shardline_request_latency_seconds_bucket{shard=\"0\",api=\"Produce\",le=\"0.0025\"} 1\n",
            "shardline_cross_shard_messages_total{shard=\"0\",to_shard=\"1\"} 4\n",
            "shardline_partition_log_end_offset{topic=\"t0\",partition=\"0\",shard=\"0\"} 30\n",
            "shardline_consumer_group_committed_offset{group=\"g\",topic=\"t0\",partition=\"0\"} 25\n",
            "shardline_consumer_group_lag{group=\"g\",topic=\"t0\",partition=\"0\"} 5\n",
            "shardline_raft_apply_lag 1\n",
            "shardline_raft_leader 1\n",
            "process_resident_memory_bytes 1048576\n",
            "shardline_metrics_series_left_out_total{family=\"partition\"} 2\n",
        ] {
            assert!(body.contains(expected), "missing {expected:?} in:\n{body}");
        }
        assert!(!body.contains("process_max_fds"), "an unread value is left out");
        assert!(!body.contains("to_shard=\"0\""), "no messages to itself");
        // The counter of what bounds left out adds up over scrapes.
        let again = render(&gathered(), &mut left_out, Format::OpenMetrics);
        assert!(again.contains("shardline_metrics_series_left_out_total{family=\"partition\"} 4\n"));
        assert!(again.ends_with("# EOF\n"));
        assert!(again.contains("# TYPE shardline_requests counter\n"));
    }

    #[test]
    fn every_family_appears_once() {
        let body = render(&gathered(), &mut LeftOut::new(), Format::Prometheus);
        let mut names: Vec<&str> = body
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split(' ').next())
            .collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a family is written once");
    }
}
