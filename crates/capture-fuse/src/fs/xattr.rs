//! Extended attributes, read and written through `/proc/self/fd/N` of the
//! node's `O_PATH` descriptor.

use std::ffi::OsStr;

use fuser::{Errno, FileType, INodeNo, ReplyEmpty, ReplyXattr};

use super::convert::{errno, proc_path};
use super::{CaptureFs, R};

impl CaptureFs {
    pub(super) fn do_setxattr(
        &self,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        reply: ReplyEmpty,
    ) {
        let r = self.xattr_path(ino).and_then(|p| {
            rustix::fs::setxattr(
                p.as_str(),
                name,
                value,
                rustix::fs::XattrFlags::from_bits_retain(flags as u32),
            )
            .map_err(errno)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn do_getxattr(&self, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let p = match self.xattr_path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        if size == 0 {
            return match rustix::fs::getxattr_query(p.as_str(), name) {
                Ok(n) => reply.size(n as u32),
                Err(e) => reply.error(errno(e)),
            };
        }
        let mut buf = vec![0u8; size as usize];
        match rustix::fs::getxattr(p.as_str(), name, &mut buf[..]) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(e)),
        }
    }

    pub(super) fn do_listxattr(&self, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let p = match self.xattr_path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        if size == 0 {
            return match rustix::fs::listxattr_query(p.as_str()) {
                Ok(n) => reply.size(n as u32),
                Err(e) => reply.error(errno(e)),
            };
        }
        let mut buf = vec![0u8; size as usize];
        match rustix::fs::listxattr(p.as_str(), &mut buf[..]) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(e)),
        }
    }

    pub(super) fn do_removexattr(&self, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .xattr_path(ino)
            .and_then(|p| rustix::fs::removexattr(p.as_str(), name).map_err(errno));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn xattr_path(&self, ino: INodeNo) -> R<String> {
        let inode = self.inode(ino)?;
        if inode.kind == FileType::Symlink {
            // Only reachable through the magic link, which would follow the symlink.
            return Err(Errno::EOPNOTSUPP);
        }
        Ok(proc_path(&inode.fd))
    }
}
