#!/usr/bin/env bash
# Runs every test of the repository, exactly as CI does (.ci/run calls this script).
#
#   bash scripts/test-all.sh
#
# On a fresh machine (Debian 12, root, Rust stable only) it first installs what is missing: the apt packages
# of scripts/apt-packages.txt and cargo-fuzz at the pinned version. Then these checks, in order; a failing check does
# not stop the later ones (unless FAIL_FAST=1), the summary lists every failure and the exit status is 1:
#   1. cargo fmt --check           4. cargo fuzz build (libFuzzer + AddressSanitizer)
#   2. cargo clippy -D warnings    5. a short fuzz run of every target, seeded with fuzz/corpus/<target>
#   3. cargo test --workspace (every test binary, even after a failure)
#
# Environment:
#   FUZZ_SECONDS  seconds of fuzzing per target (default 20); 0 only replays the corpus under ASan
#   FUZZ_RUNS     also stop a target after this many inputs (default -1: no limit)
#   SKIP_FUZZ=1   skip steps 4 and 5
#   FAIL_FAST=1   stop at the first failing check
#
# The sanitizer flags cargo-fuzz passes are nightly-only; RUSTC_BOOTSTRAP=1 lets the stable compiler accept
# them (the compiler's own escape hatch for its nightly-only flags). The fuzz runs write new inputs to
# a scratch corpus (fuzz/work/smoke/, git-ignored), never into the committed fuzz/corpus/, and crash inputs
# to fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages: scripts/apt-packages.txt is the one list (scripts/demo.sh reads it too); each is
# installed only when `dpkg -s` says it is missing.
source scripts/apt-packages.sh
# cargo-fuzz version, pinned so that CI is reproducible (bump deliberately).
CARGO_FUZZ_VERSION=0.13.2

FUZZ_SECONDS=${FUZZ_SECONDS:-20}
FUZZ_RUNS=${FUZZ_RUNS:--1}
SKIP_FUZZ=${SKIP_FUZZ:-0}
FAIL_FAST=${FAIL_FAST:-0}

start=$SECONDS
step="setup"
step_start=$SECONDS
timings=()
failed=()

