//! Compiles `bpf/pias_xdp.c` twice with the system's clang (`-O2 -g -target bpf`): for the XDP hook
//! (`pias_xdp.o`) and for the TC ingress hook (`-DPIAS_HOOK_TC`, `pias_tc.o`; see `bpf/hook.h`). Nothing is
//! downloaded.
//!
//! Needs the Debian packages `clang` (the compiler), `libbpf-dev` (`bpf/bpf_helpers.h`) and `linux-libc-dev`
//! (`linux/bpf.h`, pulled in by libbpf-dev). `CLANG` overrides the compiler's path.

use std::path::PathBuf;
use std::process::Command;

include!("src/build_packages.rs");

const SOURCES: &[&str] = &[
    "pias_xdp.c",
    "structs.h",
    "maps.h",
    "siphash.h",
    "csum.h",
    "parse.h",
    "rewrite.h",
    "encap.h",
    "hook.h",
];

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for s in SOURCES {
        println!("cargo:rerun-if-changed=bpf/{s}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());

    let install = format!("apt-get install -y {}", BUILD_DEBIAN_PACKAGES.join(" "));
    if !std::path::Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        panic!(
            "driver-xdp: /usr/include/bpf/bpf_helpers.h not found; install the Debian package `libbpf-dev` \
             ({install})"
        );
    }
    for (out, define) in [("pias_xdp.o", None), ("pias_tc.o", Some("-DPIAS_HOOK_TC"))] {
        let out = out_dir.join(out);
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .args(define)
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-I")
            .arg(dir.join("bpf"))
            .arg("-c")
            .arg(dir.join("bpf/pias_xdp.c"))
            .arg("-o")
            .arg(&out)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("driver-xdp: `{clang}` failed to compile bpf/pias_xdp.c {define:?} ({s})"),
            Err(e) => panic!(
                "driver-xdp: cannot run `{clang}` ({e}); install the Debian package `clang` \
                 ({install}), or point CLANG at a clang that targets bpf"
            ),
        }
    }
}
