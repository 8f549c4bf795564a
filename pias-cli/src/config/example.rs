//! The example configuration: every key, commented (`pias proxy --example-config`; a test parses it).

/// A complete, commented configuration (also `pias proxy --example-config`).
pub(crate) const EXAMPLE: &str = r#"# pias proxy configuration. Only [proxy] is required; every other table has defaults.
[proxy]
id = 1                                  # unique, non-zero, like a router id
overlay = "10.251.0.5:6081"             # this proxy's unicast address (port 6081 if omitted)
vni = 1                                 # overlay id (24 bits), the same on every proxy
master_key_file = "master.key"          # 64 hex digits (`pias key generate`), the same on every proxy
data_key_epoch = 0                      # data-frame tag key epoch: raise it by 1 on every proxy to rotate
                                        # (frames of this epoch and the one before are accepted)
anycast_prefixes = ["10.251.0.128/28"]  # routed into the TUN; groups live here
registration = ["10.251.0.150"]         # registration anycast addresses (targets register here, port 6082)
nat_pool = ["10.251.0.161"]             # this proxy's own NAT source addresses (unique per proxy)
overlay_prefixes = ["10.251.0.160/28"]  # other proxies' NAT pools (and any other overlay address): client
                                        # sources and reply destinations there are refused (SPEC.md §8.5);
                                        # the anycast prefixes, registration and nat_pool are added anyway
seeds = ["10.251.0.6:6081"]             # overlay addresses to join through; empty for the first proxy
driver = "tokio"                        # "tokio", "mio" (one mio Poll, recvmmsg/sendmmsg batches) or "xdp" (see [xdp])
overlay_mtu = 1500                      # MTU of the path between proxies
# seed = 42                             # seed of non-secret random choices (default: from the OS); secrets always come from the OS

[tun]
name = "pias0"                          # created by the process, gone when it exits
mtu = 1500                              # at least overlay_mtu, so the proxy sees (and answers) big packets
sysctls = true                          # set ip_forward (and IPv6 forwarding) and loose rp_filter on the TUN

# [xdp]                                 # with driver = "xdp": the XDP fast path (driver-xdp) on these interfaces
# interfaces = ["eth0"]                 # native mode, else generic (skb) mode with a log line; detached on exit
# slow_path = "tokio"                   # what runs everything the program passes: "tokio" or "mio"
# hook = "xdp"                          # "xdp" for NICs with an XDP driver; "tc" (TC ingress) for veth and
#                                       # other virtual interfaces, where XDP copies every packet; "auto": tc
#                                       # when every interface is a veth, else xdp

[metrics]
listen = "127.0.0.1:9851"               # Prometheus text format on http://ADDR/metrics; omit to disable

[control]
socket = "/run/pias/pias0.sock"         # `pias ctl --socket PATH`; omit to disable. Mode 0600: root and this user
# group = "pias"                        # also this group's members (mode 0660, owned by the group)

[timers]                                # SPEC.md §14; all optional
probe_interval_ms = 250
suspect_timeout_ms = 1000
drain_time_ms = 2000                    # graceful leave: Left at half, exit at the end
refresh_ms = 200                        # told to targets
hold_ms = 700                           # a target silent this long is dead
cache_ttl_ms = 60000
announce_hold_down_ms = 2000            # cut off from the overlay this long: withdraw the prefixes (§7.7)
announce_hold_up_ms = 5000              # healthy again this long: announce them again

[nat]                                   # all optional
port_min = 1024
port_max = 65535
max_entries = 1000000
udp_timeout_s = 120                     # assured UDP (replied, active 2 s after creation)
udp_transitory_timeout_s = 30           # unreplied or one-shot UDP; early drop takes these first
tcp_half_open_timeout_s = 30            # TCP nothing came back for
new_per_prefix = 4096                   # new (unassured) bindings at once per client /24 or /56
# prefix_addrs = 64                     # addresses taken from each IPv6 prefix in proxy.nat_pool ("fd00:98::/96")

[default_policy]                        # for groups no [[policy]] matches
rap = "proximity"                       # proximity | load | affinity | random

[[policy]]                              # first match wins
group = "10.251.0.128/28"               # group prefix
port = 80                               # optional
proto = "tcp"                           # optional: udp | tcp
rap = "affinity"                        # a flow keeps its JAP across an ingress change
exclude_sender = false                  # never send a client's packets to itself
# scope_prefix = 24                     # prefer targets sharing this many bits with the client
# random = false                        # random target instead of per-flow hash
# replicate = 2                         # UDP: copy to this many targets (2..4)
"#;
