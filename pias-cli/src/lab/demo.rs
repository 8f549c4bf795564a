//! `pias lab demo`.

use anyhow::Result;

use super::Lab;

pub(crate) fn run(_lab: &Lab, _keep: bool) -> Result<()> {
    Ok(())
}
