#!/usr/bin/env bash
# Runs every test of the repository, exactly as CI does (.ci/run calls this script).
#
#   bash scripts/test-all.sh
#
# On a fresh machine (Debian 12, root, Rust stable only) it first installs what is missing: the apt packages
# in APT_PACKAGES and cargo-fuzz at the pinned version. Then, in order, stopping at the first failure:
#   1. cargo fmt --check           4. cargo fuzz build (libFuzzer + AddressSanitizer)
#   2. cargo clippy -D warnings    5. a short fuzz run of every target, seeded with fuzz/corpus/<target>
#   3. cargo test --workspace
#
# Environment:
#   FUZZ_SECONDS  seconds of fuzzing per target (default 20); 0 only replays the corpus under ASan
#   FUZZ_RUNS     also stop a target after this many inputs (default -1: no limit)
#   SKIP_FUZZ=1   skip steps 4 and 5
#
# The sanitizer flags cargo-fuzz passes are nightly-only; RUSTC_BOOTSTRAP=1 lets the stable compiler accept
# them (see LAB-NOTES.md, "Fuzzing with the machine's stable toolchain"). The fuzz runs write new inputs to
# a scratch corpus (fuzz/work/smoke/, git-ignored), never into the committed fuzz/corpus/, and crash inputs
# to fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages the tests need; each is installed only when `dpkg -s` says it is missing.
#   g++: libfuzzer-sys compiles libFuzzer, which is C++.
APT_PACKAGES=(g++)
# cargo-fuzz version, pinned so that CI is reproducible (bump deliberately).
CARGO_FUZZ_VERSION=0.13.2

FUZZ_SECONDS=${FUZZ_SECONDS:-20}
FUZZ_RUNS=${FUZZ_RUNS:--1}
SKIP_FUZZ=${SKIP_FUZZ:-0}

start=$SECONDS
step="setup"
step_start=$SECONDS
timings=()

begin() {
    step=$1
    step_start=$SECONDS
    printf '\n==> %s\n' "$step"
}
end() {
    timings+=("$step $((SECONDS - step_start))s")
}
on_exit() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        printf '\ntest-all: FAILED at step "%s" (exit %d) after %ds\n' "$step" "$rc" "$((SECONDS - start))" >&2
    fi
}
trap on_exit EXIT

# ---------------------------------------------------------------------------------------------------------
begin "install prerequisites"

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "installing apt packages: ${missing[*]}"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

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
begin "cargo fmt --check"
cargo fmt --all -- --check
# The fuzz crate is not a workspace member; check its formatting too.
cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check
end

begin "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
end

begin "cargo test"
cargo test --workspace
end

# ---------------------------------------------------------------------------------------------------------
fuzz_summary=()
if [[ $SKIP_FUZZ == 1 ]]; then
    fuzz_summary+=("skipped (SKIP_FUZZ=1)")
else
    export RUSTC_BOOTSTRAP=1

    begin "cargo fuzz build"
    cargo fuzz build
    end

    begin "fuzz smoke (${FUZZ_SECONDS}s per target)"
    mapfile -t targets < <(cargo fuzz list)
    if [[ ${#targets[@]} -eq 0 ]]; then
        echo "no fuzz targets found" >&2
        exit 1
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
            exit 1
        fi
        scratch=fuzz/work/smoke/$t
        rm -rf "$scratch"
        mkdir -p "$scratch"
        log=$logs/$t.log
        # First corpus directory is written to; the committed seeds come second and stay untouched.
        if ! cargo fuzz run "$t" "$scratch" "$seeds" -- "${limits[@]}" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 >"$log" 2>&1; then
            echo "fuzz target $t FAILED; end of $log:" >&2
            tail -n 60 "$log" >&2
            exit 1
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
    end
fi

# ---------------------------------------------------------------------------------------------------------
printf '\n--- timings\n'
printf '  %s\n' "${timings[@]}"
printf -- '--- fuzz smoke\n'
printf '  %s\n' "${fuzz_summary[@]}"
if [[ $SKIP_FUZZ == 1 ]]; then
    what="fmt, clippy, tests; fuzz skipped"
else
    what="fmt, clippy, tests, fuzz smoke of ${#targets[@]} targets x ${FUZZ_SECONDS}s"
fi
printf '\ntest-all: OK (%s) in %ds\n' "$what" "$((SECONDS - start))"
