//! Opening a disk buffer: recover the WAL, log what recovery found, set up the
//! shared state and start the WAL thread.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use ::wal::Wal;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::accounts::Accounts;
use super::receiver::Limiter;
use super::shared::{Inbox, Outbox, Shared};
use super::{
    BACKOFF_MIN, DiskBufferError, DiskBufferHandle, DiskOptions, DiskReceiver, DiskSender,
    DiskStats, worker,
};
use crate::metrics::Counters;

/// Open (and recover) a sink's disk buffer and start its WAL thread.
pub fn open(
    sink: &str,
    opts: DiskOptions,
    counters: Arc<Counters>,
) -> Result<(DiskSender, DiskReceiver, DiskBufferHandle), DiskBufferError> {
    let wal = Wal::open(&opts.dir, opts.wal_options()).map_err(|source| DiskBufferError::Open {
        dir: opts.dir.clone(),
        source,
    })?;
    start(sink, opts, counters, wal)
}

/// Start a disk buffer on a `Wal` opened with `opts.wal_options()` (tests
/// open it on a storage whose sync they control).
pub(super) fn start(
    sink: &str,
    opts: DiskOptions,
    counters: Arc<Counters>,
    mut wal: Wal,
) -> Result<(DiskSender, DiskReceiver, DiskBufferHandle), DiskBufferError> {
    let recovered = super::chunks::RecoveredChunks::scan(&mut wal, &opts.dir);
    let max_record = opts.pack_bytes();
    let max_alone = opts.wal_options().max_record_bytes as usize;
    log_recovery(&opts, &wal);
    let accounts = match opts.tenant_series {
        Some(max) => Some(Accounts::open(&opts.dir, max, &mut wal).map_err(|source| {
            DiskBufferError::Accounts {
                dir: opts.dir.clone(),
                source,
            }
        })?),
        None => None,
    };
    let shared = Arc::new(Shared {
        name: sink.into(),
        max_record,
        max_alone,
        counters,
        stats: DiskStats::default(),
        inbox: Mutex::new(Inbox {
            senders: 1,
            receiver_alive: true,
            ..Inbox::default()
        }),
        work: Condvar::new(),
        space: Notify::new(),
        outbox: Mutex::new(Outbox {
            ready: VecDeque::new(),
            ready_events: 0,
            retry: BTreeMap::new(),
            retry_events: 0,
            retry_at: Instant::now(),
            backoff: BACKOFF_MIN,
            inflight: BTreeMap::new(),
            solo: None,
            group_retry: false,
            suspect: None,
            probe: None,
            verified: false,
            senders_gone: false,
            caught_up: false,
            drain_over: false,
            failed: false,
            receiver_alive: true,
            already_there: Default::default(),
        }),
        data_ready: Notify::new(),
        held_records: AtomicUsize::new(0),
        held_bytes: AtomicUsize::new(0),
        done: AtomicBool::new(false),
        book: accounts.as_ref().map(|a| a.book.clone()),
        hand_off: accounts.as_ref().map(|a| a.hand_off.clone()),
        recovered,
        opts,
    });
    shared
        .stats
        .replayed_records
        .store(wal.recovery().unacked_records, Relaxed);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let thread = worker::Worker::new(shared.clone(), wal, accounts);
    std::thread::Builder::new()
        .name(format!("wal-{sink}"))
        .spawn(move || {
            thread.run();
            let _ = done_tx.send(());
        })
        .map_err(|source| DiskBufferError::Thread {
            dir: shared.opts.dir.clone(),
            source,
        })?;
    let limiter = shared.opts.replay_events_per_sec.map(|r| Limiter {
        per_sec: r as f64,
        next: Instant::now(),
    });
    Ok((
        DiskSender {
            shared: shared.clone(),
        },
        DiskReceiver {
            shared: shared.clone(),
            limiter,
            last_seq: None,
            last_bytes: 0,
        },
        DiskBufferHandle {
            shared,
            done: Some(done_rx),
        },
    ))
}

fn log_recovery(opts: &DiskOptions, wal: &Wal) {
    let r = wal.recovery();
    let dir = opts.dir.display();
    if let Some(d) = &r.truncated {
        warn!(
            dir = %dir, segment = %d.path.display(), offset = d.offset, bytes = d.bytes, corruption = %d.corruption,
            "Disk buffer: torn or corrupt tail cut off (expected after a crash)."
        );
    }
    for d in &r.skipped {
        error!(
            dir = %dir, segment = %d.path.display(), offset = d.offset, bytes = d.bytes, corruption = %d.corruption,
            "Disk buffer: damaged segment; its records from this offset on are lost."
        );
    }
    if r.checkpoint_invalid {
        warn!(dir = %dir, "Disk buffer: invalid checkpoint ignored; acknowledged records may be delivered again.");
    }
    info!(
        dir = %dir,
        segments = r.segments,
        unacked_records = r.unacked_records,
        disk_bytes = wal.disk_bytes(),
        max_bytes = opts.max_bytes,
        when_full = opts.when_full.name(),
        fsync = if opts.fsync.is_some() { "interval" } else { "always" },
        "Disk buffer opened; unacknowledged records will be replayed."
    );
}
