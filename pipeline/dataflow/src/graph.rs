//! Assembly of the personaflow dataflow on one timely worker: events in, the operators of
//! `personaflow-operators`, and a Parquet sink per output table.
//!
//! ```text
//! events ─> window_aggregate ─> sequences ─┬─> features
//!                                          ├─> embed_profiles ─┬─> profiles
//!                                          │                   ├─> segment_profiles ─┬─> segment_profiles
//!                                          │                   │                     └─> resonance (+ profiles) ─> resonance
//!                                          │                   ├─> personas ─> personas, persona_assignments
//!                                          │                   │      └─> pin_personas ──────────┐
//!                                          │                   └─> members (profile + forecast) ─┴─> detect_drift
//!                                          │                       by segment and by pinned persona   ─> drift, scaling
//!                                          └─> forecast_demand ─┬─> forecasts (and the members' forecasts)
//!                                               (+ sequences) ──┴─> forecast_error
//!
//! profile + resonance + forecast + persona probabilities ─> policies ─┬─> policies, socket_profiles
//!      (gathered by user; risk calibrated by segment)                  └─> shaping_feedback
//!                                                   (allocation at w against demand at w + 1)
//! ```
//!
//! The two scored tables, `forecast_errors` and `shaping_feedback`, are written from inside
//! the operator that scores them
//! ([`forecast_error_by_into`](personaflow_operators::ops::ForecastErrorsBy::forecast_error_by_into)),
//! each row in its target window, without a dataflow time of that window's own.

use crate::config::{Config, EmbedderKind, ForecasterKind};
use crate::{Error, Result};
use arrow_array::RecordBatch;
use differential_dataflow::difference::Semigroup;
use differential_dataflow::VecCollection;
use personaflow_io::tables::{
    DriftRow, FeatureRow, ForecastErrorRow, ForecastRow, PersonaAssignmentRow, PersonaRow,
    PolicyRow, ProfileRow, ResonanceRow, ScalingRow, SegmentProfileRow, ShapingFeedbackRow,
    SocketProfileRow, Table, TableRow,
};
use personaflow_io::writer::{PartitionedSinks, SinkFactory, WindowSink};
use personaflow_models::encoder::{VaeEncoder, ENCODER_FILE, ENCODER_MEAN_FILE};
use personaflow_models::forecaster::{OnnxForecaster, FORECASTER_FILE};
use personaflow_models::stats::{InferenceStats, InferenceSummary};
use personaflow_operators::drift::operator::{
    DriftEvent, DriftSnapshots, DriftState, Scope, ScopeMember,
};
use personaflow_operators::drift::DriftPoints;
use personaflow_operators::embed::{Embedder, StandardisedEmbedder};
use personaflow_operators::forecast::{
    Forecast, ForecastResidual, Forecaster, PersistenceForecaster, DEFAULT_FORECAST_HORIZON,
};
use personaflow_operators::ops::*;
use personaflow_operators::personas::operator::{
    model_worker, Persona, PersonaAssignment, PersonaSnapshots,
};
use personaflow_operators::personas::pin::{PinSnapshots, PinState};
use personaflow_operators::personas::PersonaModel;
use personaflow_operators::policies::catalogue::PortRange;
use personaflow_operators::policies::link::feedback;
use personaflow_operators::policies::operator::{policies_from, PolicyInput};
use personaflow_operators::policies::Shaped;
use personaflow_operators::resonance::Resonance;
use personaflow_operators::segments::SegmentSum;
use personaflow_operators::sequences::{
    Sequence, SequenceHistory, SequenceLog, SequenceSnapshots, SequenceState,
};
use personaflow_operators::vector::{Score, Vector};
use personaflow_operators::{Event, WindowSpec};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Input;
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

/// Absolute forecast errors at one horizon, over the forecasts whose windows have passed.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HorizonAccuracy {
    /// Forecasts scored.
    pub forecasts: u64,
    /// Mean absolute error of predicted events.
    pub mae_requests: f64,
    /// Mean absolute error of predicted bytes.
    pub mae_bytes: f64,
}

impl HorizonAccuracy {
    fn add(&mut self, requests_abs_error: f64, bytes_abs_error: f64) {
        self.forecasts += 1;
        let n = self.forecasts as f64;
        self.mae_requests += (requests_abs_error - self.mae_requests) / n;
        self.mae_bytes += (bytes_abs_error - self.mae_bytes) / n;
    }

    /// Combines two workers' errors.
    pub fn merge(&mut self, other: &HorizonAccuracy) {
        let n = (self.forecasts + other.forecasts).max(1) as f64;
        let (a, b) = (self.forecasts as f64 / n, other.forecasts as f64 / n);
        self.mae_requests = self.mae_requests * a + other.mae_requests * b;
        self.mae_bytes = self.mae_bytes * a + other.mae_bytes * b;
        self.forecasts += other.forecasts;
    }
}

/// What the sinks of one worker report.
#[derive(Debug, Default)]
pub struct SinkReport {
    /// Rows written per table.
    pub rows: BTreeMap<Table, u64>,
    /// Forecast errors per horizon (1-based): the signal that says when to retrain.
    pub forecast_errors: BTreeMap<u32, HorizonAccuracy>,
    /// The first write error.
    pub error: Option<Error>,
    /// Each sink's input frontier (`None`: it has seen every window), by the sink's operator
    /// name: the outputs' frontier is the earliest of them. The sinks keep it themselves,
    /// rather than through a probe operator before each: on a sparse run every operator costs
    /// timely's progress tracking for every window.
    pub frontiers: Vec<(String, Option<u64>)>,
}

impl SinkReport {
    /// The outputs' frontier: the earliest window some sink may still be given (`None`: every
    /// sink has seen every window, or there are none).
    pub fn output_frontier(&self) -> Option<u64> {
        self.frontiers.iter().filter_map(|(_, f)| *f).min()
    }
}

/// Handles to a built dataflow.
#[derive(Debug)]
pub struct DataflowHandles {
    /// Where events go in; send each event at a time no later than its window.
    pub input: InputHandleVec<u64, Event>,
    /// The sinks' report.
    pub report: Rc<RefCell<SinkReport>>,
    /// Embedder failures.
    pub embed_errors: ErrorSlot,
    /// Frontiers of stages before the sinks, for diagnostics (the sinks' own are in the
    /// report).
    pub stages: Vec<(&'static str, ProbeHandle<u64>)>,
    /// The stateful operators' snapshots ([`StateMode::Kept`]).
    pub snapshots: Option<StateSnapshots>,
}

/// The long-lived state of one worker's stateful operators as of the end of `window`: the
/// persona model, users' persona pins, drift detectors and demand histories. Everything else
/// in the dataflow is windowed and rebuilt from the last `L + W` windows of events (`L + W + R`
/// with policies, `R` their risk windows); this is
/// not, so a continuous job checkpoints it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorState {
    /// The window it is the state after.
    pub window: u64,
    /// The persona model (on the worker that carries it).
    pub personas: Option<PersonaModel>,
    /// Pinned personas of this worker's users.
    pub pins: PinState,
    /// Drift detectors and demand histories of this worker's scopes.
    pub drift: DriftState,
    /// With `sequence.history = "active"`: this worker's sequence rings as of the window
    /// before a restart's replay starts (`window + 1 - Config::restart_replay_windows()`);
    /// the replay pushes the windows after it again. `None` with window history, whose rings
    /// the replay rebuilds.
    #[serde(default)]
    pub sequences: Option<SequenceState>,
}

