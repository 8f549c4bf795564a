#!/usr/bin/env bash
# Runs the core's criterion benchmarks in one go and prints a Markdown table of medians, each with its
# ratio to the baseline measured in the same run (the figures BENCHMARKS.md records).
#
#   bash scripts/bench-core.sh            # about 4 minutes
#   MEASURE=5 bash scripts/bench-core.sh  # longer measurement per benchmark (seconds)
#
# Absolute nanoseconds depend on the machine and its load; compare the ratios.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MEASURE=${MEASURE:-3}
log=$(mktemp)
run() { cargo bench -q -p "$1" --bench "$2" -- --warm-up-time 1 --measurement-time "$MEASURE" --noplot 2>/dev/null | tee -a "$log" >/dev/null; }
run pias-proto rewrite
run pias-state hashing
run pias-state nat
run pias-state membership
run pias-sim datapath
python3 - "$log" <<'PY'
import re, sys
rows = []
name = None
for line in open(sys.argv[1]):
    m = re.match(r'^(\S+)\s+time:\s+\[(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\]', line)
    if not m:
        m2 = re.match(r'^(\S+/\S+)\s*$', line)
        if m2:
            name = m2.group(1)
        m = re.match(r'^\s+time:\s+\[(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\]', line)
        if m and name:
            val, unit = float(m.group(3)), m.group(4)
            rows.append((name, val * {'ps': 1e-3, 'ns': 1, 'µs': 1e3, 'us': 1e3, 'ms': 1e6}[unit]))
        continue
    val, unit = float(m.group(4)), m.group(5)
    rows.append((m.group(1), val * {'ps': 1e-3, 'ns': 1, 'µs': 1e3, 'us': 1e3, 'ms': 1e6}[unit]))
def baseline_for(n):
    group = n.split('/')[0]
    cands = [(k, v) for k, v in rows if k.split('/')[0] == group and 'baseline' in k]
    if group == 'nat':
        size = n.split('/')[-1]
        cands = [(k, v) for k, v in cands if k.endswith('/' + size)]
    if group == 'nat_rewrite':
        case = n.split('/')[-1]
        cands = [(k, v) for k, v in cands if k.endswith('/' + case)]
    if group in ('flowhash', 'ring_raps', 'ring_churn_100k'):
        cands = [(k, v) for k, v in rows if k == 'baseline/hashmap_get_10k']
    return cands[0] if cands else (None, None)
print('| benchmark | median | baseline (same run) | ratio |')
print('|---|---|---|---|')
for n, v in rows:
    b, bv = baseline_for(n)
    fmt = lambda x: f'{x:.1f} ns' if x < 1000 else f'{x/1000:.2f} µs'
    if b and b != n:
        print(f'| `{n}` | {fmt(v)} | `{b}` {fmt(bv)} | {v/bv:.2f}× |')
    else:
        print(f'| `{n}` | {fmt(v)} | — | — |')
PY
