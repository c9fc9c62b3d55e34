//! Sinks: where events leave. Each kind lives in its own module with its config.
//!
//! A sink takes batches from its own buffer, delivers them under its guarantee,
//! and resolves each batch's acknowledgement: `Delivered` only once the data is
//! where the guarantee says (written and, for tracked batches, fsynced for files).

pub mod archive;
pub mod file;
pub mod forward;
pub mod kafka;
pub mod null;
pub mod set;
pub mod stdout;

use crate::config::{SinkConfig, SinkKind};
use crate::encoding::Encoding;
use crate::topology::{ComponentError, SinkContext, Task};

/// Build a sink's task: every fallible start-up act happens here.
pub async fn build(config: &SinkConfig, cx: SinkContext) -> Result<Task, ComponentError> {
    let encoding = config.encoding.unwrap_or(Encoding::Raw);
    match &config.kind {
        SinkKind::Stdout(_) => Ok(Box::pin(stdout::run(encoding, cx))),
        SinkKind::Null(_) => Ok(Box::pin(null::run(cx))),
        SinkKind::File(c) => file::build(c.clone(), encoding, cx),
        SinkKind::Kafka(c) => kafka::build(c.clone(), encoding, cx),
        SinkKind::Forward(c) => forward::build(c.clone(), cx),
        SinkKind::Archive(c) => {
            let data_dir = cx.reload.borrow().global.data_dir.clone();
            archive::build(c.clone(), config.encoding, cx, &data_dir)
        }
    }
}