impl OperatorState {
    /// The workers' states as of one window, as one (to be split again, possibly between
    /// another number of workers): an error when they overlap.
    pub fn merge(window: u64, parts: Vec<OperatorState>) -> Result<OperatorState> {
        let mut models = parts.iter().filter_map(|p| p.personas.clone());
        let personas = models.next();
        if models.next().is_some() {
            return Err(
                personaflow_operators::Error::StateOverlap("the persona model".into()).into(),
            );
        }
        let pins = PinState::merge(parts.iter().map(|p| p.pins.clone()))?;
        let sequences: Vec<SequenceState> =
            parts.iter().filter_map(|p| p.sequences.clone()).collect();
        let sequences = match sequences.is_empty() {
            true => None,
            false => Some(SequenceState::merge(sequences)?),
        };
        let drift = DriftState::merge(parts.into_iter().map(|p| p.drift))?;
        Ok(OperatorState {
            window,
            personas,
            pins,
            drift,
            sequences,
        })
    }

    /// The part worker `index` of `peers` resumes from.
    pub fn for_worker(&self, index: usize, peers: usize) -> OperatorState {
        OperatorState {
            window: self.window,
            personas: self
                .personas
                .clone()
                .filter(|_| index == model_worker(peers)),
            pins: self.pins.owned_by(index, peers),
            drift: self.drift.owned_by(index, peers),
            sequences: self.sequences.as_ref().map(|s| s.owned_by(index, peers)),
        }
    }
}

/// The stateful operators' snapshots on one worker ([`Snapshots`]).
#[derive(Clone, Debug, Default)]
pub struct StateSnapshots {
    /// The persona model's.
    pub personas: PersonaSnapshots,
    /// The pins'.
    pub pins: PinSnapshots,
    /// The drift detectors'.
    pub drift: DriftSnapshots,
    /// The sequence rings' log (active-history sequences only).
    pub sequences: Option<SequenceSnapshots>,
    /// The windows a restart replays ([`Config::restart_replay_windows`]).
    pub replay: u64,
}

impl StateSnapshots {
    /// This worker's state as of the end of `window` (a fresh one where an operator has no
    /// snapshot that old).
    pub fn through(&self, window: u64) -> OperatorState {
        OperatorState {
            sequences: self.sequences.as_ref().map(|log| {
                log.borrow()
                    .state_before((window + 1).saturating_sub(self.replay))
                    .expect("the sequence log is pruned only before the oldest checkpoint's")
            }),
            ..self.through_without_sequences(window)
        }
    }

    /// [`through`](Self::through) without the sequence rings.
    fn through_without_sequences(&self, window: u64) -> OperatorState {
        OperatorState {
            window,
            // Workers other than the model's hold a fresh model: no state.
            personas: state_through(&self.personas, window)
                .filter(|m| *m != PersonaModel::default()),
            pins: state_through(&self.pins, window).unwrap_or_default(),
            drift: state_through(&self.drift, window).unwrap_or_default(),
            sequences: None,
        }
    }

    /// Drops the snapshots older than the ones [`through`](Self::through) takes for `window`.
    pub fn prune(&self, window: u64) {
        prune_snapshots(&self.personas, window);
        prune_snapshots(&self.pins, window);
        prune_snapshots(&self.drift, window);
        if let Some(log) = &self.sequences {
            log.borrow_mut()
                .prune_before((window + 1).saturating_sub(self.replay));
        }
    }

    /// The state as of each window any operator has a snapshot of, in window order: what a
    /// checkpoint taken after this worker has stopped chooses from (the last one not after
    /// the window it checkpoints). Without sequence rings, which that checkpoint takes from
    /// the [`SequenceLog`] as of its own window.
    pub fn history(&self) -> Vec<OperatorState> {
        let mut windows: Vec<u64> = Vec::new();
        windows.extend(self.personas.borrow().keys());
        windows.extend(self.pins.borrow().keys());
        windows.extend(self.drift.borrow().keys());
        windows.sort_unstable();
        windows.dedup();
        // Without the sequence rings: a full copy per window would be costly, and the final
        // checkpoint takes them from the log as of the window it checkpoints.
        windows
            .into_iter()
            .map(|w| self.through_without_sequences(w))
            .collect()
    }
}

/// Whether a dataflow's stateful operators keep snapshots of their state, and where they start.
#[derive(Clone, Debug, Default)]
pub enum StateMode {
    /// Fresh state, no snapshots (a backfill).
    #[default]
    Off,
    /// Snapshots kept for checkpoints, from a fresh state or from `initial` (this worker's
    /// part: [`OperatorState::for_worker`]), skipping the windows up to its window.
    Kept {
        /// The state to resume from.
        initial: Option<OperatorState>,
    },
}

/// The models a job runs, as recorded in `run.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ModelsReport {
    /// The embedder's name.
    pub embedder: String,
    /// The forecaster's name (`None`: forecasting is off).
    pub forecaster: Option<String>,
    /// The onnxruntime execution provider the ONNX models run on (`None`: no ONNX model).
    pub execution_provider: Option<String>,
    /// The onnxruntime library loaded.
    pub onnxruntime: Option<String>,
}

/// Inference time of the job's models, shared by the sessions of every worker.
#[derive(Clone, Debug, Default)]
pub struct ModelStats {
    /// The encoder's.
    pub encoder: InferenceStats,
    /// The mean-only encoder's (the windows views of active histories, where it is beside
    /// the encoder).
    pub encoder_mean: InferenceStats,
    /// The forecaster's.
    pub forecaster: InferenceStats,
}

/// Inference time as reported in `run.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct InferenceReport {
    /// The encoder (absent with a model-free embedder).
    pub encoder: Option<InferenceSummary>,
    /// The mean-only encoder (absent with a model-free embedder, or where it never ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder_mean: Option<InferenceSummary>,
    /// The forecaster (absent with a model-free forecaster).
    pub forecaster: Option<InferenceSummary>,
    /// Inference seconds over worker seconds (elapsed x workers): the share of the job's
    /// compute spent in the models.
    pub share_of_worker_time: f64,
}

impl ModelStats {
    /// The report of a job of `config` that ran `elapsed_secs`.
    pub fn report(&self, config: &Config, elapsed_secs: f64) -> InferenceReport {
        let vae = config.embedder.kind == EmbedderKind::Vae;
        let encoder = vae.then(|| self.encoder.summary());
        let encoder_mean = Some(self.encoder_mean.summary()).filter(|s| vae && s.batches > 0);
        let forecaster =
            (config.forecaster.kind == ForecasterKind::Lstm).then(|| self.forecaster.summary());
        let secs = [&encoder, &encoder_mean, &forecaster]
            .into_iter()
            .map(|s| s.as_ref().map_or(0.0, |s| s.secs))
            .sum::<f64>();
        let worker_secs = elapsed_secs * config.runtime.workers as f64;
        InferenceReport {
            encoder,
            encoder_mean,
            forecaster,
            share_of_worker_time: if worker_secs > 0.0 {
                secs / worker_secs
            } else {
                0.0
            },
        }
    }
}

/// Creates the configured embedder.
pub fn make_embedder(config: &Config, stats: &ModelStats) -> Result<Box<dyn Embedder>> {
    Ok(open_embedder(config, stats)?.0)
}

fn open_embedder(
    config: &Config,
    stats: &ModelStats,
) -> Result<(Box<dyn Embedder>, Option<&'static str>)> {
    match config.embedder.kind {
        EmbedderKind::Standardised => Ok((Box::new(StandardisedEmbedder::default()), None)),
        EmbedderKind::Vae => {
            let dir = config.models.resolved_dir();
            let options = config.models.session_options();
            let mut encoder = VaeEncoder::open(&dir.join(ENCODER_FILE), &options)?
                .with_stats(stats.encoder.clone());
            // The windows views need `mu` alone: the mean-only encoder, where it is beside the
            // encoder, gives it bit for bit at about half the cost (without it, the encoder).
            let mean = dir.join(ENCODER_MEAN_FILE);
            if mean.is_file() {
                encoder = encoder.with_mean_model(&mean, &options, stats.encoder_mean.clone())?;
            }
            let provider = encoder.provider();
            Ok((Box::new(encoder), Some(provider)))
        }
    }
}

