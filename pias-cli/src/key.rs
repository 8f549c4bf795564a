//! `pias key`: make a master key, derive a group's registration key from it (SPEC.md §8.1).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, Subcommand};
use pias_proto::TransportAddr;
use pias_proto::auth::{MacKey, MasterKey};

use crate::target::parse_group;

/// `--help`'s description (clap replaces a subcommand struct's doc comment with its variant's, so it
/// goes in `before_long_help`, placed by [`crate::proxy::HELP_TEMPLATE`]).
const LONG_ABOUT: &str = "\nKeys: the operator's master key (every proxy holds it) and the per-group registration keys derived from it (each target holds only its group's).";

/// Keys: the operator's master key (every proxy holds it) and the per-group registration keys derived from
/// it (each target holds only its group's).
#[derive(Debug, ClapArgs)]
#[command(help_template = crate::proxy::HELP_TEMPLATE, before_help = "\nMore with --help.", before_long_help = LONG_ABOUT, after_help = "\
Examples:
  pias key generate > /etc/pias/master.key && chmod 600 /etc/pias/master.key
  (umask 077; pias key derive --master-file /etc/pias/master.key --group 10.99.0.1:53/udp > dns.key)
  pias target --group 10.99.0.1:53/udp --service 10.2.0.1:53 --key-file dns.key --registration 10.99.0.250")]
pub(crate) struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print a new random master key (64 hex digits, from the OS's random source).
    Generate,
    /// Print the registration key of one group (64 hex digits), for that group's targets' key file.
    Derive {
        /// File holding the master key (64 hex digits).
        #[arg(long, value_name = "FILE")]
        master_file: PathBuf,
        /// The group: IP:PORT/PROTO, e.g. 10.99.0.1:53/udp or [fd99::1]:443/tcp.
        #[arg(long, value_name = "GROUP", value_parser = parse_group)]
        group: TransportAddr,
    },
}

pub(crate) fn run(a: Args) -> anyhow::Result<()> {
    match a.cmd {
        Cmd::Generate => {
            let mut b = [0u8; 32];
            random_bytes(&mut b)?;
            println!("{}", MasterKey::from_bytes(b).to_hex());
        }
        Cmd::Derive { master_file, group } => {
            let m = read_master(&master_file)?;
            println!("{}", m.group_key(&group).to_hex());
        }
    }
    Ok(())
}

/// Reads a master key file.
pub(crate) fn read_master(p: &Path) -> anyhow::Result<MasterKey> {
    let s = std::fs::read_to_string(p).with_context(|| format!("cannot read master key {}", p.display()))?;
    MasterKey::from_hex(&s).map_err(|_| {
        anyhow::anyhow!(
            "{}: must hold 64 hex digits (make one with `pias key generate`)",
            p.display()
        )
    })
}

/// Reads a group key file.
pub(crate) fn read_group_key(p: &Path) -> anyhow::Result<MacKey> {
    let s = std::fs::read_to_string(p).with_context(|| format!("cannot read key file {}", p.display()))?;
    MacKey::from_hex(&s).map_err(|_| {
        anyhow::anyhow!(
            "{}: must hold 64 hex digits (make it with `pias key derive --master-file M --group G`)",
            p.display()
        )
    })
}

/// Refuses a key file that its group or others may read or write (SPEC.md §8.6): a key readable by another
/// account is a key that account holds. `insecure` (the operator said so explicitly) allows it. The error
/// names the file and the fix.
pub(crate) fn check_private(p: &Path, insecure: bool, override_hint: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p)
        .with_context(|| format!("cannot read key file {}", p.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 && !insecure {
        bail!(
            "{}: key file is accessible by group or others (mode {:03o}); run `chmod 600 {}` (or, to \
             accept this, {override_hint})",
            p.display(),
            mode & 0o777,
            p.display()
        );
    }
    Ok(())
}

/// Fills `b` from the OS's random source.
pub(crate) fn random_bytes(b: &mut [u8]) -> anyhow::Result<()> {
    let mut f = std::fs::File::open("/dev/urandom").context("open /dev/urandom")?;
    f.read_exact(b).context("read /dev/urandom")?;
    if b.len() >= 16 && b.iter().all(|&x| x == 0) {
        bail!("/dev/urandom returned zeros");
    }
    Ok(())
}

/// A random u64 (seeds). Falls back to the clock if the OS source is unavailable.
pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if random_bytes(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5eed, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_key_files_only() {
        use std::os::unix::fs::PermissionsExt;
        let p = std::env::temp_dir().join(format!("pias-key-{}.key", std::process::id()));
        std::fs::write(&p, "00").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_private(&p, false, "x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        check_private(&p, false, "x").unwrap();
        for mode in [0o644, 0o620, 0o602, 0o610] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = check_private(&p, false, "pass --insecure-key-file-permissions")
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("chmod 600 {}", p.display())), "{e}");
            assert!(e.contains(&format!("mode {mode:03o}")), "{e}");
            assert!(e.contains("--insecure-key-file-permissions"), "{e}");
            check_private(&p, true, "x").unwrap();
        }
        let _ = std::fs::remove_file(&p);
        assert!(
            check_private(&p, true, "x").is_err(),
            "a missing file is an error either way"
        );
    }

    #[test]
    fn derive_matches_the_core() {
        let m = MasterKey::from_bytes([7; 32]);
        let g = parse_group("10.99.0.1:53/udp").unwrap();
        assert_eq!(m.group_key(&g).to_hex().len(), 64);
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        random_bytes(&mut a).unwrap();
        random_bytes(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
