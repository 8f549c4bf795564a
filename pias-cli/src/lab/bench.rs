//! `pias lab bench`.

use anyhow::Result;
use clap::Parser;

use super::Lab;

#[derive(Debug, Parser)]
pub(crate) struct BenchArgs {}

pub(crate) fn run(_lab: &Lab, _a: BenchArgs) -> Result<()> {
    Ok(())
}