/// Creates the configured forecaster (`None` when forecasting is off).
pub fn make_forecaster(config: &Config, stats: &ModelStats) -> Result<Option<Box<dyn Forecaster>>> {
    Ok(open_forecaster(config, stats)?.0)
}

type OpenedForecaster = (Option<Box<dyn Forecaster>>, Option<&'static str>);

fn open_forecaster(config: &Config, stats: &ModelStats) -> Result<OpenedForecaster> {
    match config.forecaster.kind {
        ForecasterKind::None => Ok((None, None)),
        ForecasterKind::Persistence => Ok((
            Some(Box::new(PersistenceForecaster::try_new(
                DEFAULT_FORECAST_HORIZON,
            )?)),
            None,
        )),
        ForecasterKind::Lstm => {
            let path = config.models.resolved_dir().join(FORECASTER_FILE);
            let forecaster = OnnxForecaster::open(&path, &config.models.session_options())?
                .with_stats(stats.forecaster.clone());
            let provider = forecaster.provider();
            Ok((Some(Box::new(forecaster)), Some(provider)))
        }
    }
}

/// Opens the configured models once, so that a missing library, a missing model, a model of
/// another feature schema or an unavailable execution provider fails the job before it
/// writes anything; reports what will run, and where.
pub fn check_models(config: &Config) -> Result<ModelsReport> {
    let stats = ModelStats::default();
    let (embedder, p1) = open_embedder(config, &stats)?;
    let (forecaster, p2) = open_forecaster(config, &stats)?;
    let onnx = p1.or(p2);
    Ok(ModelsReport {
        embedder: embedder.name().to_string(),
        forecaster: forecaster.map(|f| f.name().to_string()),
        execution_provider: onnx.map(str::to_string),
        onnxruntime: onnx
            .and(personaflow_models::runtime::library_path())
            .map(|p| p.display().to_string()),
    })
}

/// Builds the dataflow on `worker`, writing date-partitioned tables under `out_root` (the
/// backfill's layout), and showing every window to `observer` (if any).
pub fn build(
    worker: &mut Worker,
    config: &Config,
    out_root: &Path,
    stats: &ModelStats,
    observer: Option<std::sync::Arc<dyn personaflow_io::writer::WindowObserver>>,
) -> Result<DataflowHandles> {
    let sinks = PartitionedSinks {
        root: out_root.to_path_buf(),
        spec: config.window_spec(),
        row_group_rows: config.output.row_group_rows,
        observer,
    };
    build_with(worker, config, &sinks, stats, StateMode::Off)
}

/// The tables the dataflow of `config` writes (each worker has a sink for each).
pub fn tables(config: &Config) -> Vec<Table> {
    Table::ALL
        .into_iter()
        .filter(|t| match t {
            _ if !t.from_dataflow() => false,
            Table::Forecasts | Table::ForecastErrors => {
                config.forecaster.kind != ForecasterKind::None
            }
            Table::Policies | Table::SocketProfiles | Table::ShapingFeedback => {
                config.policy.enabled
            }
            _ => true,
        })
        .collect()
}

/// Builds the dataflow on `worker`, with the sinks `sinks` makes for each table, its stateful
/// operators as `state` says.
pub fn build_with(
    worker: &mut Worker,
    config: &Config,
    sinks: &dyn SinkFactory,
    stats: &ModelStats,
    state: StateMode,
) -> Result<DataflowHandles> {
    let index = worker.index();
    let spec = config.window_spec();
    let embedder = make_embedder(config, stats)?;
    let embedder_name: Arc<str> = embedder.name().into();
    let forecaster = make_forecaster(config, stats)?;
    let catalogue = match config.policy.enabled {
        true => Some(Arc::new(config.catalogue()?)),
        false => None,
    };
    let report = Rc::new(RefCell::new(SinkReport::default()));
    let embed_errors = ErrorSlot::default();
    let sequence_spec = config.sequence_spec();
    let replay = config.restart_replay_windows();
    let (snapshots, initial) = match state {
        StateMode::Off => (None, None),
        StateMode::Kept { initial } => (
            Some(StateSnapshots {
                replay,
                ..StateSnapshots::default()
            }),
            initial,
        ),
    };
    // Active-history rings reach back further than the replay: they are checkpointed, as of
    // the window before the replay starts.
    let init_sequences = initial.as_ref().and_then(|s| {
        let before = (s.window + 1).saturating_sub(replay);
        s.sequences.clone().map(|state| (before, state))
    });
    let snapshots = snapshots.map(|mut snaps| {
        if sequence_spec.history == SequenceHistory::Active {
            let (before, state) = init_sequences.clone().unwrap_or_default();
            snaps.sequences = Some(Rc::new(RefCell::new(SequenceLog::new(
                sequence_spec,
                state,
                before,
            ))));
        }
        snaps
    });
    let (init_personas, init_pins, init_drift) = match initial {
        Some(s) => (
            Some((s.window, s.personas.unwrap_or_default())),
            Some((s.window, s.pins)),
            Some((s.window, s.drift)),
        ),
        None => (None, None, None),
    };
    let snaps = snapshots.clone();
    let writer = |t: Table| sinks.sink(t, index);
    let mut stages: Vec<(&'static str, ProbeHandle<u64>)> = Vec::new();
    let mut stage = |name: &'static str| {
        let p = ProbeHandle::new();
        stages.push((name, p.clone()));
        p
    };
    let input = worker.dataflow::<u64, _, _>(|scope| {
        let (input, events) = scope.new_input::<Vec<Event>>();
        // The events pass through a probe (a pipeline operator) before the exchange in
        // `window_aggregate`. Exchanging straight from the input handle stalled about one
        // two-worker backfill in three at the last open window (window_aggregate kept its
        // capabilities with its input closed); with this stage in between, 60 runs of the same
        // reproduction completed. The cause inside timely is not identified; the reproduction
        // is `evaluate scenarios --users 1000 --keep DIR`, then backfilling the
        // iot-mix-to-gamer events with 2 workers in a loop.
        let events = timely::dataflow::operators::Probe::probe_with(events, &stage("events"));
        let windows = events.window_aggregate(spec);
        let sequences = windows.sequences_kept(
            sequence_spec,
            init_sequences.map(|(_, state)| state),
            snaps.as_ref().and_then(|s| s.sequences.clone()),
        );
        let profiles = sequences.clone().embed_profiles_with(
            embedder,
            config.embedder.max_batch,
            embed_errors.clone(),
            config.drift.points == DriftPoints::Windows,
        );
        let mut forecast_requests = None;
        let mut forecast_parts = None;
        if let Some(forecaster) = forecaster {
            let name: Arc<str> = forecaster.name().into();
            let forecasts = sequences.clone().forecast_demand(
                forecaster,
                config.forecaster.max_batch,
                embed_errors.clone(),
            );
            forecast_parts = Some(forecasts.clone());
            forecast_requests = Some(forecasts.clone().map(|(k, f)| {
                let requests = f.requests.iter().map(|s| s.0).collect();
                (k, Vector(requests))
            }));
            let n = name.clone();
            let accuracy = report.clone();
            sink_facts(
                forecasts.clone(),
                "SinkForecasts",
                writer(Table::Forecasts),
                report.clone(),
                move |fs: &mut Vec<(UserWindow, Forecast)>, out: &mut Vec<ForecastRow>| {
                    forecast_rows(&spec, &n, fs, out)
                },
            );
            sink_scored(
                forecasts,
                sequences.clone(),
                |f| (f, ()),
                |e, _| e,
                "SinkForecastErrors",
                writer(Table::ForecastErrors),
                report.clone(),
                move |es: &mut Vec<(UserWindow, ForecastResidual)>,
                      out: &mut Vec<ForecastErrorRow>| {
                    let mut acc = accuracy.borrow_mut();
                    for (_, e) in es.iter() {
                        acc.forecast_errors
                            .entry(e.horizon)
                            .or_default()
                            .add(e.requests_abs_error(), e.bytes_abs_error());
                    }
                    forecast_error_rows(&spec, &name, es, out)
                },
            );
        }
        let segments = profiles.clone().segment_profiles(config.segments.window);
        let resonance = profiles
            .clone()
            .resonance(segments.clone(), config.resonance.clone());
        let personas = profiles.clone().personas(
            config.personas.clone(),
            init_personas,
            snaps.as_ref().map(|s| s.personas.clone()),
        );
        // Facts of a window are joined within it (`join_window`): no arrangement, and no
        // retraction a window later for every operator downstream to process.
        let pinned = personas
            .assignments
            .clone()
            .map(|(k, a)| (k, a.persona))
            .pin_personas(
                config.drift.persona_pin,
                init_pins,
                snaps.as_ref().map(|s| s.pins.clone()),
            );
        let members = match forecast_requests {
            Some(requests) => drift_members(
                profiles.clone().join_window_placed(requests, by_user),
                pinned,
            ),
            None => drift_members(profiles.clone(), pinned),
        };
        let drift = members.detect_drift(
            config.drift.clone(),
            config.scaling.clone(),
            init_drift,
            snaps.as_ref().map(|s| s.drift.clone()),
        );
        sink_windows(
            personas.personas,
            "SinkPersonas",
            writer(Table::Personas),
            report.clone(),
            move |window, updates, out: &mut Vec<PersonaRow>| {
                persona_rows(&spec, window, updates, out)
            },
        );
        if let Some(catalogue) = catalogue {
            // One operator gathers the parts from each collection (no map and concatenation
            // of each, which cost a time at each of them for every window with data).
            let mut parts = vec![
                PolicyInput::new(profiles.clone()),
                PolicyInput::new(resonance.clone()),
                PolicyInput::new(personas.assignments.clone()),
            ];
            if let Some(f) = forecast_parts {
                parts.push(PolicyInput::new(f));
            }
            let policies = policies_from(parts, catalogue, config.policy_config(), spec);
            sink_shaping_feedback(
                policies.clone(),
                sequences.clone(),
                &spec,
                writer(Table::ShapingFeedback),
                report.clone(),
            );
            sink_policies(
                policies,
                [writer(Table::Policies), writer(Table::SocketProfiles)],
                spec,
                report.clone(),
            );
        }
        sink_facts(
            personas.assignments,
            "SinkPersonaAssignments",
            writer(Table::PersonaAssignments),
            report.clone(),
            move |xs: &mut Vec<(UserWindow, PersonaAssignment)>,
                  out: &mut Vec<PersonaAssignmentRow>| assignment_rows(&spec, xs, out),
        );
        sink_windows(
            drift.clone(),
            "SinkDrift",
            writer(Table::Drift),
            report.clone(),
            move |window, updates, out: &mut Vec<DriftRow>| {
                out.extend(drift_rows(&spec, window, updates))
            },
        );
        sink_windows(
            drift,
            "SinkScaling",
            writer(Table::Scaling),
            report.clone(),
            move |window, updates, out: &mut Vec<ScalingRow>| {
                out.extend(scaling_rows(&spec, window, updates))
            },
        );

        sink_facts(
            sequences,
            "SinkFeatures",
            writer(Table::Features),
            report.clone(),
            move |seqs: &mut Vec<(UserWindow, Sequence)>, out: &mut Vec<FeatureRow>| {
                features_rows(&spec, seqs, out)
            },
        );
        let name = embedder_name.clone();
        sink_facts(
            profiles,
            "SinkProfiles",
            writer(Table::Profiles),
            report.clone(),
            move |profiles: &mut Vec<(UserWindow, Profile)>, out: &mut Vec<ProfileRow>| {
                profile_rows(&spec, &name, profiles, out)
            },
        );
        sink_facts(
            resonance,
            "SinkResonance",
            writer(Table::Resonance),
            report.clone(),
            move |rs: &mut Vec<(UserWindow, Resonance)>, out: &mut Vec<ResonanceRow>| {
                resonance_rows(&spec, rs, out)
            },
        );
        sink_segments(
            segments,
            writer(Table::SegmentProfiles),
            spec,
            report.clone(),
        );
        input
    });
    Ok(DataflowHandles {
        input,
        report,
        embed_errors,
        stages,
        snapshots,
    })
}

/// What a feedback row carries of the policy that made the allocation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct Allocation {
    persona: Arc<str>,
    allocated_bps: u64,
    burst_bytes: u64,
    rate_limit_rps: Score,
    latency_target_ms: Score,
}

