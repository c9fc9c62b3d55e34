//! The rate_limit route: `drop` holds the rate and counts, `block` slows the
//! source without dropping.

use super::*;

#[test]
fn rate_limit_drop_holds_the_rate_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    // Offers ~4,000 lines/s for ~4 s; the limit is 1,000/s.
    let source = python_source(
        "gen",
        "import time\nt0 = time.time()\nfor t in range(200):\n for i in range(80):\n  print(f'x {t} {i}')\n time.sleep(0.02)\n\
         open('$DIR/span', 'w').write(str(time.time() - t0))",
    );
    let config = format!(
        r#"
        data_dir = "$DIR/data"
        {source}
        [routes.limit]
        type = "rate_limit"
        inputs = ["gen"]
        per = "{{tag}}"
        events_per_sec = 1000
        when_over = "drop"
        [sinks.f]
        type = "file"
        inputs = ["limit"]
        path = "$DIR/out.log"
        "#
    );
    let started = Instant::now();
    let mut d = Daemon::start(dir.path(), &config);
    wait_until(Duration::from_secs(60), "the generator to end", || {
        d.stderr().contains("Command exited")
    });
    let secs = started.elapsed().as_secs_f64();
    let st = d.wait(Duration::from_secs(30));
    let stderr = d.stderr();
    assert!(st.success(), "{stderr}");
    let admitted = read_lines(&dir.path().join("out.log")).len() as f64;
    // The window is at most `secs` (the daemon's start is inside it) and the
    // generator's own start-up makes it a little shorter: allow 5% + the burst.
    assert!(
        admitted <= 1000.0 * secs * 1.05 + 100.0,
        "admitted {admitted} in {secs:.2} s"
    );
    // Lines were offered for `span` seconds, by the generator's own clock (on
    // a loaded machine its start-up takes a good part of `secs`).
    let span: f64 = std::fs::read_to_string(dir.path().join("span"))
        .expect("the generator's span")
        .parse()
        .expect("a number of seconds");
    assert!(
        admitted >= 1000.0 * (span - 0.2) * 0.95,
        "admitted {admitted} while lines were offered for {span:.2} s"
    );
    let dropped = counter(&stderr, "routes.limit", "dropped");
    assert_eq!(dropped as f64 + admitted, 16_000.0);
    assert!(
        stderr.contains("Rate limit exceeded; events dropped."),
        "{stderr}"
    );
}

#[test]
fn rate_limit_block_slows_the_source_without_dropping() {
    let dir = tempfile::tempdir().unwrap();
    let source = python_source("gen", "for i in range(12000):\n print(i)");
    let config = format!(
        r#"
        data_dir = "$DIR/data"
        {source}
        [routes.limit]
        type = "rate_limit"
        inputs = ["gen"]
        events_per_sec = 4000
        when_over = "block"
        [sinks.f]
        type = "file"
        inputs = ["limit"]
        path = "$DIR/out.log"
        "#
    );
    let started = Instant::now();
    let stderr = run_to_end(dir.path(), &config);
    let took = started.elapsed().as_secs_f64();
    assert_eq!(read_lines(&dir.path().join("out.log")).len(), 12_000);
    assert_eq!(counter(&stderr, "routes.limit", "dropped"), 0);
    // 12,000 at 4,000/s, less the 0.1 s burst: at least 2.9 s.
    assert!(took >= 2.8, "took {took:.2} s");
}
