//! Copies of captured payloads without a page fault per large write.
//!
//! A capture must copy the request data (fuser reuses its buffer). For large writes a
//! fresh allocation is served by `mmap` and faults in every page on first touch, which
//! costs more than the copy itself (1 MiB: 256 faults). Large payload buffers are
//! therefore recycled: the `Bytes` handed out owns a pooled `Vec` that goes back to the
//! pool when the consumer drops the last reference.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

/// Payloads smaller than this are plain heap copies (cheap, no faults to speak of).
const POOLED_MIN: usize = 64 << 10;
/// Largest pooled buffer (the kernel's `max_write` is 1 MiB unless raised).
const POOLED_MAX: usize = 16 << 20;
/// Bytes kept idle in the pool at most.
const POOL_BUDGET: usize = 32 << 20;

#[derive(Default)]
pub(crate) struct BufferPool {
    inner: Mutex<PoolInner>,
}

#[derive(Default)]
struct PoolInner {
    /// Free buffers per power-of-two capacity class.
    free: Vec<(usize, Vec<Vec<u8>>)>,
    idle_bytes: usize,
}

impl BufferPool {
    /// An owned copy of `data`.
    pub(crate) fn copy(self: &Arc<Self>, data: &[u8]) -> Bytes {
        if data.len() < POOLED_MIN || data.len() > POOLED_MAX {
            return Bytes::copy_from_slice(data);
        }
        let class = data.len().next_power_of_two();
        let mut buf = self
            .take(class)
            .unwrap_or_else(|| Vec::with_capacity(class));
        buf.extend_from_slice(data);
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        })
    }

    fn take(&self, class: usize) -> Option<Vec<u8>> {
        let mut p = self.inner.lock();
        let (_, list) = p.free.iter_mut().find(|(c, _)| *c == class)?;
        let buf = list.pop()?;
        p.idle_bytes -= class;
        Some(buf)
    }

    fn give(&self, mut buf: Vec<u8>) {
        let class = buf.capacity();
        if !class.is_power_of_two() {
            return;
        }
        buf.clear();
        let mut p = self.inner.lock();
        if p.idle_bytes + class > POOL_BUDGET {
            return;
        }
        p.idle_bytes += class;
        match p.free.iter_mut().find(|(c, _)| *c == class) {
            Some((_, list)) => list.push(buf),
            None => p.free.push((class, vec![buf])),
        }
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_are_recycled_and_small_ones_copied() {
        let pool = Arc::new(BufferPool::default());
        let small = pool.copy(b"tiny");
        assert_eq!(&small[..], b"tiny");
        let data = vec![7u8; 1 << 20];
        let a = pool.copy(&data);
        assert_eq!(&a[..], &data[..]);
        let first = a.as_ptr();
        drop(a);
        assert_eq!(pool.inner.lock().idle_bytes, 1 << 20);
        let b = pool.copy(&data[..700_000]);
        assert_eq!(
            b.as_ptr(),
            first,
            "same buffer reused for the same size class"
        );
        assert_eq!(b.len(), 700_000);
        let c = b.clone();
        drop(b);
        assert_eq!(
            pool.inner.lock().idle_bytes,
            0,
            "still referenced by a clone"
        );
        drop(c);
        assert_eq!(pool.inner.lock().idle_bytes, 1 << 20);
    }
}
