//! Assembly of the personaflow dataflow on one timely worker: events in, the operators of
//! `personaflow-operators`, and a Parquet sink per output table.
//!
//! ```text
//! events ─> window_aggregate ─> sequences ─┬─> features sink
//!                                          └─> embed_profiles ─┬─> profiles sink
//!                                                              ├─> segment_profiles ─┬─> segment_profiles sink
//!                                                              └─> resonance <───────┘─> resonance sink
//! ```

use crate::config::{Config, EmbedderKind};
use crate::sink::{
    date_partition, features_batch, profiles_batch, resonance_batch, segment_profiles_batch,
    FeatureRow, PartitionedWriter, ProfileRow, ResonanceRow, SegmentProfileRow, Table,
};
use crate::{Error, Result};
use arrow_array::RecordBatch;
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::difference::Semigroup;
use differential_dataflow::VecCollection;
use personaflow_operators::embed::{Embedder, StandardisedEmbedder};
use personaflow_operators::ops::*;
use personaflow_operators::resonance::Resonance;
use personaflow_operators::segments::SegmentSum;
use personaflow_operators::sequence::Sequence;
use personaflow_operators::{Event, WindowSpec};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::rc::Rc;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Input;
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

/// What the sinks of one worker report.
#[derive(Debug, Default)]
pub struct SinkReport {
    /// Rows written per table.
    pub rows: BTreeMap<Table, u64>,
    /// The first write error.
    pub error: Option<Error>,
}

/// Handles to a built dataflow.
#[derive(Debug)]
pub struct DataflowHandles {
    /// Where events go in; send each event at a time no later than its window.
    pub input: InputHandleVec<u64, Event>,
    /// Frontier of the outputs.
    pub probe: ProbeHandle<u64>,
    /// The sinks' report.
    pub report: Rc<RefCell<SinkReport>>,
    /// Embedder failures.
    pub embed_errors: ErrorSlot,
}

/// Creates the configured embedder.
pub fn make_embedder(config: &Config) -> Result<Box<dyn Embedder>> {
    match config.embedder.kind {
        EmbedderKind::Standardised => Ok(Box::new(StandardisedEmbedder::default())),
    }
}

/// Builds the dataflow on `worker`, writing tables under `out_root`.
pub fn build(worker: &mut Worker, config: &Config, out_root: &Path) -> Result<DataflowHandles> {
    let index = worker.index();
    let spec = config.window_spec();
    let embedder = make_embedder(config)?;
    let embedder_name = embedder.name().to_string();
    let report = Rc::new(RefCell::new(SinkReport::default()));
    let embed_errors = ErrorSlot::default();
    let probe = ProbeHandle::new();
    let row_group = config.output.row_group_rows;
    let writer = |t: Table| PartitionedWriter::new(out_root, t, index, row_group);
    let input = worker.dataflow::<u64, _, _>(|scope| {
        let (input, events) = scope.new_input::<Vec<Event>>();
        let sequences = events
            .window_aggregate(spec)
            .sequences(config.sequence.length);
        let profiles = sequences.clone().embed_profiles(
            embedder,
            config.embedder.max_batch,
            embed_errors.clone(),
        );
        let segments = profiles.clone().segment_profiles(config.segments.window);
        let resonance = profiles
            .clone()
            .resonance(segments.clone(), config.resonance.clone());

        sink_facts(
            sequences.probe_with(&probe),
            "SinkFeatures",
            writer(Table::Features),
            spec,
            report.clone(),
            move |seqs: &mut Vec<(UserWindow, Sequence)>| features_rows(&spec, seqs),
        );
        let name = embedder_name.clone();
        sink_facts(
            profiles.probe_with(&probe),
            "SinkProfiles",
            writer(Table::Profiles),
            spec,
            report.clone(),
            move |profiles: &mut Vec<(UserWindow, Profile)>| profile_rows(&spec, &name, profiles),
        );
        sink_facts(
            resonance.probe_with(&probe),
            "SinkResonance",
            writer(Table::Resonance),
            spec,
            report.clone(),
            move |rs: &mut Vec<(UserWindow, Resonance)>| resonance_rows(&spec, rs),
        );
        sink_segments(
            segments.probe_with(&probe),
            writer(Table::SegmentProfiles),
            spec,
            report.clone(),
        );
        input
    });
    Ok(DataflowHandles {
        input,
        probe,
        report,
        embed_errors,
    })
}

fn features_rows(spec: &WindowSpec, seqs: &mut [(UserWindow, Sequence)]) -> RecordBatch {
    seqs.sort_by(|a, b| a.0.cmp(&b.0));
    let rows: Vec<FeatureRow> = seqs
        .iter()
        .map(|((user, w), seq)| FeatureRow {
            window_end: spec.end_ms(*w),
            user_id: user.clone(),
            events: seq.events,
            authenticated: seq.authenticated,
            segment: seq.segment.clone(),
            history_windows: seq.history_windows,
            values: seq.current().to_vec(),
        })
        .collect();
    features_batch(&rows)
}

