//! The continuous job's outputs: Parquet files per table and worker, each of the windows a
//! sink completed together, written atomically under idempotent names
//! (`profiles/date=2026-01-05/w{window_end_ms}-{worker}.parquet`, or
//! `w{first_end_ms}-{last_end_ms}-{worker}.parquet`: [`personaflow_io::window_file`]),
//! the same tables published as JSON messages to Kafka topics, and the bookkeeping that says
//! up to which window every output is durable (so offsets can be committed).

use crate::json_rows::JsonRows;
use crate::messages::{ipc_messages, key_groups, send_arrays, MAX_MESSAGE_BYTES};
use crate::metrics::Metrics;
use crate::{Error, Result};
use arrow_array::{Array, RecordBatch, StringArray};
use personaflow_dataflow::config::OutputMessage;
use personaflow_io::source::RecordError;
use personaflow_io::tables::Table;
use personaflow_io::window_file::write_window_file;
use personaflow_io::writer::{date_partition, SinkFactory, WindowObserver, WindowSink};
use personaflow_operators::WindowSpec;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a flush of the output producer may take before the job fails.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// The first pause of a flush that waits for deliveries (doubled up to [`FLUSH_PAUSE_MAX`]).
pub const FLUSH_PAUSE_MIN: Duration = Duration::from_micros(100);
/// The longest pause of a flush that waits for deliveries.
pub const FLUSH_PAUSE_MAX: Duration = Duration::from_millis(2);
/// Header of a dead-letter message that holds the error.
pub const ERROR_HEADER: &str = "personaflow.error";
/// Header of a dead-letter message that names the refused field.
pub const FIELD_HEADER: &str = "personaflow.field";
/// Header of a dead-letter message that says where it came from (`topic/partition/offset`).
pub const SOURCE_HEADER: &str = "personaflow.source";

/// Up to which window every sink of every worker has written, and when windows closed.
#[derive(Debug)]
pub struct SinkProgress {
    expected: usize,
    frontiers: Mutex<HashMap<(usize, Table), u64>>,
    closes: Mutex<BTreeMap<u64, Instant>>,
    /// Bumped by every report and [`poke`](Self::poke), for [`wait_change`](Self::wait_change).
    generation: Mutex<u64>,
    changed: Condvar,
}

impl SinkProgress {
    /// Progress of `expected` sinks (tables x workers).
    pub fn new(expected: usize) -> Arc<SinkProgress> {
        Arc::new(SinkProgress {
            expected,
            frontiers: Mutex::new(HashMap::new()),
            closes: Mutex::new(BTreeMap::new()),
            generation: Mutex::new(0),
            changed: Condvar::new(),
        })
    }

    fn set(&self, worker: usize, table: Table, frontier: u64) {
        {
            let mut f = self.frontiers.lock().expect("progress lock");
            let e = f.entry((worker, table)).or_insert(frontier);
            *e = (*e).max(frontier);
        }
        self.poke();
    }

    /// Wakes whoever waits in [`wait_change`](Self::wait_change) (a report does too).
    pub fn poke(&self) {
        *self.generation.lock().expect("progress lock") += 1;
        self.changed.notify_all();
    }

    /// Waits until something reported or poked since generation `seen` (at most `timeout`);
    /// returns the generation now.
    pub fn wait_change(&self, seen: u64, timeout: Duration) -> u64 {
        let g = self.generation.lock().expect("progress lock");
        let (g, _) = self
            .changed
            .wait_timeout_while(g, timeout, |g| *g == seen)
            .expect("progress lock");
        *g
    }

    /// Every window before the returned one is durable in every sink (`None` until every
    /// sink has reported).
    pub fn durable(&self) -> Option<u64> {
        let f = self.frontiers.lock().expect("progress lock");
        if f.len() < self.expected {
            return None;
        }
        f.values().min().copied()
    }

    /// Records that the watermark closed every window before `frontier` (now, unless it had
    /// already).
    pub fn closed(&self, frontier: u64) {
        let mut c = self.closes.lock().expect("progress lock");
        if c.last_key_value().is_none_or(|(k, _)| *k < frontier) {
            c.insert(frontier, Instant::now());
        }
    }

