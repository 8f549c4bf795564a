//! Loading the program, its maps, attaching to an interface, and `BPF_PROG_TEST_RUN`.

use std::time::Duration;

use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::{SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use crate::maps::{COUNTER_NAMES, Config, FilterData, Flow, Group, Nat, SockAddr, Ta};

#[repr(C, align(32))]
struct Aligned<B: ?Sized> {
    bytes: B,
}

static OBJECT: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/pias_xdp.o")),
};

static OBJECT_TC: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/pias_tc.o")),
};

/// Where the program runs. The decisions are the same on both (one C source, `bpf/hook.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// XDP (native, else generic): for NICs with an XDP driver, where the frame is seen before any socket
    /// buffer exists.
    Xdp,
    /// TC ingress (clsact/tcx, direct action): for virtual interfaces (veth), where native XDP costs a copy
    /// into an XDP frame and a socket-buffer rebuild on the receiving side per hop. On a veth, frames going
    /// back out of their interface enter the peer's receive path directly (`bpf_redirect_peer`).
    Tc,
}

impl Hook {
    pub const ALL: [Hook; 2] = [Hook::Xdp, Hook::Tc];

    /// `"xdp"` or `"tc"` (configuration and metrics spelling).
    pub fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::Tc => "tc",
        }
    }

    /// The compiled program (ELF) for this hook, as built by `build.rs`.
    pub fn object(self) -> &'static [u8] {
        match self {
            Hook::Xdp => &OBJECT.bytes,
            Hook::Tc => &OBJECT_TC.bytes,
        }
    }

    /// `hook = "auto"`: TC ingress when every one of `interfaces` is a veth (where XDP copies every
    /// packet), else XDP.
    pub fn for_interfaces(interfaces: &[&str]) -> Hook {
        if !interfaces.is_empty() && interfaces.iter().all(|i| is_veth(i)) {
            Hook::Tc
        } else {
            Hook::Xdp
        }
    }

    /// The program's name in [`Hook::object`].
    pub fn program(self) -> &'static str {
        match self {
            Hook::Xdp => PROGRAM,
            Hook::Tc => "pias_tc",
        }
    }
}

impl core::str::FromStr for Hook {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "xdp" => Ok(Hook::Xdp),
            "tc" => Ok(Hook::Tc),
            other => Err(format!("unknown hook {other:?}: use \"xdp\" or \"tc\"")),
        }
    }
}

/// The compiled XDP program (ELF), as built by `build.rs`.
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
    #[error("attaching at TC ingress of {0}: {1}")]
    Tc(String, String),
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
    /// Client sources the core refuses (SPEC.md §8.5).
    pub filter: LpmTrie<MapData, FilterData, u8>,
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
    hook: Hook,
}

/// The result of one `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// In XDP terms whatever the hook: `XDP_PASS` (2), `XDP_TX` (3), `XDP_REDIRECT` (4), … A TC program's
    /// `TC_ACT_OK` is reported as PASS, `TC_ACT_SHOT` as DROP (a data frame with a bad tag; the program's
    /// aborts are SHOT too on TC, told apart by the counters) and
    /// `TC_ACT_REDIRECT` as TX (a test run has no routes, so every hit goes back out; see `raw`).
    pub verdict: u32,
    /// The program's own return value.
    pub raw: u32,
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