/// A feedback fact: the allocation made at `made_at` for the window of its key, and the
/// demand that came in it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct FeedbackRecord {
    made_at: u64,
    allocation: Allocation,
    demand_bytes: u64,
    demand_requests: u64,
}

/// Sinks each policy's allocation at window `w` against the user's demand in window `w + 1`
/// (zero when the user was inactive), as a row of window `w + 1`. The allocation goes through
/// the forecast-error operator as a one-window "forecast" of the bytes and requests it allows
/// (with the allocation's other terms as its payload), which scores it once `w + 1` is
/// complete, with the zeros of inactive users, and hands the rows to the sink itself
/// ([`sink_scored`]).
fn sink_shaping_feedback<'scope>(
    policies: VecCollection<'scope, u64, (UserWindow, Shaped), isize>,
    sequences: VecCollection<'scope, u64, (UserWindow, Sequence), isize>,
    spec: &WindowSpec,
    writer: Box<dyn WindowSink>,
    report: Rc<RefCell<SinkReport>>,
) {
    let spec = *spec;
    let secs = spec.len_ms() as f64 / 1_000.0;
    let allowed = move |shaped: Shaped| {
        let p = &shaped.0;
        let bytes = p.allocated_bps as f64 * secs / 8.0;
        let requests = f64::from(p.rate_limit_rps.0) * secs;
        let f = Forecast::try_new(vec![requests as f32], vec![bytes as f32])
            .expect("one request and one byte prediction");
        let a = Allocation {
            persona: p.persona.clone(),
            allocated_bps: p.allocated_bps,
            burst_bytes: p.burst_bytes,
            rate_limit_rps: p.rate_limit_rps,
            latency_target_ms: p.latency_target_ms,
        };
        (f, a)
    };
    let scored = |e: ForecastResidual, allocation: &Allocation| FeedbackRecord {
        made_at: e.made_at,
        allocation: allocation.clone(),
        demand_bytes: e.actual_bytes,
        demand_requests: e.actual_requests,
    };
    sink_scored(
        policies,
        sequences,
        allowed,
        scored,
        "SinkShapingFeedback",
        writer,
        report,
        move |fs: &mut Vec<(UserWindow, FeedbackRecord)>, out: &mut Vec<ShapingFeedbackRow>| {
            feedback_rows(&spec, fs, out)
        },
    );
}

/// Sinks policies and socket profiles, both tables from the same records.
fn sink_policies<'scope>(
    collection: VecCollection<'scope, u64, (UserWindow, Shaped), isize>,
    [policies, sockets]: [Box<dyn WindowSink>; 2],
    spec: WindowSpec,
    report: Rc<RefCell<SinkReport>>,
) {
    let mut ports = PortNames::default();
    sink_windows_to(
        collection,
        "SinkPolicies",
        vec![policies, sockets],
        report,
        move |_window, mut updates, out: &mut (Vec<PolicyRow>, Vec<SocketProfileRow>)| {
            consolidate(&mut updates);
            let records = updates.into_iter().filter(|(_, r)| *r > 0).map(|(d, _)| d);
            policy_rows(&spec, records, &mut ports, out)
        },
    );
}