    /// The close-to-output latencies (seconds) of the closes that `durable` covers, removed.
    pub fn take_latencies(&self, durable: u64) -> Vec<f64> {
        let mut c = self.closes.lock().expect("progress lock");
        let rest = c.split_off(&(durable.saturating_add(1)));
        let done = std::mem::replace(&mut *c, rest);
        done.values().map(|t| t.elapsed().as_secs_f64()).collect()
    }
}

/// The continuous job's sinks.
#[derive(Clone, Debug)]
pub struct StreamSinks {
    /// Output directory.
    pub root: PathBuf,
    /// Windows.
    pub spec: WindowSpec,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// fsync files before they count as durable.
    pub fsync: bool,
    /// Windows up to this one were emitted before a restart: they are not written again.
    pub emitted_through: Option<u64>,
    /// Windows from this one on are not written (set on shutdown, when the input is closed
    /// with windows still open: they are emitted, whole, after the restart).
    pub closing: Arc<AtomicU64>,
    /// Where durability is reported.
    pub progress: Arc<SinkProgress>,
    /// Output topics (`None`: none).
    pub publisher: Option<Arc<Publisher>>,
    /// Also shown every complete window, replayed ones included (`None`: nothing is).
    pub observer: Option<Arc<dyn WindowObserver>>,
}

impl SinkFactory for StreamSinks {
    fn sink(&self, table: Table, worker: usize) -> Box<dyn WindowSink> {
        Box::new(WindowFileSink {
            sinks: self.clone(),
            table,
            worker,
            pending: Vec::new(),
        })
    }
}

/// One table's sink on one worker: the complete windows it is given between two frontier
/// advances are written as one window file per date partition (a job catching up completes
/// many windows at once; a live job one), then published, then reported durable.
#[derive(Debug)]
struct WindowFileSink {
    sinks: StreamSinks,
    table: Table,
    worker: usize,
    /// Complete windows not yet written, in window order.
    pending: Vec<(u64, RecordBatch)>,
}

impl WindowFileSink {
    fn dir(&self, window: u64) -> PathBuf {
        let s = &self.sinks;
        s.root
            .join(self.table.name())
            .join(format!("date={}", date_partition(s.spec.start_ms(window))))
    }

    /// Writes the pending windows: one file per run of windows in the same date partition.
    fn flush(&mut self) -> personaflow_io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let dirs: Vec<PathBuf> = pending.iter().map(|(w, _)| self.dir(*w)).collect();
        let s = &self.sinks;
        let windows: Vec<(i64, RecordBatch)> = pending
            .into_iter()
            .map(|(w, batch)| (s.spec.end_ms(w), batch))
            .collect();
        let mut start = 0;
        for run in dirs.chunk_by(|a, b| a == b) {
            let end = start + run.len();
            write_window_file(
                &run[0],
                self.worker,
                &windows[start..end],
                s.row_group_rows,
                s.fsync,
            )?;
            start = end;
        }
        if let Some(p) = &s.publisher {
            for (_, batch) in &windows {
                p.publish(self.table, batch)
                    .map_err(|e| personaflow_io::Error::Sink {
                        table: self.table.name().to_string(),
                        source: Box::new(e),
                    })?;
            }
        }
        Ok(())
    }
}

impl WindowSink for WindowFileSink {
    fn table(&self) -> Table {
        self.table
    }

    fn write_window(&mut self, window: u64, batch: &RecordBatch) -> personaflow_io::Result<u64> {
        let s = &self.sinks;
        if window >= s.closing.load(Ordering::SeqCst) {
            return Ok(0);
        }
        // The observer sees replayed windows too: it may have started empty.
        if let Some(o) = &s.observer {
            o.window(self.table, window, batch)?;
        }
        if s.emitted_through.is_some_and(|e| window <= e) {
            return Ok(0);
        }
        self.pending.push((window, batch.clone()));
        Ok(batch.num_rows() as u64)
    }

