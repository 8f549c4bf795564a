#!/usr/bin/env bash
# Fuzzes one target for a long time on this machine.
#
#   bash scripts/fuzz-long.sh TARGET SECONDS
#
# The working corpus is fuzz/work/<TARGET>/ (git-ignored); it is kept between runs, so successive runs
# continue where the last one stopped, and it starts from the committed seeds in fuzz/corpus/<TARGET>/,
# which this script never writes to. Crash inputs land in fuzz/artifacts/<TARGET>/.
#
# Environment:
#   FUZZ_JOBS   parallel fuzzing processes (default 1; the CI machines have 2 shared cores)
#   FUZZ_ARGS   extra libFuzzer flags, for example "-max_len=2048 -only_ascii=0"
#
# After a crash: reproduce with `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-…`,
# fix it, then keep the input as a regression seed (it must pass the target by then):
#   cargo run -p pias-proto --example gen_corpus -- --add TARGET fuzz/artifacts/TARGET/crash-…
# (pias-proto/tests/corpus.rs replays it on every `cargo test`). To fold what a long run found into the
# committed seeds, minimise first: `cargo fuzz cmin TARGET fuzz/work/TARGET` — then copy only a handful.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $# -ne 2 ]] || ! [[ $2 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 TARGET SECONDS   (targets: $(RUSTC_BOOTSTRAP=1 cargo fuzz list 2>/dev/null | tr '\n' ' '))" >&2
    exit 2
fi
target=$1
seconds=$2
jobs=${FUZZ_JOBS:-1}

export RUSTC_BOOTSTRAP=1
# Read the whole list first: `grep -q` in a pipe would close it early and make `cargo fuzz list` panic.
targets=$(cargo fuzz list)
if ! grep -qx "$target" <<<"$targets"; then
    echo "unknown fuzz target: $target (targets: $(tr '\n' ' ' <<<"$targets"))" >&2
    exit 2
fi

work=fuzz/work/$target
seeds=fuzz/corpus/$target
mkdir -p "$work" "fuzz/work/logs"
log=fuzz/work/logs/$target-long.log

cargo fuzz build "$target"

parallel=()
if [[ $jobs -gt 1 ]]; then
    parallel=(-jobs="$jobs" -workers="$jobs")
fi
marker=$(mktemp)
trap 'rm -f "$marker"' EXIT

echo "fuzzing $target for ${seconds}s with $jobs job(s); log: $log"
set +e
# shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags.
cargo fuzz run "$target" "$work" "$seeds" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "${parallel[@]}" ${FUZZ_ARGS:-} 2>&1 | tee "$log" | grep -E --line-buffered \
    '^#[0-9]+[[:space:]]+(pulse|DONE)|panicked|ERROR|SUMMARY|Test unit written|^stat::'
rc=${PIPESTATUS[0]}
set -e

# With -jobs, libFuzzer writes each job's output to fuzz-N.log in the current directory.
for f in fuzz-[0-9]*.log; do
    [[ -e $f ]] && cat "$f" >>"$log" && rm -f "$f"
done

stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
crashes=$(find "fuzz/artifacts/$target" -type f -newer "$marker" 2>/dev/null | wc -l || true)
echo
echo "target:   $target"
echo "final:    ${stats:-no DONE line (see $log)}"
echo "corpus:   $(find "$work" -type f | wc -l) inputs in $work"
echo "crashes:  ${crashes:-0} new file(s) in fuzz/artifacts/$target/"
echo "exit:     $rc"
if [[ ${crashes:-0} -gt 0 ]]; then
    echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $target fuzz/artifacts/$target/<file>"
fi
exit "$rc"