fn profile_rows(
    spec: &WindowSpec,
    embedder: &str,
    profiles: &mut [(UserWindow, Profile)],
) -> RecordBatch {
    profiles.sort_by(|a, b| a.0.cmp(&b.0));
    let rows: Vec<ProfileRow> = profiles
        .iter()
        .map(|((user, w), p)| ProfileRow {
            window_end: spec.end_ms(*w),
            user_id: user.clone(),
            embedder: embedder.to_string(),
            embedding: p.embedding.0.clone(),
            anomaly_score: p.anomaly_score.map(|s| s.0),
            history_windows: p.history_windows,
            events: p.events,
            authenticated: p.authenticated,
            segment: p.segment.clone(),
            device: p.context.device.clone(),
            os: p.context.os.clone(),
            country: p.context.country.clone(),
        })
        .collect();
    profiles_batch(&rows)
}

fn resonance_rows(spec: &WindowSpec, rs: &mut [(UserWindow, Resonance)]) -> RecordBatch {
    rs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rows = Vec::with_capacity(rs.len() * 8);
    for ((user, w), r) in rs.iter() {
        for (i, s) in r.scores.iter().enumerate() {
            rows.push(ResonanceRow {
                window_end: spec.end_ms(*w),
                user_id: user.clone(),
                segment: s.segment.clone(),
                cosine: s.cosine.0,
                probability: s.probability.0,
                resonating: s.resonating,
                top: i == r.top,
                cold_start: r.cold_start,
            });
        }
    }
    resonance_batch(&rows)
}

/// Sinks a collection window by window: updates are buffered per window and, once the input
/// frontier has passed a window, `to_batch` turns that window's updates into rows (or nothing),
/// which go to the window's date partition. The writer is finished when the input ends.
fn sink_windows<'scope, D, F>(
    collection: VecCollection<'scope, u64, D, isize>,
    name: &str,
    mut writer: PartitionedWriter,
    spec: WindowSpec,
    report: Rc<RefCell<SinkReport>>,
    mut to_batch: F,
) where
    D: Clone + 'static,
    F: FnMut(u64, Vec<(D, isize)>) -> Option<RecordBatch> + 'static,
{
    let table = writer.table();
    let mut pending: BTreeMap<u64, Vec<(D, isize)>> = BTreeMap::new();
    let mut finished = false;
    collection
        .inner
        .sink(Pipeline, name, move |(input, frontier)| {
            input.for_each_time(|_cap, data| {
                for batch in data {
                    for (d, t, r) in batch.drain(..) {
                        pending.entry(t).or_default().push((d, r));
                    }
                }
            });
            while let Some(entry) = pending.first_entry() {
                let window = *entry.key();
                if frontier.less_equal(&window) {
                    break;
                }
                if let Some(batch) = to_batch(window, entry.remove()) {
                    let result = writer.write(Some(&date_partition(spec.start_ms(window))), &batch);
                    record(&report, table, result.map(|_| batch.num_rows() as u64));
                }
            }
            if frontier.is_empty() && !finished {
                finished = true;
                record(&report, table, writer.finish().map(|_| 0));
            }
        });
}

/// Sinks a collection of facts or pulses: a window's updates are consolidated (operators such
/// as `join` may emit transient corrections within a window) and the records with a positive
/// net count become that window's rows.
fn sink_facts<'scope, D, F>(
    collection: VecCollection<'scope, u64, D, isize>,
    name: &str,
    writer: PartitionedWriter,
    spec: WindowSpec,
    report: Rc<RefCell<SinkReport>>,
    mut to_batch: F,
) where
    D: Ord + Clone + 'static,
    F: FnMut(&mut Vec<D>) -> RecordBatch + 'static,
{
    sink_windows(
        collection,
        name,
        writer,
        spec,
        report,
        move |_window, mut updates| {
            consolidate(&mut updates);
            let mut records: Vec<D> = updates
                .into_iter()
                .filter(|(_, r)| *r > 0)
                .map(|(d, _)| d)
                .collect();
            (!records.is_empty()).then(|| to_batch(&mut records))
        },
    );
}

/// Sinks segment profiles: the collection is the current state of every segment, so at each
/// window in which any segment changed, every segment's profile is written.
fn sink_segments<'scope>(
    collection: VecCollection<'scope, u64, (String, SegmentSum), isize>,
    writer: PartitionedWriter,
    spec: WindowSpec,
    report: Rc<RefCell<SinkReport>>,
) {
    let mut state: BTreeMap<(String, SegmentSum), isize> = BTreeMap::new();
    let name = "SinkSegmentProfiles";
    sink_windows(
        collection,
        name,
        writer,
        spec,
        report,
        move |window, updates| {
            for (d, r) in updates {
                let count = state.entry(d.clone()).or_default();
                count.plus_equals(&r);
                if *count == 0 {
                    state.remove(&d);
                }
            }
            let mut seen = HashSet::new();
            let rows: Vec<SegmentProfileRow> = state
                .keys()
                .filter(|(s, _)| seen.insert(s.clone()))
                .map(|(segment, sum)| SegmentProfileRow {
                    window_end: spec.end_ms(window),
                    segment: segment.clone(),
                    profiles: sum.profiles,
                    embedding: sum.mean(),
                })
                .collect();
            Some(segment_profiles_batch(&rows))
        },
    );
}

fn record(report: &Rc<RefCell<SinkReport>>, table: Table, result: Result<u64>) {
    let mut r = report.borrow_mut();
    match result {
        Ok(rows) => *r.rows.entry(table).or_default() += rows,
        Err(e) => {
            r.error.get_or_insert(e);
        }
    }
}