    fn advance(&mut self, frontier: Option<u64>) -> personaflow_io::Result<()> {
        self.flush()?;
        let closing = self.sinks.closing.load(Ordering::SeqCst);
        let f = frontier.unwrap_or(u64::MAX).min(closing);
        self.sinks.progress.set(self.worker, self.table, f);
        Ok(())
    }
}

/// The producer's messages not yet acknowledged, by the epoch they were sent in: a settle
/// ends the current epoch ([`cut`](Deliveries::cut)) and waits until every message of it and
/// of earlier ones is acknowledged, while the workers go on sending in the next epoch. (A
/// flush instead waits for every message sent, those of windows still being written
/// included: while a job keeps producing it waits on its own new messages.)
#[derive(Debug, Default)]
pub struct Deliveries {
    ledger: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    epoch: u64,
    /// Messages sent and not acknowledged, per epoch (epochs with none are removed).
    outstanding: BTreeMap<u64, u64>,
}

impl Deliveries {
    /// Counts `n` messages about to be sent (a batch's rows at once); returns their epoch.
    pub fn sending(&self, n: u64) -> u64 {
        let mut l = self.ledger.lock().expect("deliveries lock");
        let e = l.epoch;
        // No messages leave no entry: an epoch with none outstanding would never be done.
        if n > 0 {
            *l.outstanding.entry(e).or_insert(0) += n;
        }
        e
    }

    /// `n` messages of `epoch` were acknowledged, failed for good, or were never sent.
    pub fn done(&self, epoch: u64, n: u64) {
        let mut l = self.ledger.lock().expect("deliveries lock");
        if let Some(left) = l.outstanding.get_mut(&epoch) {
            *left = left.saturating_sub(n);
            if *left == 0 {
                l.outstanding.remove(&epoch);
            }
        }
    }

    /// Ends the current epoch: messages counted from now on are in the next one. Returns the
    /// epoch ended (every message counted before this call is in it or an earlier one).
    pub fn cut(&self) -> u64 {
        let mut l = self.ledger.lock().expect("deliveries lock");
        l.epoch += 1;
        l.epoch - 1
    }

    /// Every message of `epoch` and of the epochs before it is done.
    pub fn done_through(&self, epoch: u64) -> bool {
        let l = self.ledger.lock().expect("deliveries lock");
        l.outstanding
            .first_key_value()
            .is_none_or(|(e, _)| *e > epoch)
    }
}

/// Counts the output producer's deliveries and keeps its first failure.
#[derive(Debug, Default)]
pub struct DeliveryContext {
    failure: Mutex<Option<(String, KafkaError)>>,
    deliveries: Deliveries,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    /// The message's epoch ([`Deliveries`]).
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, epoch: usize) {
        if let Err((e, m)) = result {
            use rdkafka::Message;
            let mut f = self.failure.lock().expect("delivery lock");
            f.get_or_insert_with(|| (m.topic().to_string(), e.clone()));
        }
        self.deliveries.done(epoch as u64, 1);
    }
}