/// Each port range's text (`443`, `27000-27050`), written once and shared by every row that
/// allows it: a catalogue's policies name a few ranges, which every row wrote afresh (1% of a
/// model-free run's samples went to formatting them).
#[derive(Debug, Default)]
struct PortNames(BTreeMap<PortRange, Arc<str>>);

impl PortNames {
    /// Ranges kept at most (the ranges of a catalogue and their intersections are far fewer;
    /// past this, further ones are written each time).
    const MAX: usize = 4_096;

    /// `range`'s text.
    fn name(&mut self, range: &PortRange) -> Arc<str> {
        if let Some(name) = self.0.get(range) {
            return Arc::clone(name);
        }
        let name: Arc<str> = range.to_string().into();
        if self.0.len() < Self::MAX {
            self.0.insert(*range, Arc::clone(&name));
        }
        name
    }
}

/// The `policies` and `socket_profiles` rows of a window's records (consolidated, hence in
/// key order), their strings moved into the rows.
fn policy_rows(
    spec: &WindowSpec,
    records: impl Iterator<Item = (UserWindow, Shaped)>,
    ports: &mut PortNames,
    (policies, sockets): &mut (Vec<PolicyRow>, Vec<SocketProfileRow>),
) {
    for ((user, w), shaped) in records {
        let (p, s) = std::sync::Arc::unwrap_or_clone(shaped);
        let window_end = spec.end_ms(w);
        sockets.push(SocketProfileRow {
            window_end,
            user_id: user.clone(),
            predicted_bytes_per_s: s.predicted_bytes_per_s.0,
            predicted_requests_per_s: s.predicted_requests_per_s.0,
            request_type: s.request_type.name(),
            risk: s.risk.map(|r| r.0),
            rtt_ms: s.rtt_ms.0,
            send_buffer: s.send_buffer,
            receive_buffer: s.receive_buffer,
            rate_limit_bytes_per_s: s.rate_limit_bytes_per_s,
            security_level: s.security_level.name(),
            endpoint: s.endpoint,
        });
        let (personas, probabilities) = p.personas.into_iter().map(|(n, x)| (n, x.0)).unzip();
        policies.push(PolicyRow {
            window_end,
            user_id: user.clone(),
            persona: p.persona,
            personas,
            probabilities,
            diffserv_class: p.diffserv_class,
            dscp: u32::from(p.dscp),
            endpoint_class: p.endpoint_class,
            floor_bps: p.floor_bps,
            guaranteed_bps: p.guaranteed_bps,
            ceiling_bps: p.ceiling_bps,
            allocated_bps: p.allocated_bps,
            sized_for_bps: p.sized_for_bps,
            burst_bytes: p.burst_bytes,
            priority_weight: p.priority_weight.0,
            latency_target_ms: p.latency_target_ms.0,
            rate_limit_rps: p.rate_limit_rps.0,
            request_limit_rps: p.request_limit_rps.0,
            send_buffer_min: p.send_buffer[0],
            send_buffer_max: p.send_buffer[1],
            receive_buffer_min: p.receive_buffer[0],
            receive_buffer_max: p.receive_buffer[1],
            authentication: p.authentication.name(),
            inspection: p.inspection.name(),
            allowed_app_classes: p.allowed_app_classes,
            allowed_ports: p.allowed_ports.iter().map(|r| ports.name(r)).collect(),
            vpn_required: p.vpn_required,
            current_bytes: p.current_bytes,
            current_requests: p.current_requests,
        });
    }
}

fn feedback_rows(
    spec: &WindowSpec,
    fs: &mut [(UserWindow, FeedbackRecord)],
    out: &mut Vec<ShapingFeedbackRow>,
) {
    fs.sort_by(|a, b| a.0.cmp(&b.0));
    let secs = spec.len_ms() as f64 / 1_000.0;
    out.extend(fs.iter().map(|((user, w), f)| {
        let a = &f.allocation;
        let judged = feedback(
            a.allocated_bps as f64,
            a.burst_bytes as f64,
            f64::from(a.rate_limit_rps.0),
            f64::from(a.latency_target_ms.0),
            f.demand_bytes as f64,
            f.demand_requests,
            secs,
        );
        ShapingFeedbackRow {
            window_end: spec.end_ms(*w),
            user_id: user.clone(),
            made_at_window_end: spec.end_ms(f.made_at),
            persona: a.persona.clone(),
            allocated_bps: a.allocated_bps,
            rate_limit_rps: a.rate_limit_rps.0,
            latency_target_ms: a.latency_target_ms.0,
            demand_bytes: f.demand_bytes,
            demand_requests: f.demand_requests,
            shortfall_bytes: judged.shortfall_bytes,
            waste_bytes: judged.waste_bytes,
            excess_requests: judged.excess_requests,
            served_share: judged.served_share,
            within_target: judged.within_target,
        }
    }));
}

/// What a member of a drift scope is made from: a profile, with the requests it was forecast
/// to make when there is a forecaster.
trait MemberOf {
    fn profile(&self) -> &Profile;
    fn into_member(self) -> ScopeMember;
}

impl MemberOf for Profile {
    fn profile(&self) -> &Profile {
        self
    }
    fn into_member(self) -> ScopeMember {
        scope_member(&self, None)
    }
}

impl MemberOf for (Profile, Vector) {
    fn profile(&self) -> &Profile {
        &self.0
    }
    fn into_member(self) -> ScopeMember {
        scope_member(&self.0, Some(self.1))
    }
}

/// The members of the drift scopes: each authenticated user of a known segment in its
/// segment, each user with a (pinned) persona in its persona. `members` go to both without a
/// map of their own first (each operator costs a time for every window with data).
fn drift_members<'scope, M: differential_dataflow::ExchangeData + MemberOf>(
    members: VecCollection<'scope, u64, (UserWindow, M), isize>,
    pinned: VecCollection<'scope, u64, (UserWindow, u32), isize>,
) -> VecCollection<'scope, u64, ((Scope, UserId), ScopeMember), isize> {
    let segment_members = members.clone().flat_map(|((user, _), m)| {
        let p = m.profile();
        let segment = p.segment.clone().filter(|_| p.authenticated)?;
        Some(((Scope::Segment(segment), user), m.into_member()))
    });
    let persona_members = pinned
        .join_window_placed(members, by_user)
        .map(|((user, _), (persona, m))| ((Scope::Persona(persona), user), m.into_member()));
    segment_members.concat(persona_members)
}

fn scope_member(p: &Profile, forecast: Option<Vector>) -> ScopeMember {
    ScopeMember {
        embedding: p.windows_embedding().clone(),
        features: p.features.clone(),
        requests: p.events,
        forecast: forecast.filter(|f| !f.is_empty()),
    }
}

fn persona_rows(
    spec: &WindowSpec,
    window: u64,
    mut updates: Vec<((u32, Persona), isize)>,
    out: &mut Vec<PersonaRow>,
) {
    consolidate(&mut updates);
    out.extend(
        updates
            .iter()
            .filter(|(_, r)| *r > 0)
            .map(|((_, p), _)| PersonaRow {
                window_end: spec.end_ms(window),
                persona_id: p.id,
                size: p.size,
                personas: p.personas,
                reselected: p.reselected,
                centroid: p.centroid.0.clone(),
                top_features: p.characteristics.iter().map(|(n, _)| n.clone()).collect(),
                top_feature_z: p.characteristics.iter().map(|(_, z)| z.0).collect(),
            }),
    );
}