begin() {
    step=$1
    step_start=$SECONDS
    printf '\n==> %s\n' "$step"
}
end() {
    timings+=("$(printf '%-32s %-6s %5ds' "$step" "${1:-ok}" "$((SECONDS - step_start))")")
}
# Runs one check; a failure is recorded and the next check still runs (CI then shows every failure at
# once), unless FAIL_FAST=1. Note: errexit does not apply inside the command, so it must be one command or
# a function that returns non-zero itself.
check() {
    local name=$1
    shift
    begin "$name"
    if "$@"; then
        end ok
    else
        end FAILED
        failed+=("$name")
        if [[ $FAIL_FAST == 1 ]]; then
            exit 1
        fi
    fi
}
on_exit() {
    local rc=$?
    if [[ $rc -ne 0 && ${#failed[@]} -eq 0 ]]; then
        printf '\ntest-all: FAILED at step "%s" (exit %d) after %ds\n' "$step" "$rc" "$((SECONDS - start))" >&2
    fi
}
trap on_exit EXIT

# ---------------------------------------------------------------------------------------------------------
begin "install prerequisites"

apt_install_missing test

for c in rustfmt clippy; do
    if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
        echo "installing rustup component $c"
        rustup component add "$c"
    fi
done

if [[ $SKIP_FUZZ != 1 ]]; then
    have=$(cargo fuzz --version 2>/dev/null || true)
    if [[ $have != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
        echo "installing cargo-fuzz $CARGO_FUZZ_VERSION (found: ${have:-none})"
        cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --force
    fi
fi
end

# ---------------------------------------------------------------------------------------------------------
fmt_check() {
    cargo fmt --all -- --check &&
        # The fuzz crate is not a workspace member; check its formatting too.
        cargo fmt --manifest-path fuzz/Cargo.toml -- --check
}

fuzz_summary=()
targets=()
fuzz_smoke() {
    local t seeds scratch log stats runs cov eps line limits logs rc=0
    mapfile -t targets < <(cargo fuzz list)
    if [[ ${#targets[@]} -eq 0 ]]; then
        echo "no fuzz targets found" >&2
        return 1
    fi
    if [[ $FUZZ_SECONDS == 0 ]]; then
        limits=(-runs=0)
    else
        limits=(-max_total_time="$FUZZ_SECONDS" -runs="$FUZZ_RUNS")
    fi
    logs=fuzz/work/logs
    mkdir -p "$logs"
    for t in "${targets[@]}"; do
        seeds=fuzz/corpus/$t
        if [[ ! -d $seeds ]] || [[ -z $(ls -A "$seeds") ]]; then
            echo "fuzz target $t has no seed corpus in $seeds" >&2
            fuzz_summary+=("$t: NO SEED CORPUS")
            rc=1
            continue
        fi
        scratch=fuzz/work/smoke/$t
        rm -rf "$scratch"
        mkdir -p "$scratch"
        log=$logs/$t.log
        # The first corpus directory is written to; the committed seeds come second and stay untouched.
        if ! cargo fuzz run "$t" "$scratch" "$seeds" -- "${limits[@]}" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 >"$log" 2>&1; then
            echo "fuzz target $t FAILED; end of $log:" >&2
            tail -n 60 "$log" >&2
            fuzz_summary+=("$t: CRASHED (input in fuzz/artifacts/$t/, log $log)")
            rc=1
            continue
        fi
        # "#N DONE cov: C ft: F corp: ... exec/s: E" is libFuzzer's last status line.
        stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
        runs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$stats")
        cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$stats")
        eps=$(sed -nE 's/.* exec\/s: ([0-9]+).*/\1/p' <<<"$stats")
        line=$(printf '%-16s %10s runs  cov %5s  %7s exec/s' "$t" "${runs:-?}" "${cov:-?}" "${eps:-?}")
        echo "$line"
        fuzz_summary+=("$line")
    done
    return "$rc"
}

# The demo's package list (scripts/apt-packages.txt) must name the packages that own the files the build
# really used (the XDP program's compiler and headers), so that `bash scripts/demo.sh` on a fresh machine
# installs them before it builds. pias-cli's test compares the list with driver-xdp's declared packages;
# this asks dpkg about the real files.
demo_packages_cover_build() {
    local f owner demo
    demo=$(apt_packages_for demo)
    for f in "$(command -v "${CLANG:-clang}")" /usr/include/bpf/bpf_helpers.h; do
        owner=$(dpkg -S "$f" 2>/dev/null | head -n 1 | cut -d: -f1) || true
        if [[ -z $owner ]]; then
            echo "no Debian package owns $f" >&2
            return 1
        fi
        if ! grep -qx "$owner" <<<"$demo"; then
            echo "scripts/apt-packages.txt does not give $owner (owner of $f) to the demo job" >&2
            return 1
        fi
        echo "$f: $owner (in the demo's list)"
    done
}

check "demo's packages cover the build" demo_packages_cover_build
check "cargo fmt --check" fmt_check
check "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
check "cargo test" cargo test --workspace --no-fail-fast

if [[ $SKIP_FUZZ == 1 ]]; then
    fuzz_summary+=("skipped (SKIP_FUZZ=1)")
else
    # cargo-fuzz's sanitizer flags are nightly-only; this lets the stable compiler accept them.
    export RUSTC_BOOTSTRAP=1
    check "cargo fuzz build" cargo fuzz build
    if [[ ${#failed[@]} -eq 0 || ${failed[-1]} != "cargo fuzz build" ]]; then
        check "fuzz smoke (${FUZZ_SECONDS}s per target)" fuzz_smoke
    fi
fi

# ---------------------------------------------------------------------------------------------------------
printf '\n--- steps\n'
printf '  %s\n' "${timings[@]}"
printf -- '--- fuzz smoke\n'
printf '  %s\n' "${fuzz_summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    printf '\ntest-all: FAILED (%s) in %ds\n' "$(IFS=,; echo "${failed[*]}" | sed 's/,/, /g')" \
        "$((SECONDS - start))" >&2
    exit 1
fi
if [[ $SKIP_FUZZ == 1 ]]; then
    what="fmt, clippy, tests; fuzz skipped"
else
    what="fmt, clippy, tests, fuzz smoke of ${#targets[@]} targets x ${FUZZ_SECONDS}s"
fi
printf '\ntest-all: OK (%s) in %ds\n' "$what" "$((SECONDS - start))"
