/// The Debian packages driver-xdp's build script needs, since it compiles the XDP program: `clang` (the
/// compiler) and `libbpf-dev` (`bpf/bpf_helpers.h`; it pulls in `linux-libc-dev` for `linux/bpf.h`). Any
/// binary that links driver-xdp (`pias`) needs them to build; `scripts/apt-packages.txt` must list them for
/// both README commands (a pias-cli test checks it). Included by `build.rs` and the library alike.
pub const BUILD_DEBIAN_PACKAGES: &[&str] = &["clang", "libbpf-dev"];
