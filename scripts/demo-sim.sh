#!/usr/bin/env bash
# Show the protocol at work without root or a kernel: the simulator, captured and decoded.
#
#   bash scripts/demo-sim.sh
#
# Runs a five-proxy PIAS overlay in the deterministic simulator (real proxies and target agent, real encoded
# packets), captures every overlay datagram to a pcap, and decodes it with `pias decode`, checking every MAC:
# membership, the target's registration and the JAP's report to the RAPs, then a client's first packet on
# the 4-segment path (IAP → RAP → JAP, with the RAP's Answer) and later ones on the 3-segment path.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=${PIAS_DEMO_DIR:-$(mktemp -d)}
cargo build --quiet --release -p pias-sim --example demo_capture
cargo build --quiet --release -p pias-cli --bin pias
target=${CARGO_TARGET_DIR:-target}
"$target/release/examples/demo_capture" "$out/demo.pcap"
echo
echo "--- the client's traffic and what the proxies said about it (membership probes omitted):"
"$target/release/pias" decode "$out/demo.pcap" --key "$out/demo.key" | grep -v -E 'Probe|Digest|Pull|Records|Join'
echo
echo "capture kept in $out/demo.pcap (key $out/demo.key); decode it all with:"
echo "  $target/release/pias decode $out/demo.pcap --key $out/demo.key"
