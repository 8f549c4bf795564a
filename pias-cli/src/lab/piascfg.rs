//! How the lab runs PIAS itself: key files, proxy config files, target agent and `pias ctl` command lines.
//! This is the only part of the lab that knows the `pias proxy` / `pias target` / `pias ctl` interfaces.

use anyhow::{Result, bail};

use super::Lab;
use super::topo::{Group, Node};

pub(crate) fn write_keys(_lab: &Lab) -> Result<()> {
    Ok(())
}

pub(crate) fn proxy_argv(_lab: &Lab, _p: &Node) -> Result<Vec<String>> {
    bail!("`pias proxy` is not available in this build")
}

pub(crate) fn agent_argv(_lab: &Lab, _s: &Node, _g: &Group, _key: Option<&str>) -> Result<Vec<String>> {
    bail!("`pias target` is not available in this build")
}

pub(crate) fn ctl(_lab: &Lab, _p: &Node, _args: &[&str]) -> Result<String> {
    bail!("`pias ctl` is not available in this build")
}
