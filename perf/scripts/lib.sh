# Shared helpers of the perf scenarios (sourced, not run). See perf/README.md.
#
# Every scenario script:
#   - builds what it needs (release) with perf_build,
#   - waits for a quiet machine (no rustc/cc1) with perf_wait_quiet,
#   - holds /tmp/perf-measuring while it measures (perf_batch_begin/end),
#   - starts brokers on 127.0.0.1 with a fresh data dir under perf/out/<scenario>/,
#   - runs bench with a bounded --warmup/--duration and samples the CPU time of
#     the bench and the broker from /proc/PID/stat while it runs,
#   - stops every process it started (by PID) when it ends, also on error/^C.
#
# Knobs (environment): PERF_DURATION (s, default 10), PERF_WARMUP (s, default 2),
# PERF_QUIET_WAIT_MAX (s, default 600), PERF_SKIP_BUILD=1, PERF_SKIP_QUIET=1, PERF_TANSU_BIN (a Tansu
# binary installed elsewhere, e.g. by another checkout's perf-install-peers).
#
# Confinement: a script that sets BROKER_CPUS (e.g. 0) gets every broker it starts confined to those
# CPUs (`taskset -c` at exec, then `taskset -a -p` over all its threads); LOAD_CPUS (e.g. 1) does the
# same for the load tools run_load starts. Unset: nothing is confined.

set -euo pipefail

PERF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PERF_OUT_ROOT="$PERF_ROOT/perf/out"
# PERF_BIN_DIR: where engine and bench are taken from (default target/release; e.g. a build of a
# given commit). perf-plot always comes from this checkout's target/release.
PERF_BIN_DIR="${PERF_BIN_DIR:-$PERF_ROOT/target/release}"
ENGINE_BIN="$PERF_BIN_DIR/engine"
BENCH_BIN="$PERF_BIN_DIR/bench"
PLOT_BIN="$PERF_ROOT/target/release/perf-plot"
FLOOR_BIN="$PERF_ROOT/target/release/floor-probe"
# PERF_TANSU_BIN: use a Tansu installed elsewhere (its install root, two levels up, holds the
# tansu-features marker); never installed into. Default: this checkout's perf/out/peers.
TANSU_BIN="${PERF_TANSU_BIN:-$PERF_OUT_ROOT/peers/bin/tansu}"
TANSU_ROOT="$(dirname "$(dirname "$TANSU_BIN")")"
TANSU_VERSION="0.6.0"
# Tansu's storage engines are cargo features, and its default build has none that works without a
# server: `dynostore` brings the memory store (memory://), `libsql` the SQLite file store (sqlite://).
TANSU_FEATURES="dynostore,libsql"
PERF_DURATION="${PERF_DURATION:-10}"
PERF_WARMUP="${PERF_WARMUP:-2}"
PERF_QUIET_WAIT_MAX="${PERF_QUIET_WAIT_MAX:-600}"
MEASURING_FLAG="/tmp/perf-measuring"
CORES="$(nproc)"
CLOCK_TICKS="$(getconf CLK_TCK)"

# PIDs this script started; perf_cleanup stops them.
PERF_PIDS=()

perf_log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

perf_cleanup() {
    local pid
    for pid in "${PERF_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${PERF_PIDS[@]}"; do
        perf_wait_exit "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
    done
    PERF_PIDS=()
    rm -f "$MEASURING_FLAG"
    # A run cut short leaves its broker's data (up to ~10 GB, maybe in /dev/shm): drop it.
    if [[ -n "${BROKER_DATA:-}" && "${PERF_KEEP_DATA:-0}" != 1 ]]; then rm -rf "$BROKER_DATA"; fi
}
trap perf_cleanup EXIT
trap 'exit 130' INT TERM

# perf_wait_exit PID SECONDS: 0 once PID is gone, 1 if it is still there after SECONDS.
perf_wait_exit() {
    local pid="$1" deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then return 1; fi
        sleep 0.1
    done
    wait "$pid" 2>/dev/null || true
    return 0
}

# Release build of the engine, bench and perf tools (once per script).
perf_build() {
    if [[ "${PERF_SKIP_BUILD:-0}" == 1 ]] || ! perf_measuring; then return; fi
    perf_log "building release binaries (engine, bench, perf)"
    (cd "$PERF_ROOT" && cargo build --release -p shardline-engine -p shardline-bench -p shardline-perf)
}

# Tansu 0.6.0 with TANSU_FEATURES into perf/out/peers (about 25 min on 2 cores, once). A binary
# installed without those features (no marker file naming them) is reinstalled.
perf_ensure_tansu() {
    if ! perf_measuring || perf_have_tansu; then return; fi
    if [[ -n "${PERF_TANSU_BIN:-}" ]]; then
        perf_log "PERF_TANSU_BIN=$PERF_TANSU_BIN is not a Tansu install with $TANSU_FEATURES; not installing over it"
        return 1
    fi
    perf_log "installing tansu $TANSU_VERSION ($TANSU_FEATURES) into $TANSU_ROOT (slow: ~25 min on 2 cores)"
    (cd "$PERF_ROOT" && cargo install tansu --version "$TANSU_VERSION" --locked --features "$TANSU_FEATURES" --force \
        --root perf/out/peers --target-dir perf/out/tansu-target)
    echo "$TANSU_FEATURES" >"$TANSU_ROOT/tansu-features"
}

# perf_have_tansu: is a usable Tansu there? With PERF_TANSU_BIN, an executable is enough (whoever
# set it vouches for its features); otherwise the install must carry the tansu-features marker.
perf_have_tansu() {
    if [[ -n "${PERF_TANSU_BIN:-}" ]]; then [[ -x "$TANSU_BIN" ]]; return; fi
    [[ -x "$TANSU_BIN" && "$(cat "$TANSU_ROOT/tansu-features" 2>/dev/null)" == "$TANSU_FEATURES" ]]
}