fn assignment_rows(
    spec: &WindowSpec,
    xs: &mut [(UserWindow, PersonaAssignment)],
    out: &mut Vec<PersonaAssignmentRow>,
) {
    xs.sort_by(|a, b| a.0.cmp(&b.0));
    out.extend(xs.iter().map(|((user, w), a)| PersonaAssignmentRow {
        window_end: spec.end_ms(*w),
        user_id: user.clone(),
        persona_id: a.persona,
        distance: a.distance.0,
        persona_ids: a.ids.to_vec(),
        probabilities: a.probabilities.0.clone(),
    }));
}

/// The window's drift events (sorted by scope), netted.
fn drift_events(
    window: u64,
    mut updates: Vec<((Scope, DriftEvent), isize)>,
) -> Vec<(u64, Scope, DriftEvent)> {
    consolidate(&mut updates);
    updates
        .into_iter()
        .filter(|(_, r)| *r > 0)
        .map(|((scope, e), _)| (window, scope, e))
        .collect()
}

/// The window's drift events as `drift` rows.
pub fn drift_rows(
    spec: &WindowSpec,
    window: u64,
    updates: Vec<((Scope, DriftEvent), isize)>,
) -> Vec<DriftRow> {
    drift_events(window, updates)
        .into_iter()
        .map(|(window, scope, e)| DriftRow {
            window_end: spec.end_ms(window),
            scope: scope.kind().to_string(),
            scope_id: scope.id(),
            onset_window_end: spec.end_ms(e.onset),
            distance: e.distance.0,
            threshold: e.threshold.0,
            score: e.score.0,
            p_value: e.p_value.0,
            moved_features: e.moved.iter().map(|(n, _)| n.clone()).collect(),
            moved_z: e.moved.iter().map(|(_, z)| z.0).collect(),
            users: e.users,
            action: e.action().to_string(),
        })
        .collect()
}

/// The window's drift events as `scaling` rows (their recommendations).
pub fn scaling_rows(
    spec: &WindowSpec,
    window: u64,
    updates: Vec<((Scope, DriftEvent), isize)>,
) -> Vec<ScalingRow> {
    drift_events(window, updates)
        .into_iter()
        .map(|(window, scope, e)| ScalingRow {
            window_end: spec.end_ms(window),
            scope: scope.kind().to_string(),
            scope_id: scope.id(),
            users: e.users,
            current_requests: e.current_requests.0,
            predicted_requests: e.predicted_requests.0.clone(),
            upper_requests: e.upper_requests.0.clone(),
            calibration_residuals: e.calibration_residuals,
            trend_per_window: e.trend.0,
            peak_horizon: e.peak_horizon,
            peak_window_end: spec.end_ms(window + u64::from(e.peak_horizon)),
            capacity_per_instance: e.capacity_per_instance.0,
            current_instances: e.current_instances,
            recommended_instances: e.recommended_instances,
            change: e.change,
            action: e.action().to_string(),
        })
        .collect()
}

fn features_rows(
    spec: &WindowSpec,
    seqs: &mut [(UserWindow, Sequence)],
    out: &mut Vec<FeatureRow>,
) {
    seqs.sort_by(|a, b| a.0.cmp(&b.0));
    out.extend(seqs.iter().map(|((user, w), seq)| FeatureRow {
        window_end: spec.end_ms(*w),
        user_id: user.clone(),
        events: seq.events,
        bytes: seq.bytes,
        authenticated: seq.authenticated,
        segment: seq.segment.clone(),
        history_windows: seq.history_windows,
        values: seq.current().to_vec(),
    }));
}

fn forecast_rows(
    spec: &WindowSpec,
    forecaster: &Arc<str>,
    forecasts: &mut [(UserWindow, Forecast)],
    rows: &mut Vec<ForecastRow>,
) {
    forecasts.sort_by(|a, b| a.0.cmp(&b.0));
    rows.reserve(forecasts.len() * DEFAULT_FORECAST_HORIZON);
    for ((user, w), f) in forecasts.iter() {
        for h in 1..=f.horizon() {
            let (requests, bytes) = f.at(h).expect("h is within the horizon");
            rows.push(ForecastRow {
                window_end: spec.end_ms(*w),
                user_id: user.clone(),
                forecaster: forecaster.clone(),
                horizon: h as u32,
                target_window_end: spec.end_ms(*w + h as u64),
                predicted_requests: requests,
                predicted_bytes: bytes,
            });
        }
    }
}

fn forecast_error_rows(
    spec: &WindowSpec,
    forecaster: &Arc<str>,
    errors: &mut [(UserWindow, ForecastResidual)],
    out: &mut Vec<ForecastErrorRow>,
) {
    errors.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.made_at.cmp(&b.1.made_at)));
    out.extend(errors.iter().map(|((user, w), e)| {
        ForecastErrorRow::new(
            spec.end_ms(*w),
            user.clone(),
            forecaster.clone(),
            spec.end_ms(e.made_at),
            e.horizon,
            (e.predicted_requests.0, e.actual_requests),
            (e.predicted_bytes.0, e.actual_bytes),
        )
    }));
}

fn profile_rows(
    spec: &WindowSpec,
    embedder: &Arc<str>,
    profiles: &mut [(UserWindow, Profile)],
    out: &mut Vec<ProfileRow>,
) {
    profiles.sort_by(|a, b| a.0.cmp(&b.0));
    out.extend(profiles.iter().map(|((user, w), p)| ProfileRow {
        window_end: spec.end_ms(*w),
        user_id: user.clone(),
        embedder: embedder.clone(),
        embedding: p.embedding.0.clone(),
        anomaly_score: p.anomaly_score.map(|s| s.0),
        history_windows: p.history_windows,
        events: p.events,
        authenticated: p.authenticated,
        segment: p.segment.clone(),
        device: p.context.device.clone(),
        os: p.context.os.clone(),
        country: p.context.country.clone(),
    }));
}

fn resonance_rows(
    spec: &WindowSpec,
    rs: &mut [(UserWindow, Resonance)],
    rows: &mut Vec<ResonanceRow>,
) {
    rs.sort_by(|a, b| a.0.cmp(&b.0));
    rows.reserve(rs.len() * 8);
    // The segment names are shared with the segment table: the rows share them too.
    for ((user, w), r) in rs.iter() {
        for (i, s) in r.scores.iter().enumerate() {
            rows.push(ResonanceRow {
                window_end: spec.end_ms(*w),
                user_id: user.clone(),
                segment: Arc::clone(&s.segment),
                cosine: s.cosine.0,
                probability: s.probability.0,
                resonating: s.resonating,
                top: i == r.top,
                cold_start: r.cold_start,
            });
        }
    }
}

/// Rows a sink gathers, over the windows complete at once, before it makes them one Arrow batch
/// per table: a window of a sparse run holds a row or two, and building a batch costs about the
/// same per column whatever its rows. A window with more rows than this is a batch of its own.
pub const SINK_GATHER_ROWS: usize = 8_192;

/// The rows of one or two tables (a sink's, in the order of its sinks) gathered over windows
/// before they become Arrow batches ([`SINK_GATHER_ROWS`]).
trait GatherRows: Default {
    /// Tables (sinks) the rows are of: 1 or 2.
    const TABLES: usize;
    /// Rows gathered so far of each table (0 beyond [`TABLES`](Self::TABLES)).
    fn counts(&self) -> [usize; 2];
    /// The gathered rows of table `i` as a batch; they are no longer gathered.
    fn take_batch(&mut self, i: usize) -> RecordBatch;
}

