//! `personaflow produce`: writes event files (any input format, through an ingest mapping) to a
//! Kafka topic as canonical JSON events, keyed by user (so a user's events stay in order on
//! one partition) and timestamped with their event time, optionally paced to a rate. It feeds
//! the continuous job in tests, load tests and benchmarks, and replays a backfill's input.

use crate::{Error, Result};
use personaflow_io::source::event_json;
use personaflow_io::source::{check_input, open_reader, resolve_inputs, IngestMapping};
use personaflow_operators::Event;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rows per read chunk of `produce`.
const CHUNK_ROWS: usize = 8192;

/// A `produce` run.
#[derive(Clone, Debug)]
pub struct Produce {
    /// Bootstrap brokers.
    pub brokers: String,
    /// Topic.
    pub topic: String,
    /// Event files, directories or globs.
    pub inputs: Vec<String>,
    /// Ingest mapping of the inputs.
    pub mapping: IngestMapping,
    /// Events per second (processing time); `None`: as fast as the broker takes them.
    pub rate: Option<f64>,
    /// Stop after this many events.
    pub limit: Option<u64>,
}

/// What `produce` did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProduceSummary {
    /// Messages produced (and acknowledged).
    pub events: u64,
    /// Input rows refused by the reader (not produced).
    pub rejects: u64,
    /// Seconds.
    pub elapsed_secs: f64,
}

/// Publishes events to a topic as the canonical JSON events `run` reads, keyed by user, with
/// the event time as the message timestamp (idempotent, acks from all replicas).
pub struct EventPublisher {
    producer: BaseProducer<DeliveryFailures>,
    topic: String,
}

/// Counts the producer's messages whose delivery failed for good (librdkafka has given up its
/// retries: the message is not on the topic) and keeps the first failure.
#[derive(Debug, Default)]
pub struct DeliveryFailures {
    sent: AtomicU64,
    failed: AtomicU64,
    first: Mutex<Option<KafkaError>>,
}

impl ClientContext for DeliveryFailures {}

impl ProducerContext for DeliveryFailures {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first
                .lock()
                .expect("deliveries lock")
                .get_or_insert_with(|| e.clone());
        }
    }
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublisher")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl EventPublisher {
    /// Connects to `brokers` and checks that `topic` exists.
    pub fn connect(brokers: &str, topic: &str) -> Result<Self> {
        let producer: BaseProducer<DeliveryFailures> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "10")
            .create_with_context(DeliveryFailures::default())
            .map_err(|e| Error::kafka("creating the producer", e))?;
        let md = producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(|e| Error::kafka(format!("metadata of topic {topic} from {brokers}"), e))?;
        if !md
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        {
            return Err(Error::TopicsMissing {
                topics: vec![topic.to_string()],
                brokers: brokers.to_string(),
            });
        }
        Ok(EventPublisher {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Queues `e` (waiting while the producer's queue is full).
    pub fn send(&mut self, e: &Event) -> Result<()> {
        let payload = event_json(e).to_string();
        let mut record = BaseRecord::to(&self.topic)
            .key(e.user_id.as_str())
            .payload(payload.as_str())
            .timestamp(e.ts_ms);
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.producer.context().sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(20));
                }
                Err((e, _)) => return Err(Error::kafka(format!("producing to {}", self.topic), e)),
            }
        }
    }

    /// Serves delivery reports without waiting.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Serves delivery reports for up to `d` (a paced sender's wait).
    pub fn wait(&self, d: Duration) {
        self.producer.poll(d);
    }

    /// Waits until every queued message is delivered (up to two minutes); an error if any
    /// message sent so far was not (a flush returns once librdkafka has given up on them).
    pub fn flush(&self) -> Result<()> {
        self.producer
            .flush(Duration::from_secs(120))
            .map_err(|e| Error::kafka(format!("flushing messages to {}", self.topic), e))?;
        let d = self.producer.context();
        match d.first.lock().expect("deliveries lock").clone() {
            None => Ok(()),
            Some(first) => Err(Error::Undelivered {
                topic: self.topic.clone(),
                failed: d.failed.load(Ordering::Relaxed),
                sent: d.sent.load(Ordering::Relaxed),
                first,
            }),
        }
    }
}

