//! Compiles `bpf/pias_xdp.c` with the system's clang (`-O2 -g -target bpf`). Nothing is downloaded.
//!
//! Needs the Debian packages `clang` (the compiler), `libbpf-dev` (`bpf/bpf_helpers.h`) and `linux-libc-dev`
//! (`linux/bpf.h`, pulled in by libbpf-dev). `CLANG` overrides the compiler's path.

use std::path::PathBuf;
use std::process::Command;

const SOURCES: &[&str] = &[
    "pias_xdp.c",
    "structs.h",
    "maps.h",
    "siphash.h",
    "csum.h",
    "parse.h",
    "rewrite.h",
    "encap.h",
];

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("pias_xdp.o");
    for s in SOURCES {
        println!("cargo:rerun-if-changed=bpf/{s}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());

    if !std::path::Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        panic!(
            "driver-xdp: /usr/include/bpf/bpf_helpers.h not found; install the Debian package `libbpf-dev` \
             (apt-get install -y clang libbpf-dev)"
        );
    }
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
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
        Ok(s) => panic!("driver-xdp: `{clang}` failed to compile bpf/pias_xdp.c ({s})"),
        Err(e) => panic!(
            "driver-xdp: cannot run `{clang}` ({e}); install the Debian package `clang` \
             (apt-get install -y clang libbpf-dev), or point CLANG at a clang that targets bpf"
        ),
    }
}
