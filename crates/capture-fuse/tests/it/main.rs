//! Real-mount tests: each mounts a temp dir, runs real programs through the mount,
//! compares with the same workload on a plain directory, and unmounts in teardown.

mod common;
mod lifecycle;
mod passthrough;
mod semantics;
mod workloads;
mod writeback;