/// How far ahead of its rate a paced producer may run before it waits: events go out in
/// bursts of at most this long's worth, so it wakes at most about a thousand times a second.
pub const PACE_TICK: Duration = Duration::from_millis(1);

/// Produces the events of `job.inputs` to `job.topic`; `progress` hears the count now and then.
pub fn produce(job: &Produce, progress: &mut dyn FnMut(u64)) -> Result<ProduceSummary> {
    let started = Instant::now();
    let files = resolve_inputs(&job.inputs, &job.mapping)?;
    for f in &files {
        check_input(f, &job.mapping)?;
    }
    let mut publisher = EventPublisher::connect(&job.brokers, &job.topic)?;
    let mut summary = ProduceSummary::default();
    let mut chunk = personaflow_io::source::Chunk::default();
    'files: for file in &files {
        let mut reader = open_reader(file, &job.mapping, CHUNK_ROWS)?;
        loop {
            chunk.clear();
            let more = reader.next_chunk(&mut chunk)?;
            summary.rejects += chunk.rejects.len() as u64;
            for e in &chunk.events {
                if job.limit.is_some_and(|l| summary.events >= l) {
                    break 'files;
                }
                if let Some(rate) = job.rate {
                    // Events go out in bursts of at most PACE_TICK's worth: a wait per event
                    // (tens of microseconds at thousands of events a second) cost most of a
                    // core in wake-ups, taken from the job being measured.
                    let due = Duration::from_secs_f64(summary.events as f64 / rate.max(1e-9));
                    let elapsed = started.elapsed();
                    if due > elapsed + PACE_TICK {
                        publisher.wait(due - elapsed);
                        let left = due.saturating_sub(started.elapsed());
                        std::thread::sleep(left);
                    }
                }
                publisher.send(e)?;
                summary.events += 1;
                if summary.events % 10_000 == 0 {
                    publisher.poll();
                    progress(summary.events);
                }
            }
            if !more {
                break;
            }
        }
    }
    publisher.flush()?;
    progress(summary.events);
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use personaflow_io::source::JsonRecordDecoder;
    use personaflow_operators::Event;

    #[test]
    fn produced_json_decodes_to_the_same_event() {
        let e = Event {
            ts_ms: 1_767_571_201_123,
            user_id: "u1".into(),
            session_id: Some("s".into()),
            authenticated: true,
            segment: Some("gamer".into()),
            action: "play".into(),
            category: Some("game".into()),
            bytes_in: Some(10),
            bytes_out: Some(20),
            latency_ms: Some(12.5),
            status: Some(200),
            device: Some("pc".into()),
            os: None,
            country: Some("DE".into()),
        };
        let d = JsonRecordDecoder::new(&IngestMapping::identity()).unwrap();
        let back = d.decode(event_json(&e).to_string().as_bytes()).unwrap();
        assert_eq!(back, e);
    }

    /// A message the brokers refuse for good (librdkafka gives up on it) makes the flush an
    /// error that counts it: before, the producer said every event was written.
    #[test]
    fn a_refused_message_fails_the_flush_and_is_counted() {
        use rdkafka::mocking::MockCluster;
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("events", 1, 1).unwrap();
        let mut p = EventPublisher::connect(&mock.bootstrap_servers(), "events").unwrap();
        p.send(&Event::new(1, "u1", "play")).unwrap();
        p.flush().unwrap();
        mock.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
        );
        p.send(&Event::new(2, "u2", "play")).unwrap();
        match p.flush() {
            Err(Error::Undelivered {
                topic,
                failed,
                sent,
                first,
            }) => {
                assert_eq!((topic.as_str(), failed, sent), ("events", 1, 2), "{first}");
            }
            other => panic!("expected the refused message to fail the flush: {other:?}"),
        }
    }
}
