//! `pias sim`: the scale experiments (a discrete-event network running real proxies and agents, see
//! `pias_sim::experiments`). This module only parses arguments and scenario files.

use std::path::PathBuf;

use anyhow::{Context, bail};

/// `--help`'s description (clap replaces a subcommand struct's doc comment with its variant's, so it
/// goes in `before_long_help`, placed by [`crate::proxy::HELP_TEMPLATE`]).
const LONG_ABOUT: &str = "\nRuns the scale experiments on simulated Internet-like topologies: a deterministic discrete-event network driving the real proxy and target-agent state machines with real encoded packets, on a seeded GT-ITM-style transit-stub graph (or a latency matrix from a CSV file).\n\nBuilt-in experiments: stretch, membership, member_table, churn, flash. --all runs the five at their default sizes (about 15 minutes on 2 cores) and writes CSV, SVG plots, Markdown summaries and a README into --out; `pias sim --all --out docs/scale` regenerates docs/scale.\n\nA scenario file is TOML: `experiment = \"membership\"` plus any parameter of that experiment (e.g. `sizes = [100, 250]`, `seed = 3`, `topo = \"latencies.csv\"`); an unknown key is an error that lists the known ones.";

/// Runs the scale experiments on simulated Internet-like topologies (see `LONG_ABOUT`).
#[derive(Debug, clap::Args)]
#[command(help_template = crate::proxy::HELP_TEMPLATE, before_help = "\nMore with --help.", before_long_help = LONG_ABOUT, after_help = "\
Examples:
  pias sim --all --out docs/scale
  pias sim --all --quick --out /tmp/q
  pias sim --experiment churn --set 'bands=[0,25]' --set duration_s=10 --out /tmp/churn
  pias sim --scenario pias-sim/scenarios/membership-small.toml --out /tmp/m")]
pub(crate) struct Args {
    /// A scenario file (TOML).
    #[arg(long, conflicts_with_all = ["experiment", "all"])]
    scenario: Option<PathBuf>,
    /// A built-in experiment by name, at its default size.
    #[arg(long)]
    experiment: Option<String>,
    /// All five experiments.
    #[arg(long)]
    all: bool,
    /// Small sizes (seconds instead of minutes).
    #[arg(long)]
    quick: bool,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Parameter overrides, `key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Output directory.
    #[arg(long, default_value = "sim-out")]
    out: PathBuf,
}

fn toml_to_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) => a.iter().map(toml_to_text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

pub(crate) fn run(a: Args) -> anyhow::Result<()> {
    let mut log = |m: &str| eprintln!("pias sim: {m}");
    if a.all {
        let outs =
            pias_sim::experiments::run_all(a.seed, &a.out, a.quick, &mut log).map_err(anyhow::Error::msg)?;
        for o in outs {
            println!("{}", o.summary);
        }
        return Ok(());
    }
    let mut sets: Vec<(String, String)> = vec![("seed".into(), a.seed.to_string())];
    let name = if let Some(path) = &a.scenario {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let t: toml::Table = text
            .parse()
            .with_context(|| format!("parsing {}", path.display()))?;
        let mut name = None;
        for (k, v) in &t {
            if k == "experiment" {
                name = Some(toml_to_text(v));
            } else {
                sets.push((k.clone(), toml_to_text(v)));
            }
        }
        name.context("the scenario file needs `experiment = \"...\"`")?
    } else if let Some(e) = &a.experiment {
        e.clone()
    } else {
        bail!(
            "give --all, --experiment NAME or --scenario FILE.toml (experiments: {})",
            pias_sim::experiments::EXPERIMENTS.join(", ")
        );
    };
    for s in &a.sets {
        let (k, v) = s.split_once('=').context("--set takes KEY=VALUE")?;
        sets.push((k.trim().into(), v.trim().into()));
    }
    let o = pias_sim::experiments::run_named(&name, &sets, &mut log).map_err(anyhow::Error::msg)?;
    o.write(&a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!("{}", o.summary);
    eprintln!(
        "pias sim: wrote {} files to {}",
        o.files.len() + o.timing.len(),
        a.out.display()
    );
    Ok(())
}