# PERF_PYTHON: the interpreter of the project's .venv, with the real Kafka clients the engine's tests
# use (engine/tests/python/requirements.txt: kafka-python, confluent-kafka); perf_ensure_python
# creates the venv as scripts/test-all does when they are missing. Set PERF_PYTHON to use another.
PERF_PYTHON="${PERF_PYTHON:-$PERF_ROOT/.venv/bin/python}"
perf_ensure_python() {
    if ! perf_measuring || "$PERF_PYTHON" -c "import kafka, confluent_kafka" 2>/dev/null; then return; fi
    perf_log "installing the Python Kafka clients (engine/tests/python/requirements.txt) into .venv"
    python3 -m venv "$PERF_ROOT/.venv"
    PERF_PYTHON="$PERF_ROOT/.venv/bin/python"
    "$PERF_PYTHON" -m pip install -q --disable-pip-version-check -r "$PERF_ROOT/engine/tests/python/requirements.txt"
}

# Is a compiler running? rustc, cc1 (C), clippy-driver (cargo clippy runs no rustc process).
perf_compiler_running() {
    pgrep -x rustc >/dev/null || pgrep -x cc1 >/dev/null || pgrep -x clippy-driver >/dev/null
}

# Waits until no compiler runs (perf_compiler_running), polling every 15 s, at most
# PERF_QUIET_WAIT_MAX s. Sets PERF_QUIET=yes|no for the summary.
perf_wait_quiet() {
    PERF_QUIET=yes
    if [[ "${PERF_SKIP_QUIET:-0}" == 1 ]]; then PERF_QUIET=unchecked; return; fi
    local deadline=$((SECONDS + PERF_QUIET_WAIT_MAX))
    while perf_compiler_running; do
        if ((SECONDS >= deadline)); then
            perf_log "WARNING: a compiler is still running after ${PERF_QUIET_WAIT_MAX}s; measuring anyway"
            PERF_QUIET=no
            return
        fi
        perf_log "a compiler is running (rustc/cc1/clippy-driver); waiting 15 s for a quiet machine"
        sleep 15
    done
}

# A measurement batch: quiet machine first, then hold the flag file. Keep a batch <= 10 min.
perf_batch_begin() {
    perf_wait_quiet
    touch "$MEASURING_FLAG"
    PERF_BATCH_STARTED=$SECONDS
    perf_log "measuring (quiet=$PERF_QUIET, load average $(cut -d' ' -f1-3 /proc/loadavg))"
}

perf_batch_end() {
    rm -f "$MEASURING_FLAG"
    perf_log "batch done in $((SECONDS - PERF_BATCH_STARTED)) s"
    # A compile that started during the batch makes its figures suspect: say so.
    if perf_compiler_running; then
        perf_log "WARNING: a compiler was running when the batch ended"
        PERF_QUIET=no
    fi
}

# perf_measuring: true unless PERF_SUMMARY_ONLY=1 (redraw a scenario's summary.md from results
# already there, e.g. a baseline: PERF_SUMMARY_ONLY=1 PERF_SUMMARY_DIR=perf/baselines/NAME).
perf_measuring() {
    [[ "${PERF_SUMMARY_ONLY:-0}" != 1 ]]
}

# perf_scenario NAME: sets OUT (perf/out/NAME, emptied). With PERF_SUMMARY_ONLY=1, OUT is
# PERF_SUMMARY_DIR (default perf/baselines/NAME), left as it is but for the CPU shares, which are
# computed again from the samples (*.cpu.tsv).
perf_scenario() {
    PERF_SCENARIO="$1"
    if ! perf_measuring; then
        OUT="${PERF_SUMMARY_DIR:-$PERF_ROOT/perf/baselines/$1}"
        perf_recompute_cpu
        return
    fi
    OUT="$PERF_OUT_ROOT/$1"
    # perf/out also holds the peer brokers' install (perf/out/peers) and other builds: never empty those.
    case "$1" in
        peers | tansu-target | target-head | src-head | plots)
            perf_log "refusing to use perf/out/$1 as a scenario directory"
            exit 2
            ;;
    esac
    rm -rf "$OUT"
    mkdir -p "$OUT"
}

# perf_recompute_cpu: every $OUT/**/*.cpu.json again from its *.cpu.tsv (keeping compiler_seen).
perf_recompute_cpu() {
    local tsv name compiler
    while IFS= read -r tsv; do
        name="${tsv#"$OUT/"}"
        name="${name%.cpu.tsv}"
        compiler=0
        if [[ "$(jq -r '.compiler_seen' "$OUT/$name.cpu.json" 2>/dev/null)" == true ]]; then compiler=1; fi
        perf_cpu_window "$name" "$compiler"
    done < <(find "$OUT" -name '*.cpu.tsv' | sort)
}

# perf_free_port [COUNT]: the first of COUNT consecutive TCP ports (default 1) that no socket on this
# machine uses (any state: the engine binds its shard ports before it listens on them), from 20000 up
# to the start of the kernel's ephemeral range, so no client connection takes one in the meantime.
# Gives up after 1000 tries.
perf_free_port() {
    local count="${1:-1}" ephemeral_low port i free attempt
    read -r ephemeral_low _ </proc/sys/net/ipv4/ip_local_port_range
    if ((ephemeral_low - 20000 <= count)); then ephemeral_low=40000; fi
    for ((attempt = 0; attempt < 1000; attempt++)); do
        port=$((20000 + RANDOM % (ephemeral_low - 20000 - count)))
        free=1
        for ((i = 0; i < count; i++)); do
            if ss -Htan "sport = :$((port + i))" | grep -q .; then
                free=0
                break
            fi
        done
        if ((free == 1)); then
            echo "$port"
            return
        fi
    done
    perf_log "no run of $count free ports found"
    return 1
}

