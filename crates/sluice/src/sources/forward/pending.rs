//! `limits.max_pending_bytes`: one budget for the requests being received on all
//! connections of a forward source, so thousands of connections that each start a
//! large request cannot make the daemon buffer `max_connections × max_frame_bytes`.
//!
//! Each connection's read buffer is charged for what it asks for beyond its first
//! [`FREE_BYTES`] (so a client sending requests of a few KiB never waits on the
//! budget). A connection that needs more while the budget is used up stops reading
//! (the client feels TCP back-pressure) until bytes are freed; while the budget
//! stays used up, every [`EVICT_AFTER`] that a waiter goes without room, it closes
//! the connection whose partial request started earliest (often a sender that
//! stopped halfway), counted in `pending_closed`. A request that is complete and
//! waits for room in the sinks' buffers is charged too ([`Hold::pin`]), without
//! waiting: it is already in memory.
//!
//! Invariant: `used` is the sum of every live [`Hold`]'s charge and pins; a `Hold`
//! gives all of it back when dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Bytes of a connection's read buffer that are not charged: room for small
/// requests, so healthy clients are served whatever the budget.
pub(crate) const FREE_BYTES: usize = 8 << 10;
/// How long a connection waits for room before closing the oldest partial request.
pub(crate) const EVICT_AFTER: Duration = Duration::from_secs(1);

/// The budget shared by the connections of one source.
pub(crate) struct Pending {
    limit: usize,
    inner: Mutex<Inner>,
    freed: Notify,
    /// Connections closed to free the budget.
    pub closed: AtomicU64,
}

#[derive(Default)]
struct Inner {
    used: usize,
    next_id: u64,
    /// Connections with a charged partial request: when it started, and how to
    /// close them.
    partial: HashMap<u64, (Instant, CancellationToken)>,
}

/// The connection was closed to free the budget.
#[derive(Debug)]
pub(crate) struct Evicted;

impl Pending {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Pending {
            limit,
            inner: Mutex::default(),
            freed: Notify::new(),
            closed: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `max_pending_bytes`.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.lock().used
    }

    /// A connection's handle on the budget.
    pub(crate) fn hold(self: &Arc<Self>) -> Hold {
        let id = {
            let mut g = self.lock();
            g.next_id += 1;
            g.next_id
        };
        Hold {
            pending: self.clone(),
            id,
            charged: 0,
            pinned: 0,
            closed: CancellationToken::new(),
        }
    }

    fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            self.lock().used -= bytes;
            self.freed.notify_waiters();
        }
    }

    /// Close the connection whose partial request started earliest.
    fn evict_oldest(&self) {
        let victim = {
            let mut g = self.lock();
            let oldest = g.partial.iter().min_by_key(|(_, (since, _))| *since);
            let Some(id) = oldest.map(|(id, _)| *id) else {
                return;
            };
            g.partial.remove(&id).map(|(_, token)| token)
        };
        if let Some(token) = victim {
            self.closed.fetch_add(1, Relaxed);
            token.cancel();
        }
    }
}

/// One connection's charge against the budget; gives it back when dropped.
pub(crate) struct Hold {
    pending: Arc<Pending>,
    id: u64,
    /// Charged for the read buffer (a partial request).
    charged: usize,
    /// Charged for complete requests waiting for the sinks' buffers.
    pinned: usize,
    closed: CancellationToken,
}

impl Hold {
    /// Resolves when the budget closed this connection.
    pub(crate) fn evicted(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.closed.cancelled()
    }

