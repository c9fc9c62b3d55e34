//! Any bytes as a WAL segment file: `inspect` (read-only) and `Wal::open`
//! (recovery: scan, repair of a torn or damaged tail) then reading every
//! record back return records or errors, never panic. Each input is written to
//! a fresh directory as the only segment.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("sluice-fuzz-wal-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("temp dir");
    std::fs::write(dir.join("00000000000000000000.seg"), data).expect("write segment");
    let _ = wal::inspect(dir);
    let opts = wal::Options {
        fsync: wal::Fsync::Interval(Duration::from_secs(3600)),
        segment_bytes: 1 << 20,
        max_bytes: 64 << 20,
        max_record_bytes: 1 << 20,
    };
    if let Ok(mut w) = wal::Wal::open(dir, opts) {
        let mut n = 0u64;
        while let Ok(Some(r)) = w.read_next() {
            assert!(r.payload.len() <= data.len());
            n += 1;
            if n > data.len() as u64 {
                panic!("more records than bytes");
            }
        }
        let _ = w.close();
    }
});