# perf_cpu_list_count LIST: how many CPUs a list such as 0-3 or 0,2,5-6 names.
perf_cpu_list_count() {
    local count=0 part parts
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ "$part" == *-* ]]; then count=$((count + ${part#*-} - ${part%-*} + 1)); else count=$((count + 1)); fi
    done
    echo "$count"
}

# perf_engine_ports ENGINE_FLAGS...: "SHARDS LISTENING" for an engine started with these flags: the
# shards it runs (--shards N, else the CPUs of --cpus, else one per online CPU; engine/src/config.rs),
# and how many Kafka ports it listens on (one per shard, or 1 with --shard-listeners shared).
perf_engine_ports() {
    local shards="" cpus="" listeners=own
    while (($# > 0)); do
        case "$1" in
            --shards) shards="${2:-}" ;;
            --cpus) cpus="${2:-}" ;;
            --shard-listeners) listeners="${2:-}" ;;
        esac
        shift
    done
    if [[ -z "$shards" && -n "$cpus" ]]; then shards="$(perf_cpu_list_count "$cpus")"; fi
    shards="${shards:-$CORES}"
    if [[ "$listeners" == shared ]]; then echo "$shards 1"; else echo "$shards $shards"; fi
}

# perf_wait_listening PORT PID SECONDS: 0 once something listens on PORT, 1 if PID died or time ran out.
perf_wait_listening() {
    local port="$1" pid="$2" deadline=$((SECONDS + $3))
    while ! ss -Htln "sport = :$port" | grep -q .; do
        if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then return 1; fi
        sleep 0.1
    done
}

# perf_wait_port_closed PORT: until nothing listens on PORT (after a stop), at most 10 s.
perf_wait_port_closed() {
    local port="$1" deadline=$((SECONDS + 10))
    while ss -Htln "sport = :$port" | grep -q . && ((SECONDS < deadline)); do sleep 0.1; done
}

# KiB of dirty plus in-writeback page cache (/proc/meminfo).
perf_dirty_kib() {
    awk '/^(Dirty|Writeback):/ { kib += $2 } END { print kib + 0 }' /proc/meminfo
}

# perf_settle: before a broker starts, wait (at most 20 s) until the kernel holds under 256 MiB of
# dirty or in-writeback pages, so one run's writeback does not land in the next run's window; then,
# where allowed (root), drop the clean page cache, so every run allocates pages from free memory
# instead of reclaiming the previous runs' cache (measured: without it the same 1-shard tmpfs run
# gave 0.53-1.04 M msg/s, with it 1.09-1.63 M).
perf_settle() {
    local deadline=$((SECONDS + 20)) pending
    while :; do
        pending="$(perf_dirty_kib)"
        if ((pending < 262144 || SECONDS >= deadline)); then break; fi
        sleep 0.5
    done
    if [[ -w /proc/sys/vm/drop_caches ]]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
    fi
}

# perf_media_root MEDIUM: the PERF_DATA_ROOT for "disk" (empty: under perf/out) or "tmpfs"
# (/dev/shm/shardline-perf: no disk below the log, so a run measures CPU, not writeback).
perf_media_root() {
    case "$1" in
        disk) echo "" ;;
        tmpfs) echo "/dev/shm/shardline-perf" ;;
        *)
            perf_log "unknown medium $1 (disk or tmpfs)"
            return 1
            ;;
    esac
}

# perf_data_dir TAG: a fresh, empty broker data directory: $OUT/data-TAG, or, with PERF_DATA_ROOT
# set (e.g. /dev/shm/shardline-perf for a tmpfs), PERF_DATA_ROOT/<scenario>/data-TAG.
perf_data_dir() {
    local dir="$OUT/data-$1"
    if [[ -n "${PERF_DATA_ROOT:-}" ]]; then dir="$PERF_DATA_ROOT/$PERF_SCENARIO/data-$1"; fi
    rm -rf "$dir"
    mkdir -p "$dir"
    echo "$dir"
}

# broker_launch TAG LOG PORT LISTENING COMMAND...: runs COMMAND in the background as the broker
# (BROKER_PID), output in LOG; under `taskset -c $BROKER_CPUS` when BROKER_CPUS is set. Waits (20 s at
# most) until something listens on each of the LISTENING ports from PORT on, then confines every
# thread (perf_confine TAG). Returns 1, showing the log's tail, if it does not come up.
broker_launch() {
    local tag="$1" log="$2" port="$3" listening="$4" i
    shift 4
    if [[ -n "${BROKER_CPUS:-}" ]]; then set -- taskset -c "$BROKER_CPUS" "$@"; fi
    "$@" >"$log" 2>&1 &
    BROKER_PID=$!
    PERF_PIDS+=("$BROKER_PID")
    for ((i = 0; i < listening; i++)); do
        if ! perf_wait_listening "$((port + i))" "$BROKER_PID" 20; then
            perf_log "$tag: broker did not start (nothing listens on port $((port + i))); ${log##*/}:"
            tail -20 "$log" >&2
            return 1
        fi
    done
    perf_confine "$tag"
}

# perf_confine TAG: with BROKER_CPUS set, `taskset -a -p -c $BROKER_CPUS` over every thread of the
# broker (threads started after exec inherit the exec's affinity, but a thread that set its own is
# moved back here), then lists each thread's allowed CPUs in $OUT/TAG.affinity.txt and warns about
# any thread not confined (e.g. io_uring workers, which refuse affinity changes). Call it again after
# a run to catch threads started during the load. Without BROKER_CPUS it does nothing.
perf_confine() {
    local tag="$1" file="$OUT/$1.affinity.txt" task allowed loose=0
    if [[ -z "${BROKER_CPUS:-}" ]] || ! kill -0 "$BROKER_PID" 2>/dev/null; then return 0; fi
    taskset -a -p -c "$BROKER_CPUS" "$BROKER_PID" >/dev/null 2>&1 || true
    echo "# $(date -u +%H:%M:%S) broker $BROKER_PID, wanted CPUs $BROKER_CPUS: thread, name, allowed CPUs" >>"$file"
    for task in /proc/"$BROKER_PID"/task/*; do
        allowed="$(awk '/^Cpus_allowed_list:/ { print $2 }' "$task/status" 2>/dev/null)" || continue
        printf '%s\t%s\t%s\n' "${task##*/}" "$(cat "$task/comm" 2>/dev/null)" "$allowed" >>"$file"
        if [[ -n "$allowed" && "$allowed" != "$BROKER_CPUS" ]]; then loose=$((loose + 1)); fi
    done
    if ((loose > 0)); then perf_log "WARNING: $tag: $loose thread(s) not confined to CPU $BROKER_CPUS (see $file)"; fi
}