/// The job's producer: output topics (JSON keyed by user or segment: [`Publisher::publish`])
/// and the dead-letter topic. Idempotent (`enable.idempotence`), so retries never duplicate a
/// message within a run.
pub struct Publisher {
    producer: ThreadedProducer<DeliveryContext>,
    prefix: String,
    tables: HashSet<Table>,
    message: OutputMessage,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("prefix", &self.prefix)
            .field("tables", &self.tables)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A producer to `brokers` publishing `tables` as `{prefix}{table}`, `message` a message.
    pub fn new(
        brokers: &str,
        prefix: &str,
        tables: HashSet<Table>,
        message: OutputMessage,
        metrics: Arc<Metrics>,
    ) -> Result<Publisher> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "20")
            .set("message.timeout.ms", "60000")
            .create_with_context(DeliveryContext::default())
            .map_err(|e| Error::kafka("creating the output producer", e))?;
        Ok(Publisher {
            producer,
            prefix: prefix.to_string(),
            tables,
            message,
            metrics,
        })
    }

    /// Connects the producer to the brokers and has it learn `topics`' partitions and
    /// leaders before the job takes its first events, within `timeout` for each topic. A
    /// producer does both when it first sends, and the first windows' outputs waited for it:
    /// about 0.8 s after each start in the stream bench, which was the paced runs' p99
    /// (BENCHMARKS.md, "The output producer warmed up before the first events").
    pub fn warm_up(&self, topics: &[String], timeout: Duration) -> Result<()> {
        for topic in topics {
            self.producer
                .client()
                .fetch_metadata(Some(topic), timeout)
                .map_err(|e| Error::kafka(format!("metadata of output topic {topic}"), e))?;
        }
        Ok(())
    }

    /// The topic of `table`.
    pub fn topic(&self, table: Table) -> String {
        format!("{}{}", self.prefix, table.name())
    }

    /// The output topics.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.tables.iter().map(|t| self.topic(*t)).collect();
        t.sort();
        t
    }

    /// Publishes the rows of `batch` if `table` is published, keyed by `user_id` (or
    /// `segment` where there is no user): a JSON array of each key's rows per message
    /// ([`OutputMessage::Key`], [`crate::messages`]), or one JSON object per row
    /// ([`OutputMessage::Row`]).
    pub fn publish(&self, table: Table, batch: &RecordBatch) -> Result<()> {
        if !self.tables.contains(&table) {
            return Ok(());
        }
        let topic = self.topic(table);
        if self.message == OutputMessage::Arrow {
            return self.publish_ipc(&topic, batch);
        }
        let schema = batch.schema();
        let key_col = schema
            .index_of("user_id")
            .or_else(|_| schema.index_of("segment"))
            .ok()
            .and_then(|i| batch.column(i).as_any().downcast_ref::<StringArray>());
        let key = |row: usize| {
            key_col
                .filter(|c| c.is_valid(row))
                .map(|c| c.value(row).as_bytes())
                .unwrap_or_default()
        };
        // A column type the row encoder does not know: Arrow's writer, whole batch, its lines.
        let mut encoder = JsonRows::try_new(batch);
        let arrow_json = match encoder {
            Some(_) => Vec::new(),
            None => {
                let relabelled = &personaflow_io::tables::utc_offset_timestamps(batch);
                let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
                writer
                    .write(relabelled)
                    .and_then(|_| writer.finish())
                    .map_err(|source| Error::Json {
                        topic: topic.clone(),
                        source,
                    })?;
                writer.into_inner()
            }
        };
        let lines: Vec<&[u8]> = arrow_json
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let mut encode = |row: usize, out: &mut Vec<u8>| match &mut encoder {
            Some(e) => e.encode(row, out),
            None => out.extend_from_slice(lines[row]),
        };
        let rows = batch.num_rows();
        // At most a message per row.
        self.send_batch(&topic, rows as u64, |send| {
            if self.message == OutputMessage::Key {
                let groups = key_groups(rows, key);
                let mut send_group =
                    |first_row: usize, payload: &[u8]| send(key(first_row), payload);
                return send_arrays(&groups, &mut encode, MAX_MESSAGE_BYTES, &mut send_group)
                    .map(|_| ());
            }
            let mut line = Vec::new();
            (0..rows).try_for_each(|row| {
                line.clear();
                encode(row, &mut line);
                send(key(row), &line)
            })
        })
    }

    /// Publishes `batch` (one window's rows) as Arrow IPC streams ([`ipc_messages`]), keyed by
    /// the window's end.
    fn publish_ipc(&self, topic: &str, batch: &RecordBatch) -> Result<()> {
        let messages = ipc_messages(batch, MAX_MESSAGE_BYTES).map_err(|source| Error::Ipc {
            topic: topic.to_string(),
            source,
        })?;
        let key = batch
            .column_by_name("window_end")
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<arrow_array::TimestampMillisecondArray>()
            })
            .filter(|c| !c.is_empty() && c.is_valid(0))
            .map(|c| crate::json_rows::timestamp_text(c.value(0)))
            .unwrap_or_default();
        self.send_batch(topic, messages.len() as u64, |send| {
            messages
                .iter()
                .try_for_each(|(_, payload)| send(key.as_bytes(), payload))
        })
    }

    /// Sends to `topic` the messages (key, payload) that `produce` gives its sender, at most
    /// `most` of them: all counted in the current epoch at once (one lock per batch), and
    /// those not sent (fewer messages than counted, or left after a failure) released after.
    fn send_batch(
        &self,
        topic: &str,
        most: u64,
        produce: impl FnOnce(&mut dyn FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        let deliveries = &self.producer.context().deliveries;
        let epoch = deliveries.sending(most);
        let mut sent = 0;
        let result = produce(&mut |key, payload| {
            let record = BaseRecord::with_opaque_to(topic, epoch as usize)
                .key(key)
                .payload(payload);
            self.send_counted(record)?;
            sent += 1;
            self.metrics.published.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        if most > sent {
            deliveries.done(epoch, most - sent);
        }
        result
    }

    /// Sends a malformed message to `topic` as it came, with the error, the refused field and
    /// its origin in headers. Returns the epoch it was sent in: it is acknowledged once a
    /// [`settle`](Self::settle) returns that epoch or a later one.
    pub fn dead_letter(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        error: &RecordError,
        source: &str,
    ) -> Result<u64> {
        let reason = error.to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: ERROR_HEADER,
                value: Some(reason.as_str()),
            })
            .insert(Header {
                key: SOURCE_HEADER,
                value: Some(source),
            });
        if let Some(field) = &error.field {
            headers = headers.insert(Header {
                key: FIELD_HEADER,
                value: Some(field.as_str()),
            });
        }
        let deliveries = &self.producer.context().deliveries;
        let epoch = deliveries.sending(1);
        let mut record = BaseRecord::with_opaque_to(topic, epoch as usize)
            .payload(payload)
            .headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        self.send_counted(record)
            .inspect_err(|_| deliveries.done(epoch, 1))?;
        Ok(epoch)
    }

    /// Sends `record`, already counted in [`Deliveries`] under the epoch its opaque holds,
    /// waiting while the producer's queue is full.
    fn send_counted(&self, mut record: BaseRecord<'_, [u8], [u8], usize>) -> Result<()> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, r)) => {
                    return Err(Error::kafka(format!("producing to {}", r.topic), e));
                }
            }
        }
    }

    /// Ends the current epoch and waits until every message sent in it or before is
    /// acknowledged (messages sent meanwhile, in the next epoch, are not waited for); an error
    /// if one failed or [`FLUSH_TIMEOUT`] passes. Returns the epoch settled.
    pub fn settle(&self) -> Result<u64> {
        let deliveries = &self.producer.context().deliveries;
        let epoch = deliveries.cut();
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        let mut pause = FLUSH_PAUSE_MIN;
        while !deliveries.done_through(epoch) {
            if Instant::now() >= deadline {
                return Err(Error::kafka(
                    "waiting for the output producer's acknowledgements",
                    KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
                ));
            }
            // Ask librdkafka to send what lingers now (a flush that does not wait: see
            // `flush`); it says "timed out" while anything, of any epoch, is in flight.
            let _ = self.producer.flush(Duration::ZERO);
            std::thread::sleep(pause);
            pause = (pause * 2).min(FLUSH_PAUSE_MAX);
        }
        self.failed()?;
        Ok(epoch)
    }

    fn failed(&self) -> Result<()> {
        if let Some((topic, source)) = self
            .producer
            .context()
            .failure
            .lock()
            .expect("delivery lock")
            .clone()
        {
            return Err(Error::Delivery { topic, source });
        }
        Ok(())
    }

    /// Waits until every message sent is acknowledged; an error if one failed.
    pub fn flush(&self) -> Result<()> {
        // rdkafka's `flush(timeout)` checks, then waits on the caller's queue in 100 ms
        // polls; a threaded producer's delivery reports are served by its own thread, so each
        // wait runs its whole 100 ms whatever the brokers do. Instead: ask librdkafka to send
        // what lingers and say whether everything is delivered (a flush that does not wait),
        // and pause briefly while it is not.
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        let mut pause = FLUSH_PAUSE_MIN;
        loop {
            match self.producer.flush(Duration::ZERO) {
                Ok(()) => break,
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(FLUSH_PAUSE_MAX);
                }
                Err(e) => return Err(Error::kafka("flushing the output producer", e)),
            }
        }
        self.failed()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use personaflow_io::tables::{ResonanceRow, TableRow};

    /// Warming the producer up against brokers that do not answer fails within its timeout,
    /// and the error names the topic (the job checks the topics with its admin client first,
    /// so this is a broker lost in between).
    #[test]
    fn warming_up_without_a_broker_is_an_error_naming_the_topic() {
        let p = Publisher::new(
            "127.0.0.1:1",
            "pf.",
            HashSet::from([Table::Profiles]),
            OutputMessage::Key,
            Metrics::new(),
        )
        .unwrap();
        let e = p
            .warm_up(&["pf.profiles".to_string()], Duration::from_millis(300))
            .unwrap_err();
        assert!(e.to_string().contains("pf.profiles"), "{e}");
    }

    /// `rows` resonance rows of `user` at `window_end`.
    pub(crate) fn resonance_batch(window_end: i64, user: &str, rows: usize) -> RecordBatch {
        let row = ResonanceRow {
            window_end,
            user_id: user.into(),
            segment: "s".into(),
            cosine: 0.1,
            probability: 1.0,
            resonating: true,
            top: true,
            cold_start: false,
        };
        ResonanceRow::to_batch(&vec![row; rows])
    }

    /// The sinks of a job writing under `root`, with one sink's progress.
    fn sinks(
        root: &std::path::Path,
        spec: WindowSpec,
        fsync: bool,
        emitted_through: Option<u64>,
        observer: Option<Arc<dyn WindowObserver>>,
    ) -> StreamSinks {
        StreamSinks {
            root: root.to_path_buf(),
            spec,
            row_group_rows: 1024,
            fsync,
            emitted_through,
            closing: Arc::new(AtomicU64::new(u64::MAX)),
            progress: SinkProgress::new(1),
            publisher: None,
            observer,
        }
    }

    #[test]
    fn window_files_are_atomic_idempotent_and_skip_emitted_and_closing_windows() {
        #[derive(Debug, Default)]
        struct Seen(std::sync::Mutex<Vec<u64>>);
        impl WindowObserver for Seen {
            fn window(&self, _: Table, w: u64, _: &RecordBatch) -> personaflow_io::Result<()> {
                self.0.lock().unwrap().push(w);
                Ok(())
            }
        }
        let seen = Arc::new(Seen::default());
        let dir = tempfile::tempdir().unwrap();
        let spec = WindowSpec::try_new(60_000).unwrap();
        let sinks = sinks(dir.path(), spec, true, Some(3), Some(seen.clone()));
        let progress = sinks.progress.clone();
        let mut sink = sinks.sink(Table::Resonance, 1);
        let batch = resonance_batch(spec.end_ms(5), "u", 1);
        assert_eq!(sink.write_window(3, &batch).unwrap(), 0, "emitted before");
        assert_eq!(progress.durable(), None);
        assert_eq!(sink.write_window(5, &batch).unwrap(), 1);
        let file = dir
            .path()
            .join("resonance/date=1970-01-01/w360000-001.parquet");
        assert!(!file.exists(), "written when the frontier moves");
        sink.advance(Some(6)).unwrap();
        assert!(file.is_file());
        assert_eq!(progress.durable(), Some(6));
        assert_eq!(sink.write_window(5, &batch).unwrap(), 1, "same name again");
        sink.advance(Some(6)).unwrap();
        let files = crate::checkpoint::remove_unemitted(dir.path(), Some(360_000)).unwrap();
        assert!(files.is_empty(), "no temporary file is left: {files:?}");
        sinks.closing.store(7, Ordering::SeqCst);
        assert_eq!(sink.write_window(7, &batch).unwrap(), 0, "closing");
        sink.advance(None).unwrap();
        assert_eq!(progress.durable(), Some(7), "the end is capped at closing");
        assert_eq!(
            *seen.0.lock().unwrap(),
            vec![3, 5, 5],
            "the observer sees replayed windows, not closing ones"
        );
    }

    #[test]
    fn windows_completed_together_are_one_file_per_date_partition() {
        let dir = tempfile::tempdir().unwrap();
        let spec = WindowSpec::try_new(3_600_000).unwrap();
        let sinks = sinks(dir.path(), spec, false, None, None);
        let progress = sinks.progress.clone();
        let mut sink = sinks.sink(Table::Resonance, 0);
        let batch = |w: u64| resonance_batch(spec.end_ms(w), &format!("u{w}"), 1);
        // Hours 22, 23 (day 0), 24 and 26 (day 1) complete together, then hour 27 alone.
        for w in [22, 23, 24, 26] {
            assert_eq!(sink.write_window(w, &batch(w)).unwrap(), 1);
        }
        sink.advance(Some(27)).unwrap();
        assert_eq!(progress.durable(), Some(27));
        sink.write_window(27, &batch(27)).unwrap();
        sink.advance(None).unwrap();
        let mut files: Vec<String> = walk(dir.path());
        files.sort();
        let h = |w: u64| spec.end_ms(w);
        assert_eq!(
            files,
            vec![
                format!("resonance/date=1970-01-01/w{}-{}-000.parquet", h(22), h(23)),
                format!("resonance/date=1970-01-02/w{}-000.parquet", h(27)),
                format!("resonance/date=1970-01-02/w{}-{}-000.parquet", h(24), h(26)),
            ]
        );
    }

    fn walk(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                out.extend(walk(&p).into_iter().map(|f| format!("{name}/{f}")));
            } else {
                out.push(p.file_name().unwrap().to_string_lossy().to_string());
            }
        }
        out
    }

    #[test]
    fn an_epoch_is_done_once_its_messages_and_earlier_ones_are_whatever_comes_after() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..200 {
            let d = Deliveries::default();
            // Oracle: the epoch of every message not yet done, and the epochs cut.
            let mut outstanding: Vec<u64> = Vec::new();
            let mut cut: Vec<u64> = Vec::new();
            for _ in 0..rng.random_range(1..60) {
                match rng.random_range(0..3) {
                    0 => {
                        let n = rng.random_range(0..4);
                        let e = d.sending(n);
                        outstanding.extend(std::iter::repeat_n(e, n as usize));
                    }
                    1 if !outstanding.is_empty() => {
                        let i = rng.random_range(0..outstanding.len());
                        d.done(outstanding.swap_remove(i), 1);
                    }
                    _ => {
                        let e = d.cut();
                        assert!(cut.last().is_none_or(|c| e == c + 1), "epochs follow");
                        assert!(outstanding.iter().all(|o| *o <= e), "sent before the cut");
                        cut.push(e);
                    }
                }
                for e in &cut {
                    assert_eq!(d.done_through(*e), outstanding.iter().all(|o| o > e));
                }
            }
        }
    }

    #[test]
    fn a_report_or_a_poke_wakes_the_waiter_and_nothing_else_does() {
        let p = SinkProgress::new(1);
        let g = p.wait_change(0, Duration::ZERO);
        assert_eq!(
            g, 0,
            "nothing happened: the wait times out on the same generation"
        );
        let waiter = {
            let p = p.clone();
            std::thread::spawn(move || p.wait_change(0, Duration::from_secs(600)))
        };
        p.set(0, Table::Resonance, 4);
        assert!(waiter.join().unwrap() >= 1, "woken by the report");
        p.poke();
        assert_eq!(p.wait_change(1, Duration::from_secs(600)), 2);
        assert_eq!(p.durable(), Some(4));
    }

    #[test]
    fn latencies_are_taken_once_per_close() {
        let p = SinkProgress::new(0);
        p.closed(3);
        p.closed(3);
        p.closed(5);
        assert_eq!(p.take_latencies(3).len(), 1);
        assert_eq!(p.take_latencies(10).len(), 1);
        assert!(p.take_latencies(10).is_empty());
    }
}