impl<R: TableRow> GatherRows for Vec<R> {
    const TABLES: usize = 1;
    fn counts(&self) -> [usize; 2] {
        [self.len(), 0]
    }
    fn take_batch(&mut self, _: usize) -> RecordBatch {
        let batch = R::to_batch(self);
        self.clear();
        batch
    }
}

impl<A: TableRow, B: TableRow> GatherRows for (Vec<A>, Vec<B>) {
    const TABLES: usize = 2;
    fn counts(&self) -> [usize; 2] {
        [self.0.len(), self.1.len()]
    }
    fn take_batch(&mut self, i: usize) -> RecordBatch {
        if i == 0 {
            self.0.take_batch(0)
        } else {
            self.1.take_batch(0)
        }
    }
}

/// Sinks a collection window by window: updates are buffered per window and, once the input
/// frontier has passed a window, `to_rows` turns that window's updates into rows of the table
/// (or none). The rows of the windows complete at once are gathered ([`SINK_GATHER_ROWS`]) and
/// go to the sink as one batch, each window's rows named
/// ([`write_windows`](WindowSink::write_windows)); the sink hears of every frontier move, and
/// of the end.
fn sink_windows<'scope, D, G, F>(
    collection: VecCollection<'scope, u64, D, isize>,
    name: &str,
    sink: Box<dyn WindowSink>,
    report: Rc<RefCell<SinkReport>>,
    to_rows: F,
) where
    D: Clone + 'static,
    G: GatherRows + 'static,
    F: FnMut(u64, Vec<(D, isize)>, &mut G) + 'static,
{
    sink_windows_to(collection, name, vec![sink], report, to_rows);
}

/// As [`sink_windows`], into several sinks at once (as many as `G` has tables, in its order),
/// so that tables made from the same records need no copy of them.
fn sink_windows_to<'scope, D, G, F>(
    collection: VecCollection<'scope, u64, D, isize>,
    name: &str,
    sinks: Vec<Box<dyn WindowSink>>,
    report: Rc<RefCell<SinkReport>>,
    to_rows: F,
) where
    D: Clone + 'static,
    G: GatherRows + 'static,
    F: FnMut(u64, Vec<(D, isize)>, &mut G) + 'static,
{
    let mut pending: BTreeMap<u64, Vec<(D, isize)>> = BTreeMap::new();
    let mut out = SinkWindows::new(name, sinks, report, to_rows);
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
                out.window(window, entry.remove());
            }
            out.settle(frontier.frontier().first().copied());
        });
}

/// What a sink operator does with the complete windows it is handed ([`sink_windows_to`],
/// [`sink_scored`]): `to_rows` turns each window's updates into rows, gathered over the
/// windows complete at once ([`SINK_GATHER_ROWS`]) and written as one batch, each window's
/// rows named ([`write_windows`](WindowSink::write_windows)); after each activation the sinks
/// hear of every frontier move, and of the end, and the report holds the sink's frontier.
struct SinkWindows<G, F> {
    sinks: Vec<Box<dyn WindowSink>>,
    report: Rc<RefCell<SinkReport>>,
    to_rows: F,
    rows: G,
    /// Each sink's gathered windows and their rows, in window order.
    windows: Vec<Vec<(u64, usize)>>,
    finished: bool,
    advanced: Option<u64>,
    /// This sink's slot in the report's frontiers, held at the first window until it runs.
    slot: usize,
}

impl<G: GatherRows, F> SinkWindows<G, F> {
    fn new(
        name: &str,
        sinks: Vec<Box<dyn WindowSink>>,
        report: Rc<RefCell<SinkReport>>,
        to_rows: F,
    ) -> Self {
        assert_eq!(sinks.len(), G::TABLES, "a sink per table of the rows");
        let slot = {
            let mut r = report.borrow_mut();
            r.frontiers.push((name.to_string(), Some(0)));
            r.frontiers.len() - 1
        };
        SinkWindows {
            windows: vec![Vec::new(); sinks.len()],
            sinks,
            report,
            to_rows,
            rows: G::default(),
            finished: false,
            advanced: None,
            slot,
        }
    }

    /// The updates of a complete window (windows come in order).
    fn window<D>(&mut self, window: u64, updates: Vec<(D, isize)>)
    where
        F: FnMut(u64, Vec<(D, isize)>, &mut G),
    {
        let before = self.rows.counts();
        (self.to_rows)(window, updates, &mut self.rows);
        let after = self.rows.counts();
        for (i, ws) in self.windows.iter_mut().enumerate() {
            if after[i] > before[i] {
                ws.push((window, after[i] - before[i]));
            }
        }
        if after.iter().any(|n| *n >= SINK_GATHER_ROWS) {
            self.write();
        }
    }

    /// After an activation whose input frontier is `frontier` (`None`: the input ended), every
    /// window before it handed over: writes what is gathered and tells the sinks and the report.
    fn settle(&mut self, frontier: Option<u64>) {
        self.write();
        let moved = match frontier {
            None => (!self.finished).then(|| {
                self.finished = true;
                None
            }),
            Some(f) => (self.advanced != Some(f)).then(|| {
                self.advanced = Some(f);
                Some(f)
            }),
        };
        if let Some(to) = moved {
            for sink in self.sinks.iter_mut() {
                let table = sink.table();
                record(&self.report, table, sink.advance(to).map(|_| 0));
            }
        }
        // After the sinks have written and heard of the move: the frontier says what the
        // outputs hold.
        self.report.borrow_mut().frontiers[self.slot].1 = frontier;
    }

    /// Writes each sink's gathered windows as one batch.
    fn write(&mut self) {
        let (sinks, windows) = (&mut self.sinks, &mut self.windows);
        for (i, (sink, ws)) in sinks.iter_mut().zip(windows.iter_mut()).enumerate() {
            if ws.is_empty() {
                continue;
            }
            let batch = self.rows.take_batch(i);
            let result = sink.write_windows(ws, &batch);
            record(&self.report, sink.table(), result);
            ws.clear();
        }
    }
}

/// Sinks a collection of facts or pulses: a window's updates are consolidated (operators such
/// as `join` may emit transient corrections within a window) and the records with a positive
/// net count become that window's rows.
fn sink_facts<'scope, D, R, F>(
    collection: VecCollection<'scope, u64, D, isize>,
    name: &str,
    writer: Box<dyn WindowSink>,
    report: Rc<RefCell<SinkReport>>,
    to_rows: F,
) where
    D: Ord + Clone + 'static,
    R: TableRow + 'static,
    F: FnMut(&mut Vec<D>, &mut Vec<R>) + 'static,
{
    sink_windows(collection, name, writer, report, fact_rows(to_rows));
}

/// A window's rows of facts: its updates consolidated, the records with a positive net count
/// handed to `to_rows` (if any).
fn fact_rows<D: Ord, R>(
    mut to_rows: impl FnMut(&mut Vec<D>, &mut Vec<R>),
) -> impl FnMut(u64, Vec<(D, isize)>, &mut Vec<R>) {
    move |_window, mut updates, out| {
        consolidate(&mut updates);
        let mut records: Vec<D> = updates
            .into_iter()
            .filter(|(_, r)| *r > 0)
            .map(|(d, _)| d)
            .collect();
        if !records.is_empty() {
            to_rows(&mut records, out);
        }
    }
}

