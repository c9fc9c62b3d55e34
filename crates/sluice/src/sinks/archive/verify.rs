//! `sluice archive verify URL`: read every file of an archive and report, per
//! partition, the offset ranges, files, records, bytes, gaps and overlaps.
//!
//! Files are read whole (zstd and gzip recognised by their magic bytes) and each
//! line parsed as JSON for `kafka.topic`, `kafka.partition` and `kafka.offset`, so
//! the report does not trust file names. A gap is a missing offset between two
//! files of a partition (compacted topics have legitimate ones); an overlap is an
//! offset held by two files, or twice by one. Exit 0 when there is neither, 1
//! otherwise or on a read error.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;

use super::store::Store;

/// One file's content summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRange {
    /// Key.
    pub key: String,
    /// Offsets in file order.
    pub offsets: Vec<i64>,
    /// Stored bytes.
    pub bytes: u64,
}

/// The verdict for one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionReport {
    /// Files.
    pub files: usize,
    /// Records.
    pub records: u64,
    /// Stored bytes.
    pub bytes: u64,
    /// Lowest offset.
    pub first: i64,
    /// Highest offset.
    pub last: i64,
    /// Offsets missing between the lowest and the highest.
    pub gaps: u64,
    /// Offsets present more than once.
    pub overlaps: u64,
}

/// Decompress a file by its magic bytes.
pub fn decode(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(data)?.read_to_end(&mut out)?;
    } else if data.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?;
    } else {
        out.extend_from_slice(data);
    }
    Ok(out)
}

/// Read every file: (topic, partition) → files.
pub fn read_archive(store: &Store) -> Result<BTreeMap<(String, i64), Vec<FileRange>>, String> {
    let mut parts: BTreeMap<(String, i64), Vec<FileRange>> = BTreeMap::new();
    for f in store.list().map_err(|e| format!("listing: {e}"))? {
        let raw = store.read(&f.key).map_err(|e| format!("{}: {e}", f.key))?;
        let text = decode(&raw).map_err(|e| format!("{}: {e}", f.key))?;
        let mut part: Option<(String, i64)> = None;
        let mut offsets = Vec::new();
        for (n, line) in text.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(line)
                .map_err(|e| format!("{} line {}: not JSON: {e}", f.key, n + 1))?;
            let (Some(t), Some(p), Some(o)) = (
                v["kafka.topic"].as_str(),
                v["kafka.partition"].as_i64(),
                v["kafka.offset"].as_i64(),
            ) else {
                return Err(format!(
                    "{} line {}: no kafka.topic/partition/offset",
                    f.key,
                    n + 1
                ));
            };
            match &part {
                None => part = Some((t.to_owned(), p)),
                Some((pt, pp)) if pt == t && *pp == p => {}
                Some(_) => return Err(format!("{}: holds records of two partitions", f.key)),
            }
            offsets.push(o);
        }
        if let Some(k) = part {
            parts.entry(k).or_default().push(FileRange {
                key: f.key,
                offsets,
                bytes: f.size,
            });
        }
    }
    Ok(parts)
}

/// Judge one partition's files.
pub fn judge(files: &[FileRange]) -> PartitionReport {
    let mut all: Vec<i64> = files
        .iter()
        .flat_map(|f| f.offsets.iter().copied())
        .collect();
    all.sort_unstable();
    let mut r = PartitionReport {
        files: files.len(),
        records: all.len() as u64,
        bytes: files.iter().map(|f| f.bytes).sum(),
        first: all.first().copied().unwrap_or(0),
        last: all.last().copied().unwrap_or(-1),
        ..Default::default()
    };
    for w in all.windows(2) {
        if w[1] == w[0] {
            r.overlaps += 1;
        } else {
            r.gaps += (w[1] - w[0] - 1) as u64;
        }
    }
    r
}

/// Run the command: print the report, exit 0 when clean.
pub fn main(url: &str, options: &[(String, String)]) -> ExitCode {
    // A worker thread drives the object store's I/O: `Handle::block_on` on a
    // current-thread runtime would wait forever.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let staging = std::env::temp_dir().join(format!("sluice-verify-{}", std::process::id()));
    let store = match Store::open(url, options, staging.clone(), rt.handle().clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(crate::cli::EXIT_CONFIG);
        }
    };
    let parts = read_archive(&store);
    let _ = std::fs::remove_dir(&staging);
    let parts = match parts {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut total = PartitionReport::default();
    println!("partition\tfiles\trecords\tbytes\tfirst\tlast\tgaps\toverlaps");
    for ((topic, p), files) in &parts {
        let r = judge(files);
        println!(
            "{topic}/{p}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.files, r.records, r.bytes, r.first, r.last, r.gaps, r.overlaps
        );
        total.files += r.files;
        total.records += r.records;
        total.bytes += r.bytes;
        total.gaps += r.gaps;
        total.overlaps += r.overlaps;
    }
    println!(
        "total: partitions={} files={} records={} bytes={} gaps={} overlaps={}",
        parts.len(),
        total.files,
        total.records,
        total.bytes,
        total.gaps,
        total.overlaps
    );
    if total.gaps == 0 && total.overlaps == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(offsets: &[i64]) -> FileRange {
        FileRange {
            key: String::new(),
            offsets: offsets.to_vec(),
            bytes: 1,
        }
    }

    #[test]
    fn contiguous_files_have_no_gap_or_overlap() {
        let r = judge(&[file(&[0, 1, 2]), file(&[3, 4])]);
        assert_eq!(
            (r.records, r.first, r.last, r.gaps, r.overlaps),
            (5, 0, 4, 0, 0)
        );
    }

    #[test]
    fn gaps_and_overlaps_are_counted_by_offset() {
        let r = judge(&[file(&[0, 1, 2]), file(&[2, 3]), file(&[7])]);
        assert_eq!((r.gaps, r.overlaps), (3, 1));
    }

    #[test]
    fn magic_bytes_pick_the_decoder() {
        let text = b"{\"a\":1}\n".repeat(10);
        let z = zstd::encode_all(&text[..], 3).unwrap();
        assert_eq!(decode(&z).unwrap(), text);
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut g, &text).unwrap();
        assert_eq!(decode(&g.finish().unwrap()).unwrap(), text);
        assert_eq!(decode(&text).unwrap(), text);
    }
}
