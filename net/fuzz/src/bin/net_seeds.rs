//! Turns request frames captured from real clients (`engine
//! --capture-frames DIR`, see net/src/capture.rs) into seed inputs for every
//! net fuzz target, laid out as each target reads its input, plus the
//! record sets of the Produce requests for the log's fuzz targets.
//!
//! `net-seeds CAPTURE_DIR OUT_DIR` writes `OUT_DIR/<target>/<name>`. Run by
//! `scripts/fuzz seeds`, which then keeps only the seeds that add coverage.

use std::path::Path;

use bytes::Bytes;
use shardline_net::{ProduceRequest, RequestHeader, SUPPORTED_APIS};

/// Kafka API keys of the two hand-decoded requests.
const PRODUCE: i16 = 0;
const FETCH: i16 = 1;
/// Versions the `produce` and `fetch_request` targets pick from byte 0.
const PRODUCE_VERSION_MIN: i16 = 3;
const FETCH_VERSION_MIN: i16 = 4;
/// Largest seed written: big record sets add bytes, not coverage (nothing
/// here decodes records), and slow every execution down.
const SEED_BYTES_MAX: usize = 16 << 10;

/// Writes one seed (see `shardline_fuzz_support::write_seed`) unless it is
/// larger than [`SEED_BYTES_MAX`].
fn write_seed(out: &Path, target: &str, name: &str, contents: &[u8]) {
    if contents.len() <= SEED_BYTES_MAX {
        shardline_fuzz_support::write_seed(out, target, name, None, contents);
    }
}

fn with_prefix(prefix: &[u8], body: &[u8]) -> Vec<u8> {
    let mut seed = prefix.to_vec();
    seed.extend_from_slice(body);
    seed
}

fn split(out: &Path, name: &str, frame: &Bytes) {
    write_seed(out, "request_frame", name, frame);
    write_seed(out, "header", name, frame);
    let Ok((header, body)) = RequestHeader::decode(frame) else {
        return;
    };
    let Some(api_index) = SUPPORTED_APIS.iter().position(|(key, _, _)| *key == header.api_key) else {
        return;
    };
    let (_, version_min, version_max) = SUPPORTED_APIS[api_index];
    if !(version_min..=version_max).contains(&header.api_version) {
        return;
    }
    let version_selector = (header.api_version - version_min) as u8;
    write_seed(
        out,
        "control_plane",
        name,
        &with_prefix(&[api_index as u8, version_selector], &body),
    );
    match header.api_key {
        PRODUCE => {
            let selector = (header.api_version - PRODUCE_VERSION_MIN) as u8;
            write_seed(out, "produce", name, &with_prefix(&[selector], &body));
            let Ok(request) = ProduceRequest::decode(&body, header.api_version) else {
                return;
            };
            let record_sets = request
                .topics
                .iter()
                .flat_map(|topic| &topic.partitions)
                .filter_map(|partition| partition.records.as_ref());
            for (index, records) in record_sets.enumerate() {
                // Byte 0 is the log targets' flag byte: no CRC fix-up.
                write_seed(
                    out,
                    "record_batch",
                    &format!("{name}-{index}"),
                    &with_prefix(&[0], records),
                );
            }
        }
        FETCH => {
            let selector = (header.api_version - FETCH_VERSION_MIN) as u8;
            write_seed(out, "fetch_request", name, &with_prefix(&[selector], &body));
        }
        _ => {}
    }
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(capture), Some(out)) = (args.next(), args.next()) else {
        eprintln!("usage: net-seeds CAPTURE_DIR OUT_DIR");
        std::process::exit(2);
    };
    let mut frames = 0;
    for entry in std::fs::read_dir(&capture).expect("capture directory") {
        let entry = entry.expect("capture directory entry");
        let frame = Bytes::from(std::fs::read(entry.path()).expect("captured frame"));
        split(Path::new(&out), &entry.file_name().to_string_lossy(), &frame);
        frames += 1;
    }
    println!("net-seeds: {frames} captured frames split into seeds");
}