# engine_start TAG ENGINE_FLAGS...: starts the engine on a run of free ports (one per shard: shard k
# listens on BROKER_PORT + k) with a fresh --data-dir $OUT/data-TAG, log in $OUT/TAG.engine.log, and
# its HTTP endpoint (/metrics) on a free port BROKER_HTTP_PORT unless the flags name --http-listen.
# Sets BROKER_PID, BROKER_PORT, BROKER_DATA, BROKER_HTTP_PORT. The flags must not contain --listen or
# --data-dir.
engine_start() {
    local tag="$1" shards listening http=()
    shift
    perf_settle
    read -r shards listening < <(perf_engine_ports "$@")
    BROKER_PORT="$(perf_free_port "$shards")"
    BROKER_DATA="$(perf_data_dir "$tag")"
    BROKER_HTTP_PORT=""
    if [[ " $* " != *" --http-listen "* ]]; then
        BROKER_HTTP_PORT="$(perf_free_port)"
        # Not one of the Kafka ports, which are free until the engine binds them.
        while ((BROKER_HTTP_PORT >= BROKER_PORT && BROKER_HTTP_PORT < BROKER_PORT + shards)); do
            BROKER_HTTP_PORT="$(perf_free_port)"
        done
        http=(--http-listen "127.0.0.1:$BROKER_HTTP_PORT")
    fi
    broker_launch "$tag" "$OUT/$tag.engine.log" "$BROKER_PORT" "$listening" \
        env RUST_LOG="${ENGINE_RUST_LOG:-info}" "$ENGINE_BIN" --listen "127.0.0.1:$BROKER_PORT" \
        --data-dir "$BROKER_DATA" "${http[@]}" "$@" || return 1
    # The listeners are up; let the metadata group elect itself before the bench asks for topics.
    sleep 1
}

# tansu_start TAG [memory|sqlite]: Tansu on a free 127.0.0.1 port, log in $OUT/TAG.tansu.log. The
# memory store keeps everything in the process (no disk); the SQLite store writes
# $OUT/data-TAG/tansu.db (Tansu opens it in WAL mode with synchronous=normal: commits are not
# fsynced, only WAL checkpoints are). Sets BROKER_PID, BROKER_PORT, BROKER_DATA.
# Flags as `tansu broker --help` (0.6.0) lists them.
tansu_start() {
    local tag="$1" store="${2:-memory}" storage
    perf_settle
    BROKER_PORT="$(perf_free_port)"
    BROKER_DATA="$(perf_data_dir "$tag")"
    case "$store" in
        memory) storage="memory://tansu/" ;;
        # Relative to the working directory, which is the data directory.
        sqlite) storage="sqlite://tansu.db" ;;
        *)
            perf_log "unknown tansu store $store"
            return 1
            ;;
    esac
    broker_launch "$tag" "$OUT/$tag.tansu.log" "$BROKER_PORT" 1 \
        env -C "$BROKER_DATA" "$TANSU_BIN" broker \
        --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
        --storage-engine "$storage" || return 1
    sleep 1
}

# floor_start TAG: the loopback floor's server (`floor-probe serve`, 1 KiB requests, 16 B replies,
# one blocking thread) on a free port, as the broker (BROKER_PID, BROKER_PORT; confined like one),
# log in $OUT/TAG.floor.log. run_floor measures against it.
floor_start() {
    local tag="$1"
    BROKER_PORT="$(perf_free_port)"
    BROKER_DATA=""
    broker_launch "$tag" "$OUT/$tag.floor.log" "$BROKER_PORT" 1 \
        "$FLOOR_BIN" serve --listen "127.0.0.1:$BROKER_PORT" --request-bytes 1024 || return 1
}

# run_floor NAME RATE: `floor-probe load` at RATE requests/s against the floor_start server, with the
# bench's warm-up and duration; result and CPU samples as run_bench writes them.
run_floor() {
    local name="$1" rate="$2"
    run_load "$name" "$FLOOR_BIN" load --connect "127.0.0.1:$BROKER_PORT" --rate "$rate" --request-bytes 1024 \
        --warmup-s "$PERF_WARMUP" --duration-s "$PERF_DURATION" --json "$OUT/$name.json"
}

