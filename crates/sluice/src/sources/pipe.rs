//! `type = "pipe"`: lines from a named FIFO.
//!
//! The FIFO is created (mode 0600) when missing, with its missing parent
//! directories (see [`crate::dirs`]); an existing non-FIFO path is a build error. It is opened read-write, so the source itself counts as a writer:
//! the pipe never reports end-of-file when writers come and go, which is the
//! "reopen on EOF" behaviour without the reopen race. It runs until stopped.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use serde::Deserialize;

use super::{default_max_line_bytes, read_lines};
use crate::config::{Check, Validate};
use crate::framing::LineFramer;
use crate::topology::{ComponentError, SourceContext, Task};

/// `[sources.NAME] type = "pipe"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PipeSourceConfig {
    /// Path of the FIFO.
    pub path: PathBuf,
    /// Longer lines are cut to this many bytes (counted).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

impl Validate for PipeSourceConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if self.path.as_os_str().is_empty() {
            v.error("path", "must not be empty");
        }
        if self.max_line_bytes == 0 {
            v.error("max_line_bytes", "must be at least 1");
        }
    }
}

fn ensure_fifo(path: &std::path::Path) -> Result<(), ComponentError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_fifo() => Ok(()),
        Ok(_) => Err(ComponentError::Other(format!(
            "{} exists and is not a FIFO",
            path.display()
        ))),
        Err(e) => {
            // Missing parents are made; a file in their place is named.
            if let Some(parent) = path.parent() {
                crate::dirs::ensure(parent, format!("parent of FIFO {}", path.display()))?;
            }
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(ComponentError::io(
                    format!("checking {}", path.display()),
                    e,
                ));
            }
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
                ComponentError::Other(format!("{}: path contains a NUL byte", path.display()))
            })?;
            // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
            let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
            if rc != 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::AlreadyExists {
                    let dir = path.parent().unwrap_or(std::path::Path::new(""));
                    return Err(ComponentError::Other(format!(
                        "cannot create FIFO {}: {}",
                        path.display(),
                        crate::dirs::explain(dir, &err)
                    )));
                }
            }
            Ok(())
        }
    }
}

pub(super) async fn build(
    config: PipeSourceConfig,
    cx: SourceContext,
) -> Result<Task, ComponentError> {
    ensure_fifo(&config.path)?;
    let mut rx = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&config.path)
        .map_err(|e| ComponentError::io(format!("opening FIFO {}", config.path.display()), e))?;
    super::enlarge_pipe(&rx);
    tracing::info!(path = %config.path.display(), "Reading FIFO.");
    Ok(Box::pin(async move {
        let mut framer = LineFramer::new(config.max_line_bytes);
        read_lines(&mut rx, &mut framer, &cx, None, Some(&cx.shutdown))
            .await
            .map_err(|e| {
                ComponentError::io(format!("reading FIFO {}", config.path.display()), e)
            })?;
        Ok(())
    }))
}