/// TC actions (`linux/pkt_cls.h`): [`RunResult::raw`] of a TC program.
pub mod tc_act {
    pub const OK: u32 = 0;
    pub const SHOT: u32 = 2;
    pub const REDIRECT: u32 = 7;
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
        Self::load_hook(sizes, Hook::Xdp)
    }

    /// [`XdpProgram::load`] for either hook.
    pub fn load_hook(sizes: Sizes, hook: Hook) -> Result<(XdpProgram, Maps), XdpError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(XdpError::NotRoot);
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("pias_groups", sizes.groups)
            .map_max_entries("pias_nat_fwd", sizes.nat)
            .map_max_entries("pias_nat_rev", sizes.nat)
            .map_max_entries("pias_members", sizes.members)
            .load(hook.object())?;
        let p = ebpf
            .program_mut(hook.program())
            .ok_or(XdpError::Missing(hook.program()))?;
        match hook {
            Hook::Xdp => <&mut Xdp>::try_from(p)?.load()?,
            Hook::Tc => <&mut SchedClassifier>::try_from(p)?.load()?,
        }
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
            filter: LpmTrie::try_from(
                ebpf.take_map("pias_filter")
                    .ok_or(XdpError::Missing("pias_filter"))?,
            )?,
            counters,
        };
        Ok((XdpProgram { ebpf, hook }, maps))
    }

    /// The hook this program was built for.
    pub fn hook(&self) -> Hook {
        self.hook
    }

    fn program(&self) -> Result<&aya::programs::Program, XdpError> {
        let name = self.hook.program();
        self.ebpf.program(name).ok_or(XdpError::Missing(name))
    }

    fn program_mut(&mut self) -> Result<&mut aya::programs::Program, XdpError> {
        let name = self.hook.program();
        self.ebpf.program_mut(name).ok_or(XdpError::Missing(name))
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
        let r = match self.hook {
            Hook::Xdp => <&Xdp>::try_from(self.program()?)?.test_run(opts)?,
            Hook::Tc => <&SchedClassifier>::try_from(self.program()?)?.test_run(opts)?,
        };
        out.truncate(r.data_size_out as usize);
        let verdict = match (self.hook, r.return_value) {
            (Hook::Xdp, v) => v,
            (Hook::Tc, tc_act::OK) => verdict::PASS,
            (Hook::Tc, tc_act::SHOT) => verdict::DROP,
            (Hook::Tc, tc_act::REDIRECT) => verdict::TX,
            (Hook::Tc, v) => 0x100 | v,
        };
        Ok(RunResult {
            verdict,
            raw: r.return_value,
            frame: out,
            per_run: r.duration,
        })
    }

    /// Attaches to `iface` in native (driver) mode, falling back to generic mode with a log line on stderr
    /// when the driver refuses. Returns the mode used. Detached when the program is dropped.
    pub fn attach(&mut self, iface: &str) -> Result<XdpMode, XdpError> {
        if self.hook == Hook::Tc {
            return self.attach_tc(iface).map(|()| XdpMode::Skb);
        }
        let prog: &mut Xdp = self.program_mut()?.try_into()?;
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

    /// TC ingress: a tcx link (Linux 6.6+), else a clsact qdisc and a direct-action filter. Detached when
    /// the program is dropped.
    fn attach_tc(&mut self, iface: &str) -> Result<(), XdpError> {
        // Only needed (and only made) for the netlink attachment of kernels before tcx; an existing qdisc
        // is fine.
        let _ = aya::programs::tc::qdisc_add_clsact(iface);
        let prog: &mut SchedClassifier = self.program_mut()?.try_into()?;
        prog.attach(iface, TcAttachType::Ingress)
            .map(|_| ())
            .map_err(|e| XdpError::Tc(iface.to_owned(), e.to_string()))
    }
}

/// Whether `iface` is a veth (its driver as `ethtool -i` reports it): the TC hook then hands frames it
/// sends back straight to the peer ([`crate::maps::CFG_PEER`]).
pub fn is_veth(iface: &str) -> bool {
    driver_name(iface).as_deref() == Some("veth")
}

/// The interface's driver name (ETHTOOL_GDRVINFO), or None.
fn driver_name(iface: &str) -> Option<String> {
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    if iface.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut info: DrvInfo = unsafe { core::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: as above.
    let mut req: libc::ifreq = unsafe { core::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: a datagram socket used only for the ioctl and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: SIOCETHTOOL with a valid ifreq whose data points at a live ethtool_drvinfo.
    let r = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut req) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if r != 0 {
        return None;
    }
    let n = info
        .driver
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(info.driver.len());
    Some(String::from_utf8_lossy(&info.driver[..n]).into_owned())
}