# broker_stop: SIGTERM the broker started last, SIGKILL after 10 s; waits for its port to close.
broker_stop() {
    if kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        perf_wait_exit "$BROKER_PID" 10 || { kill -KILL "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; }
    fi
    local remaining=() pid
    for pid in "${PERF_PIDS[@]}"; do
        if [[ "$pid" != "$BROKER_PID" ]]; then remaining+=("$pid"); fi
    done
    PERF_PIDS=("${remaining[@]+"${remaining[@]}"}")
    perf_wait_port_closed "$BROKER_PORT"
    # A run at full speed writes ~10 GB: drop the data unless asked to keep it.
    if [[ -n "${BROKER_DATA:-}" && "${PERF_KEEP_DATA:-0}" != 1 ]]; then rm -rf "$BROKER_DATA"; fi
}

# utime + stime of PID in clock ticks (fields 14 and 15 of /proc/PID/stat), or nothing if it is gone.
perf_cpu_ticks() {
    local stat fields
    { stat="$(<"/proc/$1/stat")"; } 2>/dev/null || return 0
    # The command name (field 2) is in parentheses and may hold spaces: cut after the last ')'.
    # Then the state (field 3 of the file) is word 0, so utime and stime are words 11 and 12.
    read -ra fields <<<"${stat##*) }"
    echo $((${fields[11]:-0} + ${fields[12]:-0}))
}

# Busy and total CPU ticks of the whole machine (first line of /proc/stat; idle and iowait are
# not busy), tab-separated. total - busy = idle + iowait, which is what perf_cpu_window uses.
perf_machine_ticks() {
    local label user nice system idle iowait irq softirq steal rest
    read -r label user nice system idle iowait irq softirq steal rest </proc/stat
    local busy=$((user + nice + system + irq + softirq + steal))
    printf '%s\t%s' "$busy" $((busy + idle + iowait))
}

# run_bench NAME BENCH_FLAGS...: bench against 127.0.0.1:$BROKER_PORT, JSON in $OUT/NAME.json,
# stdout/stderr in $OUT/NAME.txt, CPU samples in $OUT/NAME.cpu.tsv and the CPU shares over the
# measured window in $OUT/NAME.cpu.json (see run_load). NAME may hold one directory level
# (series/point). Returns bench's exit code.
run_bench() {
    local name="$1"
    shift
    # No --quiet: the progress line (one a second on stderr) tells the sampler the phase.
    run_load "$name" "$BENCH_BIN" --brokers "127.0.0.1:$BROKER_PORT" --warmup "${PERF_WARMUP}s" \
        --duration "${PERF_DURATION}s" --json "$OUT/$name.json" "$@"
}

# run_load NAME COMMAND...: runs a load tool that prints bench's progress lines ("[   3.0s] measuring
# | ...") and writes the bench JSON fields the harness reads to $OUT/NAME.json (bench, floor-probe,
# librdkafka_latency.py), under `taskset -c $LOAD_CPUS` when LOAD_CPUS is set; its stdout/stderr go to
# $OUT/NAME.txt. While it runs, samples its CPU time and the broker's (BROKER_PID) into
# $OUT/NAME.cpu.tsv; the shares over the measured window go to $OUT/NAME.cpu.json ("bench" there is
# the load tool). RUN_BENCH_HOOK, if set, is called as HOOK NAME LOAD_PID ELAPSED_MS PHASE with every
# sample. Returns the tool's exit code.
run_load() {
    local name="$1"
    shift
    local json="$OUT/$name.json" started bench_pid t ticks_bench ticks_broker phase last status=0 compiler=0
    mkdir -p "$(dirname "$json")"
    rm -f "$json"
    if [[ -n "${LOAD_CPUS:-}" ]]; then set -- taskset -c "$LOAD_CPUS" "$@"; fi
    started="$(date +%s%N)"
    "$@" >"$OUT/$name.txt" 2>&1 &
    bench_pid=$!
    PERF_PIDS+=("$bench_pid")
    printf 't_ms\tphase\tbench_ticks\tbroker_ticks\tmachine_busy_ticks\tmachine_total_ticks\tdirty_writeback_kib\n' \
        >"$OUT/$name.cpu.tsv"
    while kill -0 "$bench_pid" 2>/dev/null; do
        t=$((($(date +%s%N) - started) / 1000000))
        ticks_bench="$(perf_cpu_ticks "$bench_pid")"
        ticks_broker="$(perf_cpu_ticks "$BROKER_PID")"
        last="$(tail -n 1 "$OUT/$name.txt" 2>/dev/null || true)"
        case "$last" in
            *"] warm-up"*) phase=warmup ;;
            *"] measuring"*) phase=measuring ;;
            *"] draining"*) phase=draining ;;
            *) phase=other ;;
        esac
        if [[ -n "$ticks_bench" ]]; then
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$phase" "$ticks_bench" "${ticks_broker:-0}" "$(perf_machine_ticks)" \
                "$(perf_dirty_kib)" >>"$OUT/$name.cpu.tsv"
        fi
        if [[ -n "${RUN_BENCH_HOOK:-}" ]]; then "$RUN_BENCH_HOOK" "$name" "$bench_pid" "$t" "$phase"; fi
        if perf_compiler_running; then compiler=1; fi
        sleep 0.5
    done
    wait "$bench_pid" || status=$?
    local remaining=() pid
    for pid in "${PERF_PIDS[@]}"; do
        if [[ "$pid" != "$bench_pid" ]]; then remaining+=("$pid"); fi
    done
    PERF_PIDS=("${remaining[@]+"${remaining[@]}"}")
    perf_cpu_window "$name" "$compiler"
    if ((compiler == 1)); then
        perf_log "WARNING: a compiler ran during run $name: its figures are suspect"
        PERF_QUIET=no
    fi
    if ((status != 0)); then
        perf_log "run $name exited $status: $(tail -n 2 "$OUT/$name.txt" | tr '\n' ' ')"
    fi
    return "$status"
}

