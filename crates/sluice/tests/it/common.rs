//! Shared helpers: run the real daemon with a config, wait on conditions.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Path of the binary under test.
/// This package's directory, read when the test runs (cargo sets it), so a
/// test binary reused from a warm target dir built in another clone still
/// finds the files of this one.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

pub fn sluice_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// A running `sluice run` with its config in a temp dir.
pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
    stderr_path: PathBuf,
}

impl Daemon {
    /// Write `config` (with `$DIR` replaced by `dir`) and start sluice on it.
    pub fn start(dir: &Path, config: &str) -> Daemon {
        Self::start_with(dir, config, &[])
    }

    /// [`Daemon::start`] with extra environment variables and arguments after
    /// `run --config FILE`.
    pub fn start_with(dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_args(dir, config, env, &[])
    }

    /// [`Daemon::start_with`] and extra `sluice run` arguments.
    pub fn start_args(dir: &Path, config: &str, env: &[(&str, &str)], args: &[&str]) -> Daemon {
        let text = config.replace("$DIR", dir.to_str().unwrap());
        let cfg = dir.join("sluice.toml");
        std::fs::write(&cfg, text).unwrap();
        let stderr_path = dir.join("sluice.stderr");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let child = Command::new(sluice_bin())
            .args(["run", "--config"])
            .arg(&cfg)
            .args(args)
            .envs(env.iter().copied())
            .env("SLUICE_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start sluice");
        Daemon {
            child,
            dir: dir.to_owned(),
            stderr_path,
        }
    }

    /// Send a signal.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain syscall on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// Wait for exit, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "sluice did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(30))
    }

    /// What the daemon logged so far.
    pub fn stderr(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Size of a file, 0 when missing.
pub fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Line `i` of the standard test stream: 99 digits and a newline (100 bytes).
pub fn line(i: u64) -> String {
    format!("{i:099}\n")
}

/// The first `n` lines of the standard stream.
pub fn lines(n: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n as usize * 100);
    for i in 0..n {
        v.extend_from_slice(line(i).as_bytes());
    }
    v
}

/// An awk program printing the standard stream of `n` lines (no Rust in the child).
pub fn awk_generator(n: u64) -> String {
    format!(r#"["awk", "BEGIN {{ for (i = 0; i < {n}; i++) printf \"%099d\\n\", i }}"]"#)
}

/// CA, server (localhost / 127.0.0.1) and client certificates in `dir`, by openssl.
pub fn make_certs(dir: &Path) {
    let sh = format!(
        r#"set -e
cd '{d}'
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca 2>/dev/null
for n in server client; do
  openssl req -newkey rsa:2048 -nodes -keyout $n.key -out $n.csr -subj /CN=$n 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n' > $n.ext
  openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $n.crt -days 2 -extfile $n.ext 2>/dev/null
done
"#,
        d = dir.display()
    );
    let st = Command::new("sh")
        .arg("-c")
        .arg(&sh)
        .status()
        .expect("run openssl");
    assert!(st.success(), "openssl failed to make test certificates");
}
