//! The sink driven as a library: acknowledgements resolve only on the broker's
//! word, refusals and oversize drops resolve dropped, the shutdown deadline.

use super::*;

struct TestSink {
    tx: Option<BufferSender>,
    abort: CancellationToken,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<Result<(), sluice::topology::ComponentError>>,
}

impl TestSink {
    async fn start(sink_toml: &str) -> TestSink {
        let text = format!(
            "[sources.in]\ntype = \"stdin\"\n\n[sinks.k]\ntype = \"kafka\"\ninputs = [\"in\"]\n{sink_toml}"
        );
        let config = match sluice::config::load_str(Path::new("test.toml"), &text) {
            Ok(c) => c,
            Err(e) => panic!("config: {e}"),
        };
        let counters = Arc::new(Counters::default());
        let (tx, rx) = buffer::memory(10_000, WhenFull::Block, counters.clone());
        let abort = CancellationToken::new();
        let sink_config = config.sinks[0].clone();
        let (_reload_tx, reload) = tokio::sync::watch::channel(Arc::new(config));
        let cx = SinkContext {
            name: "k".into(),
            input: rx,
            abort: abort.clone(),
            counters: counters.clone(),
            reload,
        };
        let task = match sluice::sinks::build(&sink_config, cx).await {
            Ok(t) => tokio::spawn(t),
            Err(e) => panic!("build: {e}"),
        };
        TestSink {
            tx: Some(tx),
            abort,
            counters,
            task,
        }
    }

    async fn send(&self, tag: &str, bodies: &[Vec<u8>]) -> sluice::ack::AckReceiver {
        let (token, rx) = AckToken::channel();
        let events = bodies
            .iter()
            .map(|b| Event::new(Bytes::from(b.clone()), now_ns(), tag.into(), "in".into()))
            .collect();
        let tx = self.tx.as_ref().expect("sender open");
        tx.send(EventBatch::new(events, token), true).await;
        rx
    }

    async fn stop(mut self, within: Duration) {
        drop(self.tx.take());
        match tokio::time::timeout(within, self.task).await {
            Ok(r) => r.expect("sink task").expect("sink result"),
            Err(_) => panic!("sink did not stop within {within:?}"),
        }
    }
}

async fn ack_within(rx: sluice::ack::AckReceiver, within: Duration) -> AckStatus {
    tokio::time::timeout(within, rx)
        .await
        .expect("acknowledgement in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_resolves_delivered_only_after_the_broker_confirms() {
    let kafka = need_kafka!();
    let port = free_port();
    let sink = TestSink::start(&format!(
        "brokers = \"127.0.0.1:{port}\"\ntopic = \"acked\"\ncreate_topics = {{ partitions = 1 }}\n\
         [sinks.k.librdkafka]\n\"reconnect.backoff.max.ms\" = 500\n"
    ))
    .await;
    let bodies: Vec<Vec<u8>> = (0..5).map(|i| format!("acked {i}").into_bytes()).collect();
    let mut rx = sink.send("t", &bodies).await;
    // No broker yet: the batch must stay unacknowledged.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), &mut rx)
            .await
            .is_err(),
        "acked with no broker"
    );
    let mut broker = Broker::new(&kafka, port);
    broker.start_process();
    assert_eq!(
        ack_within(rx, Duration::from_secs(30)).await,
        AckStatus::Delivered
    );
    let addr = broker.addr();
    let recs =
        tokio::task::spawn_blocking(move || consume(&addr, &["acked"], 5, Duration::from_secs(5)))
            .await
            .unwrap();
    let values: Vec<Vec<u8>> = recs.into_iter().map(|r| r.value).collect();
    assert_eq!(values, bodies, "an acknowledged batch is in the topic");
    sink.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_refused_for_good_and_oversize_drops_resolve_dropped_and_are_counted() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    broker.create_topic("present", 1);
    // librdkafka refuses records over 1000 bytes; our own limit (5000) is higher, so
    // a 2000-byte record reaches the producer and fails there, for good.
    let sink = TestSink::start(&format!(
        "brokers = \"{}\"\ntopic = \"{{tag}}\"\nmax_message_bytes = 5000\n\
         [sinks.k.librdkafka]\n\"message.max.bytes\" = 1000\n\"message.timeout.ms\" = 1500\n",
        broker.addr()
    ))
    .await;
    let ok = sink
        .send("present", &[b"fine".to_vec(), b"also fine".to_vec()])
        .await;
    let too_large = sink
        .send("present", &[b"small".to_vec(), vec![b'x'; 2000]])
        .await;
    let unknown_topic = sink.send("missing-topic", &[b"nowhere".to_vec()]).await;
    let oversize = sink
        .send("present", &[b"kept".to_vec(), vec![b'y'; 6000]])
        .await;
    let bad_topic = sink.send("no/slash", &[b"bad".to_vec()]).await;
    assert_eq!(
        ack_within(ok, Duration::from_secs(10)).await,
        AckStatus::Delivered
    );
    // Refused for a reason of the record's own: dropped (counted as errors),
    // so a disk buffer does not send it again for ever.
    assert_eq!(
        ack_within(too_large, Duration::from_secs(10)).await,
        AckStatus::Dropped
    );
    assert_eq!(
        ack_within(oversize, Duration::from_secs(10)).await,
        AckStatus::Dropped
    );
    assert_eq!(
        ack_within(bad_topic, Duration::from_secs(10)).await,
        AckStatus::Dropped
    );
    // Times out in librdkafka, then the lookup finds no such topic: refused for good.
    assert_eq!(
        ack_within(unknown_topic, Duration::from_secs(20)).await,
        AckStatus::Dropped
    );
    let c = &sink.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        (load(&c.events_out), load(&c.errors), load(&c.dropped)),
        (4, 3, 1)
    );
    sink.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_fails_unconfirmed_batches_promptly() {
    let _kafka = need_kafka!();
    let port = free_port();
    let mut sink = TestSink::start(&format!(
        "brokers = \"127.0.0.1:{port}\"\ntopic = \"never\"\n"
    ))
    .await;
    let rx = sink
        .send("t", &[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()])
        .await;
    drop(sink.tx.take());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !sink.task.is_finished(),
        "the sink must keep trying until the deadline"
    );
    let started = Instant::now();
    sink.abort.cancel();
    let counters = sink.counters.clone();
    sink.stop(Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        started.elapsed()
    );
    assert_eq!(
        ack_within(rx, Duration::from_secs(2)).await,
        AckStatus::Errored
    );
    wait_for("the errors counter", Duration::from_secs(2), || {
        counters.errors.load(std::sync::atomic::Ordering::Relaxed) == 3
    });
}
