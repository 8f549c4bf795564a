//! Loading the program, its maps, attaching to an interface, and `BPF_PROG_TEST_RUN`.

use std::time::Duration;

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use crate::maps::{COUNTER_NAMES, Config, Flow, Group, Nat, SockAddr, Ta};

#[repr(C, align(32))]
struct Aligned<B: ?Sized> {
    bytes: B,
}

static OBJECT: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/pias_xdp.o")),
};

/// The compiled program (ELF), as built by `build.rs`.
pub fn object() -> &'static [u8] {
    &OBJECT.bytes
}

/// Name of the XDP program in the object.
pub const PROGRAM: &str = "pias_xdp";

/// What can go wrong loading or running the program.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("loading the BPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("BPF program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("BPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("the object has no `{0}`")]
    Missing(&'static str),
    #[error("BPF_PROG_TEST_RUN needs root (CAP_BPF and CAP_NET_ADMIN); run the tests as root")]
    NotRoot,
}

/// Map sizes; the defaults are the core's bounds (SPEC.md §14: 65 536 IAP entries) and a NAT share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub groups: u32,
    pub nat: u32,
    pub members: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            groups: 65_536,
            nat: 262_144,
            members: 4096,
        }
    }
}

/// The maps MapSync writes and the driver reads.
pub struct Maps {
    pub config: Array<MapData, Config>,
    pub groups: HashMap<MapData, Ta, Group>,
    pub nat_fwd: HashMap<MapData, Flow, Nat>,
    pub nat_rev: HashMap<MapData, Flow, Nat>,
    pub members: HashMap<MapData, SockAddr, u32>,
    pub counters: PerCpuArray<MapData, u64>,
}

impl core::fmt::Debug for Maps {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Maps").finish_non_exhaustive()
    }
}

impl Maps {
    /// Sum over CPUs of each program counter, in [`COUNTER_NAMES`] order.
    pub fn counters(&self) -> Result<[u64; COUNTER_NAMES.len()], XdpError> {
        let mut out = [0u64; COUNTER_NAMES.len()];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.counters.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }
}

/// A loaded (verified) program with its maps.
#[derive(Debug)]
pub struct XdpProgram {
    ebpf: Ebpf,
}

/// The result of one `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// `XDP_PASS` (2), `XDP_TX` (3), `XDP_REDIRECT` (4), …
    pub verdict: u32,
    /// The frame after the program.
    pub frame: Vec<u8>,
    /// Average time per run as the kernel measured it.
    pub per_run: Duration,
}

/// XDP verdicts.
pub mod verdict {
    pub const ABORTED: u32 = 0;
    pub const DROP: u32 = 1;
    pub const PASS: u32 = 2;
    pub const TX: u32 = 3;
    pub const REDIRECT: u32 = 4;
}

fn take<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, XdpError> {
    let m = ebpf.take_map(name).ok_or(XdpError::Missing(name))?;
    Ok(HashMap::try_from(m)?)
}

impl XdpProgram {
    /// Loads the object, sizes the maps, and has the kernel verify the program. Returns the program and its
    /// maps (which the caller hands to a `MapSync`).
    pub fn load(sizes: Sizes) -> Result<(XdpProgram, Maps), XdpError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(XdpError::NotRoot);
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("pias_groups", sizes.groups)
            .map_max_entries("pias_nat_fwd", sizes.nat)
            .map_max_entries("pias_nat_rev", sizes.nat)
            .map_max_entries("pias_members", sizes.members)
            .load(object())?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::Missing(PROGRAM))?
            .try_into()?;
        prog.load()?;
        let config = Array::try_from(ebpf.take_map("pias_cfg").ok_or(XdpError::Missing("pias_cfg"))?)?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map("pias_counters")
                .ok_or(XdpError::Missing("pias_counters"))?,
        )?;
        let maps = Maps {
            config,
            groups: take(&mut ebpf, "pias_groups")?,
            nat_fwd: take(&mut ebpf, "pias_nat_fwd")?,
            nat_rev: take(&mut ebpf, "pias_nat_rev")?,
            members: take(&mut ebpf, "pias_members")?,
            counters,
        };
        Ok((XdpProgram { ebpf }, maps))
    }

    fn prog(&self) -> Result<&Xdp, XdpError> {
        let p = self.ebpf.program(PROGRAM).ok_or(XdpError::Missing(PROGRAM))?;
        Ok(p.try_into()?)
    }

    fn prog_mut(&mut self) -> Result<&mut Xdp, XdpError> {
        let p = self.ebpf.program_mut(PROGRAM).ok_or(XdpError::Missing(PROGRAM))?;
        Ok(p.try_into()?)
    }

    /// Runs the program `repeat` times on `frame` (an Ethernet frame) with `BPF_PROG_TEST_RUN`.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<RunResult, XdpError> {
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: repeat.max(1),
            ..TestRunOptions::new()
        };
        let r = self.prog()?.test_run(opts)?;
        out.truncate(r.data_size_out as usize);
        Ok(RunResult {
            verdict: r.return_value,
            frame: out,
            per_run: r.duration,
        })
    }

    /// Attaches to `iface` in native (driver) mode, falling back to generic mode with a log line on stderr
    /// when the driver refuses. Returns the mode used. Detached when the program is dropped.
    pub fn attach(&mut self, iface: &str) -> Result<XdpMode, XdpError> {
        let prog = self.prog_mut()?;
        match prog.attach(iface, XdpMode::Driver) {
            Ok(_) => Ok(XdpMode::Driver),
            Err(e) => {
                eprintln!(
                    "driver-xdp: native XDP attach on {iface} failed ({e}); falling back to generic (skb) mode"
                );
                prog.attach(iface, XdpMode::Skb)?;
                Ok(XdpMode::Skb)
            }
        }
    }
}