/// Scores `facts` as forecasts against `sequences` ([`ForecastErrorsBy::forecast_error_by`])
/// and sinks the scored facts as [`sink_facts`] would sink that collection, the same rows in
/// the same windows, with the sink inside the scoring operator
/// ([`forecast_error_by_into`](ForecastErrorsBy::forecast_error_by_into)): scored facts in a
/// collection put a time of their own (the target window's) through the scoring operator and
/// the sink for each window with data whose next window has none, which on a sparse run is
/// most of them, and each time costs timely's progress tracking.
#[allow(clippy::too_many_arguments)]
fn sink_scored<'scope, D, P, O, R, S, J, F>(
    facts: VecCollection<'scope, u64, (UserWindow, D), isize>,
    sequences: VecCollection<'scope, u64, (UserWindow, Sequence), isize>,
    split: S,
    join: J,
    name: &str,
    writer: Box<dyn WindowSink>,
    report: Rc<RefCell<SinkReport>>,
    to_rows: F,
) where
    D: differential_dataflow::ExchangeData,
    P: Clone + 'static,
    O: Ord + Clone + 'static,
    R: TableRow + 'static,
    S: FnMut(D) -> (Forecast, P) + 'static,
    J: FnMut(ForecastResidual, &P) -> O + 'static,
    F: FnMut(&mut Vec<(UserWindow, O)>, &mut Vec<R>) + 'static,
{
    struct Rows<G, F>(SinkWindows<G, F>);
    impl<O, G, F> ScoredSink<O> for Rows<G, F>
    where
        G: GatherRows,
        F: FnMut(u64, Vec<((UserWindow, O), isize)>, &mut G),
    {
        fn window(&mut self, window: u64, facts: Vec<(UserWindow, O)>) {
            self.0
                .window(window, facts.into_iter().map(|f| (f, 1)).collect());
        }
        fn frontier(&mut self, frontier: Option<u64>) {
            self.0.settle(frontier);
        }
    }
    let out = SinkWindows::new(name, vec![writer], report, fact_rows(to_rows));
    facts.forecast_error_by_into(sequences, split, join, Box::new(Rows(out)));
}

/// Sinks segment profiles: the collection is the current state of every segment, so at each
/// window in which any segment changed, every segment's profile is written. The few segment
/// updates all go to worker 0, which writes the table: spread over the workers (by segment),
/// each would write only its own segments, at the windows in which one of them changed, and
/// the rows would depend on the number of workers.
fn sink_segments<'scope>(
    collection: VecCollection<'scope, u64, (String, SegmentSum), isize>,
    writer: Box<dyn WindowSink>,
    spec: WindowSpec,
    report: Rc<RefCell<SinkReport>>,
) {
    use differential_dataflow::AsCollection as _;
    use timely::dataflow::operators::Exchange as _;
    let collection = collection
        .inner
        .exchange(|_: &((String, SegmentSum), u64, isize)| 0)
        .as_collection();
    let mut state: BTreeMap<(String, SegmentSum), isize> = BTreeMap::new();
    let name = "SinkSegmentProfiles";
    sink_windows(
        collection,
        name,
        writer,
        report,
        move |window, updates, out: &mut Vec<SegmentProfileRow>| {
            for (d, r) in updates {
                let count = state.entry(d.clone()).or_default();
                count.plus_equals(&r);
                if *count == 0 {
                    state.remove(&d);
                }
            }
            let mut seen = HashSet::new();
            out.extend(state.keys().filter(|(s, _)| seen.insert(s.clone())).map(
                |(segment, sum)| SegmentProfileRow {
                    window_end: spec.end_ms(window),
                    segment: segment.clone(),
                    profiles: sum.profiles,
                    embedding: sum.mean(),
                },
            ));
        },
    );
}

fn record(report: &Rc<RefCell<SinkReport>>, table: Table, result: personaflow_io::Result<u64>) {
    let mut r = report.borrow_mut();
    match result {
        Ok(rows) => *r.rows.entry(table).or_default() += rows,
        Err(e) => {
            r.error.get_or_insert(e.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The names kept are the ranges' own text, for ranges seen again, new ones and ones past
    /// the cap (seeded random ranges, many repeated).
    #[test]
    fn port_names_are_the_ranges_text() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut names = PortNames::default();
        for i in 0..(PortNames::MAX * 3) {
            let first: u16 = match i % 2 {
                0 => rng.random_range(0..20),
                _ => rng.random(),
            };
            let range = PortRange {
                first,
                last: first.saturating_add(rng.random_range(0..3)),
            };
            assert_eq!(&*names.name(&range), range.to_string(), "{range:?}");
        }
        assert_eq!(names.0.len(), PortNames::MAX);
    }

    /// Records the sinks a dataflow asks for.
    #[derive(Default)]
    struct Requested(Arc<Mutex<Vec<Table>>>);

    struct Nothing(Table);

    impl WindowSink for Nothing {
        fn table(&self) -> Table {
            self.0
        }
        fn write_window(&mut self, _: u64, _: &RecordBatch) -> personaflow_io::Result<u64> {
            Ok(0)
        }
        fn advance(&mut self, _: Option<u64>) -> personaflow_io::Result<()> {
            Ok(())
        }
    }

    impl SinkFactory for Requested {
        fn sink(&self, table: Table, _: usize) -> Box<dyn WindowSink> {
            self.0.lock().unwrap().push(table);
            Box::new(Nothing(table))
        }
    }

    #[test]
    fn the_output_frontier_is_the_earliest_sinks() {
        let mut r = SinkReport::default();
        assert_eq!(r.output_frontier(), None);
        r.frontiers = vec![
            ("a".into(), Some(3)),
            ("b".into(), None),
            ("c".into(), Some(1)),
        ];
        assert_eq!(r.output_frontier(), Some(1));
        r.frontiers[2].1 = None;
        assert_eq!(r.output_frontier(), Some(3));
    }

    /// Without probe operators, the sinks keep the outputs' frontier: every sink operator
    /// has a slot, held at the first window until it runs, that follows its input to the
    /// input's time and empties once the input closes.
    #[test]
    fn every_sink_keeps_its_frontier_in_the_report() {
        let mut config = Config::default();
        config.embedder.kind = EmbedderKind::Standardised;
        config.forecaster.kind = ForecasterKind::Persistence;
        timely::execute_directly(move |worker| {
            let handles = build_with(
                worker,
                &config,
                &Requested::default(),
                &ModelStats::default(),
                StateMode::Off,
            )
            .unwrap();
            let (mut input, report) = (handles.input, handles.report);
            let slots = report.borrow().frontiers.len();
            // Every table has a sink; policies and socket profiles share one operator.
            assert_eq!(slots, tables(&config).len() - 1);
            assert_eq!(report.borrow().output_frontier(), Some(0));
            input.send(Event::new(1, "u1", "page_view"));
            input.advance_to(4);
            for _ in 0..10_000 {
                if report.borrow().output_frontier() == Some(4) {
                    break;
                }
                worker.step();
            }
            assert_eq!(report.borrow().output_frontier(), Some(4));
            assert!(report.borrow().frontiers.iter().all(|(_, f)| *f == Some(4)));
            drop(input);
            while worker.step_or_park(None) {}
            assert!(report.borrow().frontiers.iter().all(|(_, f)| f.is_none()));
            assert_eq!(report.borrow().output_frontier(), None);
        });
    }

    /// The continuous job counts a window durable once every table's sink has written it: the
    /// list it counts must be the sinks the dataflow makes.
    #[test]
    fn tables_lists_every_sink_the_dataflow_makes() {
        for kind in [ForecasterKind::None, ForecasterKind::Persistence] {
            let mut config = Config::default();
            config.embedder.kind = EmbedderKind::Standardised;
            config.forecaster.kind = kind;
            let requested = Requested::default();
            let seen = requested.0.clone();
            let c = config.clone();
            timely::execute_directly(move |worker| {
                build_with(
                    worker,
                    &c,
                    &requested,
                    &ModelStats::default(),
                    StateMode::Off,
                )
                .map(|_| ())
                .unwrap();
            });
            let mut got = seen.lock().unwrap().clone();
            got.sort();
            let mut want = tables(&config);
            want.sort();
            assert_eq!(got, want, "{kind:?}");
        }
    }
}
