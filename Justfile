# Convenience recipes. The README's two commands do not need `just`.

default:
    @just --list

# Build everything in release mode.
build:
    cargo build --workspace --release

# The whole test suite (same as the README command and CI).
test:
    bash scripts/test-all

# Run the engine with embedded defaults (single node, data in ./data).
run *ARGS:
    cargo run --release -p shardline-engine --bin engine -- {{ARGS}}

# Three nodes on this machine (release build, foreground, Ctrl-C stops all): Kafka on 127.0.0.1:9092, 9192, 9292 (shard k on +k),
# metadata Raft on 19092-19094, data in ./data/node-N, logs in ./data/node-N.log. ARGS go to every node.
cluster *ARGS:
    bash scripts/cluster-up {{ARGS}}

# The latency/throughput tool against a running broker.
bench *ARGS:
    cargo run --release -p shardline-bench --bin bench -- {{ARGS}}

# Partition log vs raw io_uring write + fdatasync on the same disk.
perf-log *ARGS:
    cargo run --release -p shardline-perf --bin log-bench -- {{ARGS}}

# All perf recipes.
perf: perf-log

# Engine and peer scenarios (perf/scripts/, see perf/README.md). Each builds the release binaries,
# waits for a quiet machine, runs engines and bench on 127.0.0.1 with fresh data under perf/out/,
# and writes bench JSON plus summary.md into perf/out/<scenario>/. PERF_RECORD=1 also copies the
# results into perf/baselines/<scenario>/.

# Produce throughput, 1 shard vs 2 shards (fsync never), with client and engine CPU shares.
perf-shards:
    bash perf/scripts/shards.sh

# Produce throughput by message size (100 B, 1 KiB, 10 KiB), 2 shards, fsync never.
perf-sizes:
    bash perf/scripts/sizes.sh

# Latency vs throughput at 10..100 % of each system's maximum (Shardline disk/tmpfs, Tansu if installed).
perf-curve:
    bash perf/scripts/curve.sh

# fsync always: maximum, half of it, fixed rates, against the disk's fdatasync probe in the same run.
perf-fsync:
    bash perf/scripts/fsync.sh

# Resident memory of an engine with 1,000 idle partitions.
perf-idle:
    bash perf/scripts/idle.sh

# Cost of a cross-shard hop (local vs remote partition), with and without spin-before-park.
perf-hop:
    bash perf/scripts/hop.sh

# Shardline (fsync never/always) vs Tansu 0.6.0 at fixed rates and at maximum; installs Tansu if missing.
perf-peers:
    bash perf/scripts/peers.sh

# Per core: broker confined to CPU 0, bench on CPU 1; CPU µs per message, latency at 1k/5k/20k/max,
# the loopback floor (floor-probe) and the disk's fdatasync in the same run; 2 shards vs 1 on one core.
perf-percore:
    bash perf/scripts/percore.sh

# Consume from hot data, broker on CPU 0 and one consumer on CPU 1, against one loopback TCP stream's
# own throughput (floor-probe stream) in the same run; Shardline 1 shard, fsync never.
perf-consume:
    bash perf/scripts/consume.sh

# Cost of the metrics endpoint: throughput and p99 with /metrics scraped every second vs not (target < 2 %).
perf-metrics:
    bash perf/scripts/metrics.sh

# What TLS costs: the same engine's SSL and PLAINTEXT listeners, throughput and p99 side by side.
perf-tls:
    bash perf/scripts/tls.sh

# The engine's MQTT listener against Debian's mosquitto, each confined to CPU 0, QoS 1 at 10k msg/s (issue 15).
perf-mqtt:
    bash perf/scripts/mqtt.sh

# What users see: librdkafka (confluent-kafka) open loop at 5k and 1k msg/s against unpinned engines
# (--shards 1, default, --shard-listeners shared) and Tansu-memory, interleaved, medians.
perf-users:
    bash perf/scripts/users.sh

# The loopback floor by hand: `just floor-probe serve --listen 127.0.0.1:19999` and, pinned elsewhere,
# `just floor-probe load --connect 127.0.0.1:19999 --rate 5000`.
floor-probe *ARGS:
    cargo run --release -p shardline-perf --bin floor-probe -- {{ARGS}}

# Install Tansu 0.6.0 with its memory (dynostore) and SQLite (libsql) stores into perf/out/peers (~25 min).
perf-install-peers:
    cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --force --root perf/out/peers --target-dir perf/out/tansu-target
    echo dynostore,libsql > perf/out/peers/tansu-features

# SVG charts into docs/plots/ from perf/baselines/ (PERF_PLOT_FROM=perf/out for the last runs).
perf-plots:
    bash perf/scripts/plots.sh

# Every scenario, then the charts (PERF_RECORD=1: record baselines and redraw docs/plots/).
perf-all:
    bash perf/scripts/all.sh

# Cluster failover times at default liveness settings (20 kill -9s) and the no-false-fencing load test, in release.
perf-failover:
    bash perf/scripts/failover.sh

# Inspect a partition directory.
log-dump DIR:
    cargo run --release -p shardline-tools --bin shardctl -- log dump {{DIR}}

log-verify DIR:
    cargo run --release -p shardline-tools --bin shardctl -- log verify {{DIR}}

# One fuzz target for SECONDS (coverage-guided, stable toolchain; `bash scripts/fuzz list` names the
# targets). New corpus entries go to target/fuzz/corpus/TARGET, crash inputs to target/fuzz/artifacts/TARGET.
fuzz TARGET SECONDS="300":
    bash scripts/fuzz run {{TARGET}} {{SECONDS}}

# Regenerate the committed fuzz seed corpora from real client traffic (runs the client integration tests).
fuzz-seeds:
    bash scripts/fuzz seeds

# Power cuts under a real engine on the lossy FUSE disk (CI runs 6; root and FUSE needed). SEED=0 picks one.
powercut CYCLES="50" SEED="0":
    if [ "{{SEED}}" != 0 ]; then export POWERCUT_SEED={{SEED}}; fi; POWERCUT_CYCLES={{CYCLES}} cargo test -p shardline-engine --test powercut -- --include-ignored --nocapture

# Seeded simulation of a cluster's replication (docs/reliability.md): SEEDS seeds from FIRST, in
# release; the first failure prints its seed, the faults it needs and the history's tail.
sim SEEDS="10000" FIRST="1":
    cargo run --release -p shardline-sim -- {{SEEDS}} {{FIRST}}

# Seeded model of a consumer group on the engine's group rules (docs/reliability.md): SEEDS seeds
# from FIRST, in release; the first failure prints its seed and the history's tail.
sim-groups SEEDS="100000" FIRST="1":
    cargo run --release -p shardline-sim -- groups {{SEEDS}} {{FIRST}}

# Long model run of the log (more cases than CI).
model CASES="20000":
    PROPTEST_CASES={{CASES}} cargo test --release -p shardline-log --test model