# CPU shares over the measured window: from the first to the last sample taken while the bench's
# progress line said "measuring" (so an --fsync-probe or the drain is not counted).
# bench_share / broker_share = that process's CPU seconds / wall seconds / cores;
# machine_busy_share = 1 - (idle + iowait ticks of /proc/stat) / (wall x HZ x cores): the whole
# machine, every process and softirqs too (the busy fields of /proc/stat are sampled at the tick
# and under-count bursty loads, the idle fields are exact);
# compiler_seen = a compiler process ran at some sample of the run (second argument 1);
# dirty_writeback_mib_max = the most dirty + in-writeback page cache seen in the window.
perf_cpu_window() {
    awk -v hz="$CLOCK_TICKS" -v cores="$CORES" -v compiler="${2:-0}" -F'\t' '
        NR > 1 && $2 == "measuring" {
            if (!seen) { t0 = $1; b0 = $3; k0 = $4; m0 = $5; a0 = $6; seen = 1 }
            t1 = $1; b1 = $3; k1 = $4; m1 = $5; a1 = $6
            if ($7 > dirty) { dirty = $7 }
        }
        END {
            wall = (t1 - t0) / 1000.0
            seen_compiler = compiler == 1 ? "true" : "false"
            # Idle (+ iowait) ticks of /proc/stat are exact under NO_HZ; its busy ticks are sampled at
            # the tick and miss short bursts, so busy = wall x cores - idle, not the busy fields.
            busy = 1 - ((a1 - m1) - (a0 - m0)) / (wall * hz * cores)
            if (busy < 0) { busy = 0 }
            if (busy > 1) { busy = 1 }
            if (!seen || wall <= 0) { printf "{\"window_s\": null, \"compiler_seen\": %s}\n", seen_compiler; exit }
            printf "{\"compiler_seen\": %s, \"window_s\": %.2f, \"cores\": %d, \"bench_cpu_s\": %.2f, \"broker_cpu_s\": %.2f, \"bench_share\": %.3f, \"broker_share\": %.3f, \"machine_busy_share\": %.3f, \"dirty_writeback_mib_max\": %d}\n",
                seen_compiler, wall, cores, (b1 - b0) / hz, (k1 - k0) / hz, (b1 - b0) / hz / wall / cores, (k1 - k0) / hz / wall / cores, busy, dirty / 1024
        }' "$OUT/$1.cpu.tsv" >"$OUT/$1.cpu.json"
}

# The machine stamp of a bench JSON, for summaries.
perf_machine_of() {
    jq -r '"\(.host.hostname) | \(.host.cpu_model) x\(.host.cores) | kernel \(.host.kernel)"' "$1"
}

# UTC time a bench JSON was started.
perf_started_of() {
    jq -r '(.started_at_unix_ms / 1000 | floor | todate)' "$1"
}

# perf_row NAME [LABEL]: a markdown table row of the publish side of $OUT/NAME.json plus CPU shares:
# | label | offered | msg/s | MB/s | p50 | p99 | p99.9 | max | send-delay p99 | msg/request | bench CPU | broker CPU |
# machine busy |
perf_row() {
    local name="$1" label="${2:-$1}" json="$OUT/$1.json" cpu="$OUT/$1.cpu.json"
    if [[ ! -s "$json" ]]; then
        printf '| %s | failed: %s |||||||||||| \n' "$label" "$(tail -1 "$OUT/$name.txt" 2>/dev/null | tr '|' '/')"
        return
    fi
    jq -r --arg run "$label" --slurpfile cpu "$cpu" '
        def ms: if . == null then "-" else (. * 1000 | round / 1000 | tostring) end;
        def pct: if . == null then "-" else ((. * 1000 | round) / 10 | tostring) + " %" end;
        "| \($run)\(if $cpu[0].compiler_seen then " (compiler running!)" else "" end) | \(if .flags.rate == 0 then "max" else (.flags.rate | tostring) end) | \(.produce.messages_per_s | round) | \(.produce.mb_per_s * 100 | round / 100) | \(.latency_ms.publish.p50_ms | ms) | \(.latency_ms.publish.p99_ms | ms) | \(.latency_ms.publish.p99_9_ms | ms) | \(.latency_ms.publish.max_ms | ms) | \(.latency_ms.send_delay.p99_ms | ms) | \(if (.produce.requests // 0) > 0 then (.produce.messages_acknowledged / .produce.requests * 10 | round / 10) else "-" end) | \($cpu[0].bench_share | pct) | \($cpu[0].broker_share | pct) | \($cpu[0].machine_busy_share | pct) |"
    ' "$json"
}

perf_table_header() {
    echo "| run | offered msg/s | msg/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms | send-delay p99 ms | msg/request | bench CPU | broker CPU | machine busy |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
}

