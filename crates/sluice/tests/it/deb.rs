//! The Debian package on this machine: scripts/build-deb.sh packages the test
//! profile's binary (the release .deb is the same recipe, `scripts/build-deb.sh`,
//! run by CI: a release build does not fit the suite's time), `dpkg -i` installs
//! it, the installed binary reports its version and validates the packaged
//! config, the conffile, unit, man page, user and state directory are in place,
//! and `dpkg --purge` removes it all.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{manifest_dir, sluice_bin};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Purges the package even when an assertion fails half-way.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "sluice"]).output();
    }
}

#[test]
fn deb_installs_runs_validates_and_purges() {
    // The binary under test is <target>/debug/sluice.
    let target = Path::new(sluice_bin()).parent().unwrap().parent().unwrap();
    let root = manifest_dir().join("../..");
    run(Command::new("bash")
        .arg(root.join("scripts/build-deb.sh"))
        .arg("dev")
        .env("CARGO_TARGET_DIR", target)
        .env("SLUICE_DEB_NO_BUILD", "1"));
    let deb = target.join(format!(
        "debian/sluice_{}-1_amd64.deb",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(deb.exists(), "{deb:?} not built");

    let _installed = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    let version = run(Command::new("/usr/bin/sluice").arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("sluice {}", env!("CARGO_PKG_VERSION"))
    );
    run(Command::new("/usr/bin/sluice").args(["validate", "--config", "/etc/sluice/sluice.toml"]));
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f", "${Conffiles}", "sluice"]));
    assert!(
        String::from_utf8_lossy(&conffiles.stdout).contains("/etc/sluice/sluice.toml"),
        "the config is not a conffile"
    );
    for f in [
        "/usr/lib/systemd/system/sluice.service",
        "/usr/share/man/man1/sluice.1.gz",
        "/usr/share/bash-completion/completions/sluice",
    ] {
        assert!(Path::new(f).exists(), "{f} not installed");
    }
    run(Command::new("systemd-analyze").args([
        "verify",
        "--man=no",
        "/usr/lib/systemd/system/sluice.service",
    ]));
    // The unit's user and its state directory.
    run(Command::new("getent").args(["passwd", "sluice"]));
    let owner = run(Command::new("stat").args(["-c", "%U %a", "/var/lib/sluice"]));
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), "sluice 750");

    run(Command::new("dpkg").args(["--purge", "sluice"]));
    for f in [
        "/usr/bin/sluice",
        "/etc/sluice/sluice.toml",
        "/var/lib/sluice",
    ] {
        assert!(!Path::new(f).exists(), "{f} left after purge");
    }
}