    /// The read buffer is about to hold `buffer` bytes of a request that started
    /// at `since`: charge what passes [`FREE_BYTES`], waiting while the budget is
    /// used up. `Err` when this connection was closed to free the budget.
    pub(crate) async fn charge(&mut self, buffer: usize, since: Instant) -> Result<(), Evicted> {
        let want = buffer.saturating_sub(FREE_BYTES);
        if want <= self.charged {
            return Ok(());
        }
        let p = self.pending.clone();
        let mut deadline = Instant::now() + EVICT_AFTER;
        loop {
            if self.closed.is_cancelled() {
                return Err(Evicted);
            }
            let notified = {
                let mut g = p.lock();
                let more = want - self.charged;
                if g.used + more <= p.limit {
                    g.used += more;
                    self.charged = want;
                    g.partial.insert(self.id, (since, self.closed.clone()));
                    return Ok(());
                }
                // Waiting counts as a partial request too, so it can be chosen.
                if self.charged > 0 {
                    g.partial.insert(self.id, (since, self.closed.clone()));
                }
                p.freed.notified()
            };
            tokio::select! {
                _ = notified => {}
                _ = self.closed.cancelled() => return Err(Evicted),
                _ = tokio::time::sleep_until(deadline) => {
                    p.evict_oldest();
                    deadline = Instant::now() + EVICT_AFTER;
                }
            }
        }
    }

    /// The read buffer holds no partial request any more and asks for `buffer`
    /// bytes: give back the charge above that.
    pub(crate) fn settle(&mut self, buffer: usize) {
        let keep = buffer.saturating_sub(FREE_BYTES).min(self.charged);
        let back = self.charged - keep;
        self.charged = keep;
        if keep == 0 {
            self.pending.lock().partial.remove(&self.id);
        }
        self.pending.give_back(back);
    }

    /// Charge a complete request of `bytes` without waiting (it is in memory
    /// already) until [`Hold::unpin`].
    pub(crate) fn pin(&mut self, bytes: usize) {
        self.pending.lock().used += bytes;
        self.pinned += bytes;
    }

    /// Give back every pin.
    pub(crate) fn unpin(&mut self) {
        let back = std::mem::take(&mut self.pinned);
        self.pending.give_back(back);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.pending.lock().partial.remove(&self.id);
        self.pending.give_back(self.charged + self.pinned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_buffers_are_free_and_a_full_budget_makes_the_next_wait() {
        let p = Pending::new(100_000);
        let mut a = p.hold();
        let mut b = p.hold();
        let now = Instant::now();
        a.charge(FREE_BYTES, now).await.unwrap();
        assert_eq!(p.used(), 0);
        a.charge(FREE_BYTES + 100_000, now).await.unwrap();
        assert_eq!(p.used(), 100_000);
        // b waits for room; a settling its buffer frees it.
        let waiter = tokio::spawn(async move {
            b.charge(FREE_BYTES + 50_000, Instant::now())
                .await
                .map(|()| b)
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        a.settle(FREE_BYTES);
        let b = waiter.await.unwrap().unwrap();
        assert_eq!(p.used(), 50_000);
        drop(b);
        assert_eq!(p.used(), 0);
    }

    #[tokio::test]
    async fn a_waiter_closes_the_oldest_partial_request() {
        let p = Pending::new(100_000);
        let mut old = p.hold();
        old.charge(FREE_BYTES + 100_000, Instant::now())
            .await
            .unwrap();
        let mut new = p.hold();
        let waiter = tokio::spawn(async move {
            new.charge(FREE_BYTES + 10_000, Instant::now())
                .await
                .map(|()| new)
        });
        // After EVICT_AFTER without room, the waiter closes the oldest.
        old.evicted().await;
        assert_eq!(p.closed.load(Relaxed), 1);
        drop(old);
        let new = waiter.await.unwrap().unwrap();
        assert_eq!(p.used(), 10_000);
        drop(new);
        assert_eq!(p.used(), 0);
    }

    #[tokio::test]
    async fn pins_are_charged_without_waiting() {
        let p = Pending::new(10);
        let mut a = p.hold();
        a.pin(1_000);
        assert_eq!(p.used(), 1_000);
        a.unpin();
        assert_eq!(p.used(), 0);
    }
}
