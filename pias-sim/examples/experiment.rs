//! Runs one scale experiment without the `pias` binary (and its drivers), for quick measurements:
//!
//!     cargo run --release -p pias-sim --example experiment -- membership sizes=[100,300] [OUT_DIR]
//!
//! Arguments after the name are `key=value` parameter settings (as `pias sim --set`); an argument without
//! `=` is the output directory (default: nothing written, the Markdown summary is printed).

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        eprintln!(
            "usage: experiment NAME [key=value ...] [OUT_DIR] (experiments: {})",
            pias_sim::experiments::EXPERIMENTS.join(", ")
        );
        std::process::exit(2);
    };
    let mut sets = Vec::new();
    let mut out = None;
    for a in args {
        match a.split_once('=') {
            Some((k, v)) => sets.push((k.trim().to_string(), v.trim().to_string())),
            None => out = Some(std::path::PathBuf::from(a)),
        }
    }
    let mut log = |s: &str| eprintln!("{s}");
    let o = match pias_sim::experiments::run_named(&name, &sets, &mut log) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    if let Some(dir) = out
        && let Err(e) = o.write(&dir)
    {
        eprintln!("writing {}: {e}", dir.display());
        std::process::exit(1);
    }
    println!("{}", o.summary);
}
