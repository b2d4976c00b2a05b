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

# The latency/throughput tool against a running broker.
bench *ARGS:
    cargo run --release -p shardline-bench --bin bench -- {{ARGS}}

# Partition log vs raw io_uring write + fdatasync on the same disk.
perf-log *ARGS:
    cargo run --release -p shardline-perf --bin log-bench -- {{ARGS}}

# All perf recipes.
perf: perf-log

# Inspect a partition directory.
log-dump DIR:
    cargo run --release -p shardline-tools --bin shardctl -- log dump {{DIR}}

log-verify DIR:
    cargo run --release -p shardline-tools --bin shardctl -- log verify {{DIR}}

# Long model run of the log (more cases than CI).
model CASES="20000":
    PROPTEST_CASES={{CASES}} cargo test --release -p shardline-log --test model
