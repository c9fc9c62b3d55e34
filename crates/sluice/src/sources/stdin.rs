//! `type = "stdin"`: lines from standard input; the source ends at end of input.

use serde::Deserialize;

use super::{ReadEnd, default_max_line_bytes, read_lines};
use crate::config::{Check, Validate};
use crate::framing::LineFramer;
use crate::topology::{ComponentError, SourceContext, Task};

/// `[sources.NAME] type = "stdin"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StdinSourceConfig {
    /// Longer lines are cut to this many bytes (counted).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

impl Validate for StdinSourceConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if self.max_line_bytes == 0 {
            v.error("max_line_bytes", "must be at least 1");
        }
    }
}

pub(super) fn build(config: StdinSourceConfig, cx: SourceContext) -> Result<Task, ComponentError> {
    Ok(Box::pin(async move {
        let mut stdin = tokio::io::stdin();
        let mut framer = LineFramer::new(config.max_line_bytes);
        let end = read_lines(&mut stdin, &mut framer, &cx, None, Some(&cx.shutdown))
            .await
            .map_err(|e| ComponentError::io("reading stdin", e))?;
        if end == ReadEnd::Eof {
            tracing::info!("End of standard input.");
        }
        Ok(())
    }))
}