# perf_summary_head TITLE COMMAND [bench|none]: the top of $OUT/summary.md (date, machine, quiet
# check, and the bench window unless the third argument is "none").
perf_summary_head() {
    local first runs compiler
    first="$(find "$OUT" -path "$OUT/data-*" -prune -o -name '*.json' ! -name '*.cpu.json' -print | sort | head -n 1)"
    runs="$(find "$OUT" -path "$OUT/data-*" -prune -o -name '*.json' ! -name '*.cpu.json' -print0 | xargs -0 -r cat |
        jq -s -r '[.[] | .started_at_unix_ms | select(. != null)] | if length == 0 then "-" else
            "\(length) bench runs started \(min / 1000 | floor | todate) .. \(max / 1000 | floor | todate)" end')"
    compiler="$(find "$OUT" -name '*.cpu.json' -print0 | xargs -0 -r cat | jq -s -r \
        'if length == 0 then "-" elif any(.[]; .compiler_seen == true) then "no (see the runs marked \"compiler running!\")" else "yes (checked before each batch and every 0.5 s of every run)" end')"
    {
        echo "# $1"
        echo
        echo "- recipe: \`$2\`"
        echo "- runs: $runs"
        echo "- summary written: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        if [[ -n "$first" ]]; then echo "- machine (bench stamp): $(perf_machine_of "$first")"; fi
        echo "- compiler-free while measuring: $compiler"
        if [[ "${3:-bench}" == bench ]]; then
            echo "- bench window: $(jq -r '"\(.flags.warmup_s) s warm-up + \(.flags.duration_s) s measured"' "$first"); CPU shares = (utime+stime)/wall/${CORES} cores over the measured window; machine busy = 1 - idle/(wall x cores) from /proc/stat"
        fi
        echo
    } >"$OUT/summary.md"
}

# perf_record: copy the scenario's results (bench JSON, CPU files, bench output, summary; not the
# data directories or broker logs) to perf/baselines/<scenario>/, replacing what was there.
perf_record() {
    local dest="$PERF_ROOT/perf/baselines/$PERF_SCENARIO"
    rm -rf "$dest"
    mkdir -p "$dest"
    (cd "$OUT" && find . -path './data-*' -prune -o -type f \( -name '*.json' -o -name '*.tsv' -o -name '*.txt' \
        -o -name 'summary.md' \) -print0 | xargs -0 -r cp --parents -t "$dest")
    perf_log "recorded $OUT into $dest"
}

# perf_finish: print the summary; with PERF_RECORD=1 also record it as the baseline.
perf_finish() {
    cat "$OUT/summary.md"
    if perf_measuring && [[ "${PERF_RECORD:-0}" == 1 ]]; then perf_record; fi
}

# The two workloads the scenarios use (8 partitions, 2 producers, 64 KiB batches; the message size
# is given by each scenario, 1 KiB unless it sweeps sizes): THROUGHPUT_FLAGS sends as fast as the
# in-flight window allows (--rate 0) with a 2 ms linger; LATENCY_FLAGS is the same without a rate
# (the scenario sets it) and with the bench's default 1 ms linger.
PERF_PRODUCERS="${PERF_PRODUCERS:-2}"
PERF_PARTITIONS="${PERF_PARTITIONS:-8}"
THROUGHPUT_FLAGS=(--partitions "$PERF_PARTITIONS" --producers "$PERF_PRODUCERS" --batch-bytes 65536 --linger-ms 2 --rate 0)
LATENCY_FLAGS=(--partitions "$PERF_PARTITIONS" --producers "$PERF_PRODUCERS" --batch-bytes 65536 --linger-ms 1)

# perf_json_field NAME JQ_PATH: one value of $OUT/NAME.json (empty if the run failed).
perf_json_field() {
    if [[ -s "$OUT/$1.json" ]]; then jq -r "$2" "$OUT/$1.json"; fi
}

# jq definitions the summaries share: `median` of an array (nulls left out; null when empty);
# `r(D)`, a number rounded to D decimals as text ("-" for null); on a perf_runs entry,
# `cpu_us_per_msg`, the broker's CPU time per acknowledged message in µs (its CPU seconds per second
# over the measured window ÷ msg/s), and `p($k)`, publish latency field $k (p99_ms ...).
PERF_JQ_DEFS='
def median: map(select(. != null)) | sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
def r($d): if . == null then "-" else (. * pow(10; $d) | round) / pow(10; $d) | tostring end;
def cpu_us_per_msg: if (.cpu.window_s // 0) == 0 or (.run.produce.messages_per_s // 0) == 0 then null else .cpu.broker_cpu_s / .cpu.window_s / .run.produce.messages_per_s * 1e6 end;
def p($k): .run.latency_ms.publish[$k];
'

# perf_median DIR JQ_PATH: median of JQ_PATH over the bench results (*.json, not *.cpu.json) in DIR.
perf_median() {
    find "$1" -maxdepth 1 -name '*.json' ! -name '*.cpu.json' -print0 | xargs -0 -r cat |
        jq -s "$PERF_JQ_DEFS [.[] | $2] | median"
}

# perf_median_cpu DIR FIELD: median of FIELD (bench_share, broker_share) over DIR's *.cpu.json files.
perf_median_cpu() {
    find "$1" -maxdepth 1 -name '*.cpu.json' -print0 | xargs -0 -r cat | jq -s "$PERF_JQ_DEFS [.[] | .$2] | median"
}

# perf_runs DIR: every run under DIR (data directories left out) as one JSON array sorted by name,
# each {name: its path under DIR without .json, run: its result JSON, cpu: its .cpu.json or null}.
perf_runs() {
    local dir="$1" json name
    find "$dir" -path "$dir/data-*" -prune -o -name '*.json' ! -name '*.cpu.json' -print | sort |
        while IFS= read -r json; do
            name="${json#"$dir/"}"
            name="${name%.json}"
            if [[ -s "$dir/$name.cpu.json" ]]; then
                jq -c --arg name "$name" --slurpfile cpu "$dir/$name.cpu.json" '{name: $name, run: ., cpu: $cpu[0]}' "$json"
            else
                jq -c --arg name "$name" '{name: $name, run: ., cpu: null}' "$json"
            fi
        done | jq -s .
}

# perf_round X DIGITS: X rounded to DIGITS decimals ("-" for null).
perf_round() {
    jq -n -r --argjson x "${1:-null}" --argjson d "$2" \
        'if $x == null then "-" else ($x * pow(10; $d) | round) / pow(10; $d) | tostring end'
}

# perf_percent SHARE: "12.3 %" from 0.123.
perf_percent() {
    jq -n -r --argjson x "${1:-null}" 'if $x == null then "-" else (($x * 1000 | round) / 10 | tostring) + " %" end'
}

# perf_ab_rounds A B RUN [LABEL]: ROUNDS rounds (the caller's ROUNDS) of `RUN MODE ROUND` for the
# two modes A and B, A first in odd rounds and B first in even ones, so drift over the batch falls
# on both alike; inside a quiet batch (perf_batch_checkpoint before each run); logs
# "round R: LABELMODE". Does nothing when only summarising.
perf_ab_rounds() {
    local first="$1" second="$2" run="$3" label="${4:-}" round mode order
    perf_measuring || return 0
    perf_batch_begin
    for ((round = 1; round <= ROUNDS; round++)); do
        if ((round % 2 == 1)); then order=("$first" "$second"); else order=("$second" "$first"); fi
        for mode in "${order[@]}"; do
            perf_batch_checkpoint
            perf_log "round $round: $label$mode"
            "$run" "$mode" "$round"
        done
    done
    perf_batch_end
}

# perf_batch_checkpoint: end the batch and start a new one (waiting for quiet again) once it has
# run for 8 minutes, so no batch holds the machine much past 10.
perf_batch_checkpoint() {
    if ((SECONDS - PERF_BATCH_STARTED > 480)); then
        perf_batch_end
        perf_batch_begin
    fi
}

# perf_rotate ROUND RUN_FN: one round of an interleaved comparison: for each rate of the array RATES,
# every system of the array SYSTEMS once, as RUN_FN SYSTEM RATE ROUND after a perf_batch_checkpoint.
# The systems' order turns by one with each rate (PERF_TURN carries over between rounds), so no
# system always runs first, or always after the same other.
PERF_TURN=0
perf_rotate() {
    local round="$1" run_fn="$2" rate i count=${#SYSTEMS[@]}
    for rate in "${RATES[@]}"; do
        for ((i = 0; i < count; i++)); do
            perf_batch_checkpoint
            "$run_fn" "${SYSTEMS[$(((i + PERF_TURN) % count))]}" "$rate" "$round"
        done
        PERF_TURN=$((PERF_TURN + 1))
    done
}

# perf_skip_missing_tansu: without a usable Tansu (perf_have_tansu), drops `tansu` from the array
# SYSTEMS and adds a line saying so to the array NOTES (for the summary). Scripts that install Tansu
# call perf_ensure_tansu instead.
perf_skip_missing_tansu() {
    local system remaining=()
    if ! perf_measuring || [[ " ${SYSTEMS[*]} " != *" tansu "* ]] || perf_have_tansu; then return 0; fi
    NOTES+=("Tansu skipped: no usable binary at \`$TANSU_BIN\` (\`just perf-install-peers\`, or PERF_TANSU_BIN).")
    perf_log "tansu skipped: no usable binary at $TANSU_BIN"
    for system in "${SYSTEMS[@]}"; do if [[ "$system" != tansu ]]; then remaining+=("$system"); fi; done
    SYSTEMS=("${remaining[@]+"${remaining[@]}"}")
}

# perf_failed NAME [REASON]: notes in $OUT/failed.txt that run NAME gave no result (REASON, or the
# last line of its output), so the summary can say so; the scenario goes on.
perf_failed() {
    echo "$1: ${2:-$(tail -n 1 "$OUT/$1.txt" 2>/dev/null)}" >>"$OUT/failed.txt"
}

# perf_summary_notes: the lines of the array NOTES, then the runs perf_failed noted, as markdown.
perf_summary_notes() {
    local note
    for note in "${NOTES[@]+"${NOTES[@]}"}"; do printf '\n%s\n' "$note"; done
    if [[ -s "$OUT/failed.txt" ]]; then
        printf '\nRuns that failed (not in the tables):\n\n'
        sed 's/^/- /' "$OUT/failed.txt"
    fi
}

# The systems the peer scenarios compare. series_start SERIES TAG starts one (fresh data, free
# port); SERIES_BENCH_FLAGS then holds the bench's stamping flags for it.
#   shardline-never   engine --shards 2 --cpus 0-1 --fsync never
#   shardline-always  engine --shards 2 --cpus 0-1 --fsync always
#   shardline-never-tmpfs  the first, its data directory on /dev/shm (no disk writeback below it)
#   shardline-S-MODE  engine --shards S --cpus C --fsync MODE, C = BROKER_CPUS when set (every shard
#                     on those CPUs), else 0-(S-1)
#   tansu             Tansu 0.6.0, memory store (no disk at all)
#   tansu-sqlite      Tansu 0.6.0, SQLite file store (WAL, synchronous=normal)
series_start() {
    local series="$1" tag="$2"
    case "$series" in
        shardline-never | shardline-always)
            local fsync="${series#shardline-}"
            engine_start "$tag" --shards 2 --cpus 0-1 --fsync "$fsync" || return 1
            SERIES_BENCH_FLAGS=(--broker-version "shardline $(perf_shardline_version)" --shards 2 --fsync "$fsync")
            ;;
        shardline-[0-9]*-never | shardline-[0-9]*-always)
            local rest="${series#shardline-}"
            local shards="${rest%%-*}" fsync="${rest#*-}"
            engine_start "$tag" --shards "$shards" --cpus "${BROKER_CPUS:-0-$((shards - 1))}" --fsync "$fsync" || return 1
            SERIES_BENCH_FLAGS=(--broker-version "shardline $(perf_shardline_version)" --shards "$shards" --fsync "$fsync")
            ;;
        shardline-never-tmpfs)
            local data_root="${PERF_DATA_ROOT:-}"
            PERF_DATA_ROOT="$(perf_media_root tmpfs)"
            engine_start "$tag" --shards 2 --cpus 0-1 --fsync never || { PERF_DATA_ROOT="$data_root"; return 1; }
            PERF_DATA_ROOT="$data_root"
            SERIES_BENCH_FLAGS=(--broker-version "shardline $(perf_shardline_version), data on tmpfs" --shards 2
                --fsync never)
            ;;
        tansu)
            tansu_start "$tag" memory || return 1
            SERIES_BENCH_FLAGS=(--broker-version "tansu $TANSU_VERSION (memory store)" --fsync "none (memory store)")
            ;;
        tansu-sqlite)
            tansu_start "$tag" sqlite || return 1
            SERIES_BENCH_FLAGS=(--broker-version "tansu $TANSU_VERSION (sqlite store)"
                --fsync "sqlite WAL, synchronous=normal")
            ;;
        *)
            perf_log "unknown series $series"
            return 1
            ;;
    esac
}

perf_shardline_version() {
    "$ENGINE_BIN" --version | awk '{ print $NF }'
}

# The human name of a series, for tables.
series_title() {
    case "$1" in
        shardline-never) echo "Shardline, fsync never" ;;
        shardline-always) echo "Shardline, fsync always" ;;
        shardline-never-tmpfs) echo "Shardline, fsync never, data on tmpfs" ;;
        shardline-[0-9]*-*)
            local rest="${1#shardline-}"
            echo "Shardline, ${rest%%-*} shard(s), fsync ${rest#*-}"
            ;;
        tansu) echo "Tansu $TANSU_VERSION, memory store" ;;
        tansu-sqlite) echo "Tansu $TANSU_VERSION, SQLite store" ;;
        *) echo "$1" ;;
    esac
}
