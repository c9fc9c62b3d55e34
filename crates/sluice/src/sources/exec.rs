//! `type = "exec"`: lines from a child process's stdout (and stderr if asked).
//!
//! With `restart = "always"` (default) a child that exits or fails to start is
//! started again after a backoff doubling from 1 s to 60 s, reset once a child has
//! run for a minute. At stop the child gets SIGTERM and its remaining output is
//! read to the end (it is data the child already produced), SIGKILL after 5 s.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::process::{Child, Command};
use tracing::{info, warn};

use super::{ReadEnd, default_max_line_bytes, read_lines};
use crate::config::{Check, Validate};
use crate::event::Origin;
use crate::framing::LineFramer;
use crate::topology::{ComponentError, SourceContext, Task};

/// When to start the child again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always, with exponential backoff.
    #[default]
    Always,
    /// Never: the source ends with the child.
    Never,
}

/// `[sources.NAME] type = "exec"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExecSourceConfig {
    /// Program and arguments (no shell).
    pub command: Vec<String>,
    /// Restart policy.
    #[serde(default)]
    pub restart: Restart,
    /// Also read the child's stderr as lines (else it goes to sluice's stderr).
    #[serde(default)]
    pub stderr: bool,
    /// Longer lines are cut to this many bytes (counted).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

impl Validate for ExecSourceConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if self.command.first().is_none_or(String::is_empty) {
            v.error("command", "needs at least the program to run");
        }
        if self.max_line_bytes == 0 {
            v.error("max_line_bytes", "must be at least 1");
        }
    }
}

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const KILL_AFTER: Duration = Duration::from_secs(5);

pub(super) fn build(config: ExecSourceConfig, cx: SourceContext) -> Result<Task, ComponentError> {
    Ok(Box::pin(run(config, cx)))
}

async fn run(config: ExecSourceConfig, cx: SourceContext) -> Result<(), ComponentError> {
    let mut backoff = BACKOFF_START;
    let cmdline = config.command.join(" ");
    loop {
        let started = Instant::now();
        match spawn(&config) {
            Ok(child) => {
                let stopped = supervise(child, &config, &cmdline, &cx).await?;
                if stopped {
                    return Ok(());
                }
            }
            Err(e) => warn!(command = %cmdline, error = %e, "Cannot start command."),
        }
        if config.restart == Restart::Never {
            return Ok(());
        }
        if started.elapsed() >= BACKOFF_MAX {
            backoff = BACKOFF_START;
        }
        info!(command = %cmdline, backoff_secs = backoff.as_secs(), "Restarting command after backoff.");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cx.shutdown.cancelled() => return Ok(()),
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn spawn(config: &ExecSourceConfig) -> std::io::Result<Child> {
    let mut cmd = Command::new(&config.command[0]);
    cmd.args(&config.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if config.stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .kill_on_drop(true);
    cmd.spawn()
}

/// Read the child to its end. Returns true when the source was stopped.
async fn supervise(
    mut child: Child,
    config: &ExecSourceConfig,
    cmdline: &str,
    cx: &SourceContext,
) -> Result<bool, ComponentError> {
    let pid = child.id();
    info!(command = %cmdline, pid, "Command started.");
    let origin = Arc::new(Origin {
        pid,
        command: Some(cmdline.to_owned()),
        ..Origin::default()
    });
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    if let Some(out) = &stdout {
        super::enlarge_pipe(out);
    }
    let terminate = async {
        cx.shutdown.cancelled().await;
        if let Some(pid) = pid {
            // SAFETY: plain syscall; a pid that already exited yields ESRCH, harmless.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        tokio::time::sleep(KILL_AFTER).await;
    };
    let max = config.max_line_bytes;
    let read_all = async {
        tokio::try_join!(
            read_stream(stdout, max, cx, &origin),
            read_stream(stderr, max, cx, &origin)
        )
    };
    tokio::pin!(read_all);
    let result = tokio::select! {
        r = &mut read_all => r,
        _ = terminate => {
            warn!(command = %cmdline, "Command did not exit after SIGTERM; killing it.");
            let _ = child.start_kill();
            read_all.await
        }
    };
    let status = child.wait().await;
    let stopped = cx.shutdown.is_cancelled();
    match (&result, status) {
        (Err(e), _) => warn!(command = %cmdline, error = %e, "Reading command output failed."),
        (Ok(_), Ok(s)) if s.success() || stopped => {
            info!(command = %cmdline, status = %s, "Command exited.")
        }
        (Ok(_), Ok(s)) => warn!(command = %cmdline, status = %s, "Command exited with failure."),
        (Ok(_), Err(e)) => warn!(command = %cmdline, error = %e, "Waiting for command failed."),
    }
    Ok(stopped)
}

/// Read one of the child's streams: until stop, then (the child having been told
/// to stop) on to its end, so nothing it wrote is left behind.
async fn read_stream<R: tokio::io::AsyncRead + Unpin>(
    stream: Option<R>,
    max_line_bytes: usize,
    cx: &SourceContext,
    origin: &Arc<Origin>,
) -> std::io::Result<ReadEnd> {
    let Some(mut stream) = stream else {
        return Ok(ReadEnd::Eof);
    };
    let mut framer = LineFramer::new(max_line_bytes);
    let end = read_lines(
        &mut stream,
        &mut framer,
        cx,
        Some(origin),
        Some(&cx.shutdown),
    )
    .await?;
    if end == ReadEnd::Stopped {
        read_lines(&mut stream, &mut framer, cx, Some(origin), None).await?;
    }
    Ok(end)
}
