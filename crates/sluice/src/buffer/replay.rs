//! Replaying a disk buffer through the sinks of a config (`sluice buffer
//! replay`; the command and its progress bar are in `crate::commands::buffer`).
//!
//! The directory's lock is taken (sluice must not be running on it); every
//! unacknowledged record is read, decoded and sent to every chosen sink with
//! end-to-end acknowledgements, at most [`WINDOW`] records in flight. A record
//! is acknowledged in the buffer once every sink delivered it, so an
//! interrupted replay resumes where it stopped (records after a failed one may
//! be delivered again). Records that do not decode stay in the buffer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ::wal::{Fsync, Options, Wal};
use bytes::Bytes;

use super::disk::{chain, decode};
use crate::ack::{AckStatus, AckToken};
use crate::config::{Config, SinkConfig};
use crate::event::EventBatch;

/// Records in flight to the sinks at most during a replay.
pub const WINDOW: usize = 256;

/// Open a buffer directory for replay: its own lock, no size cap, records up to
/// 16 MiB.
pub fn open(dir: &Path) -> Result<Wal, String> {
    let opts = Options {
        fsync: Fsync::Interval(Duration::from_secs(1)),
        segment_bytes: 64 << 20,
        max_bytes: u64::MAX / 2,
        max_record_bytes: 16 << 20,
    };
    Wal::open(dir, opts).map_err(|e| format!("cannot open buffer {}: {}", dir.display(), chain(&e)))
}

/// What a replay has done so far.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Unacknowledged records when it started.
    pub total: u64,
    /// Records every sink delivered (acknowledged in the buffer).
    pub records: u64,
    /// Events in those records.
    pub events: u64,
    /// Record bytes read.
    pub bytes: u64,
    /// Records a sink did not deliver, or that could not be read.
    pub failed: u64,
    /// Records that do not decode (left in the buffer).
    pub undecodable: u64,
    /// Records left in the buffer at the end.
    pub left: u64,
}

impl Tally {
    /// Whether everything was delivered and nothing is left.
    pub fn complete(&self) -> bool {
        self.failed == 0 && self.undecodable == 0 && self.left == 0
    }
}

/// What a replay tells its caller as it goes.
pub enum Report<'a> {
    /// About to start: the sinks were built.
    Started { total: u64, sinks: &'a [String] },
    /// A record was resolved (delivered or failed).
    Progress(&'a Tally),
    /// Something went wrong with one record, or a sink; the replay goes on.
    Problem(String),
}

/// Replay `wal` into `sinks` (built from `cfg`); returns the final tally.
pub async fn run(
    mut wal: Wal,
    cfg: Config,
    sinks: Vec<SinkConfig>,
    mut report: impl FnMut(Report<'_>),
) -> anyhow::Result<Tally> {
    let mut tally = Tally {
        total: wal.recovery().unacked_records,
        ..Tally::default()
    };
    let set = crate::sinks::set::SinkSet::build(cfg, &sinks).await?;
    report(Report::Started {
        total: tally.total,
        sinks: set.names(),
    });
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, AckStatus, usize)>();
    let mut inflight = 0usize;
    let mut reading = true;
    while reading || inflight > 0 {
        while reading && inflight < WINDOW {
            let record = match wal.read_next() {
                Ok(Some(r)) => r,
                Ok(None) => {
                    reading = false;
                    break;
                }
                Err(e) => {
                    report(Report::Problem(chain(&e)));
                    tally.failed += 1;
                    continue;
                }
            };
            let bytes = record.payload.len();
            let events = match decode(Bytes::from(record.payload)) {
                Ok(ev) => Arc::new(ev),
                Err(e) => {
                    report(Report::Problem(format!(
                        "record {} does not decode ({e}); left in the buffer",
                        record.seq
                    )));
                    tally.undecodable += 1;
                    continue;
                }
            };
            let n = events.len();
            let seq = record.seq;
            let tx = ack_tx.clone();
            let token = AckToken::with_callback(move |st| {
                let _ = tx.send((seq, st, n));
            });
            set.send(EventBatch { events, ack: token }).await;
            inflight += 1;
            tally.bytes += bytes as u64;
        }
        if inflight == 0 {
            break;
        }
        let Some((seq, status, n)) = ack_rx.recv().await else {
            break;
        };
        inflight -= 1;
        if status == AckStatus::Delivered {
            if let Err(e) = wal.ack(seq) {
                report(Report::Problem(format!("acknowledging record {seq}: {e}")));
            }
            tally.records += 1;
            tally.events += n as u64;
        } else {
            tally.failed += 1;
        }
        report(Report::Progress(&tally));
    }
    for p in set.finish().await {
        report(Report::Problem(p));
    }
    tally.left = wal.unacked_records();
    if let Err(e) = wal.close() {
        report(Report::Problem(format!(
            "closing the buffer: {}",
            chain(&e)
        )));
    }
    Ok(tally)
}
