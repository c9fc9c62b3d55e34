//! File data through a handle: reads into a per-thread buffer, and writes (to the
//! backing file, then captured in the order the writer made them).

use std::cell::RefCell;

use fuser::{FileHandle, INodeNo, ReplyData, ReplyWrite, Request, WriteFlags};

use super::CaptureFs;
use super::convert::{errno, proc_path};

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl CaptureFs {
    pub(super) fn do_read(&self, fh: FileHandle, offset: u64, size: u32, reply: ReplyData) {
        let f = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        self.counters.read_request();
        let size = size as usize;
        READ_BUF.with_borrow_mut(|buf| {
            if buf.len() < size {
                buf.resize(size, 0);
            }
            let mut done = 0;
            while done < size {
                match rustix::io::pread(&f.file, &mut buf[done..size], offset + done as u64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) if done == 0 => return reply.error(errno(e)),
                    Err(_) => break,
                }
            }
            reply.data(&buf[..done]);
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn do_write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        reply: ReplyWrite,
    ) {
        let page_cache = write_flags.contains(WriteFlags::FUSE_WRITE_CACHE);
        let f = match self.file(fh) {
            Ok(f) => f,
            Err(_) if page_cache => {
                return match self.write_unknown_handle(req, ino, offset, data) {
                    Ok(n) => reply.written(n as u32),
                    Err(e) => reply.error(e),
                };
            }
            Err(e) => return reply.error(e),
        };
        if self.killpriv && write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            if let Err(e) = super::writeback::kill_privs(&proc_path(&f.file), true) {
                return reply.error(e);
            }
        }
        let changed = if page_cache && self.writeback {
            self.changed_span(&f, offset, data)
        } else {
            0..data.len()
        };
        let ordered = page_cache && self.writeback;
        if ordered {
            self.order_start(&f);
        }
        match self.write_backing(&f, offset, data, page_cache) {
            Ok((n, at)) => {
                // Enqueue before replying: the writer (and the next write to this inode)
                // waits for the reply, so per-file order is the queue order (in
                // writeback mode restored by fs/order.rs).
                let span = changed.start.min(n)..changed.end.min(n);
                let changed_at = at + span.start as u64;
                if ordered {
                    self.capture_in_order(req, &f, at, n as u64, changed_at, &data[span]);
                } else {
                    self.capture(req, &f, changed_at, &data[span], page_cache);
                }
                reply.written(n as u32);
            }
            Err(e) => {
                if self.target(&f).is_some() {
                    self.counters.error();
                }
                reply.error(e);
            }
        }
    }
}
