#!/usr/bin/env bash
# The README's main job: the PIAS lab demo on this machine's kernel.
#
#   bash scripts/demo.sh          (as root; installs what a fresh machine lacks)
#
# Builds `pias`, then `pias lab demo`: seven ISPs as BGP autonomous systems (a tier-1 pair, transit, stub and
# multi-homed ASes; one router namespace each) with clients, three proxies and two target sites in network
# namespaces joined by veth links, BIRD 2 speaking eBGP so each client reaches its AS-path-nearest proxy by
# real anycast routing, dnsmasq and an HTTP server on each site registered by `pias target` (which checks its
# service). It runs dig and curl from every client to the anycast groups (IPv4 and IPv6), shows which proxy
# and which target served each request and the path (4 segments for the first packet, then 3), downloads
# 20 MB, then kills a target, a JAP and an ingress proxy, crashes a proxy's host, drains one, hangs a service,
# shows service continuing each time, measures the proxy failovers again on the OSPF lab for comparison, and
# tears everything down.
# Nothing is connected to the host's interfaces.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "demo.sh: the lab creates network namespaces and runs BIRD: run it as root" >&2
    exit 1
fi
# The packages come from scripts/apt-packages.txt, the list scripts/test-all.sh installs from too; the
# build needs clang and libbpf-dev (pias links driver-xdp, whose build compiles the XDP program).
source scripts/apt-packages.sh
apt_install_missing demo
cargo build --quiet --release -p pias-cli --bin pias
target=${CARGO_TARGET_DIR:-target}
exec "$target/release/pias" lab demo "$@"
