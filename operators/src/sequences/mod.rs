//! Sequences: a user's last `L` windows of features, built for each window the user is
//! active in (DESIGN.md step 3): the last `L` windows, active or not
//! ([`SequenceHistory::Windows`]), or the user's last `L` *active* windows however far apart
//! ([`SequenceHistory::Active`]), so that users active a few times a day keep a history.
//!
//! Its operator: [`operator::Sequences`].

pub mod operator;

use crate::event::Context;
use crate::ops::{user_hash, worker_of};
use crate::policies::socket::WindowDemand;
use crate::vector::Vector;
use crate::window::features::{
    WindowSummary, NUM_BASE_FEATURES, NUM_FEATURES, VELOCITY_BYTES, VELOCITY_EVENTS,
};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

/// Default sequence length `L`, in windows.
pub const DEFAULT_SEQUENCE_LEN: usize = 16;

/// Default of [`SequenceSpec::max_idle_windows`]: 30 days of the default 1-minute windows.
pub const DEFAULT_MAX_IDLE_WINDOWS: u64 = 30 * 1_440;

/// Which of a user's windows a sequence's steps are.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SequenceHistory {
    /// The last `L` windows, active or not: step `i` of the sequence ending at `w` is window
    /// `w - L + 1 + i`, all zeros (and masked) where the user was idle. A user active once in
    /// `L` windows has a sequence of one step.
    Windows,
    /// The default: the user's last `L` active windows, however far apart (within
    /// [`SequenceSpec::max_idle_windows`]), oldest first and right-aligned: a user with fewer
    /// has masked leading steps. Sparse users keep a history (held-out top-segment accuracy
    /// on users active a few minutes a day 83-85% with [`Windows`](Self::Windows), 90-93%
    /// with this, the same models; BENCHMARKS.md, "Sparse users"), and what reads the last
    /// `L` windows still can ([`Sequence::windows_view`]).
    #[default]
    Active,
}

/// What a sequence holds: its length and which windows its steps are.
///
/// ```
/// use personaflow_operators::sequences::{SequenceHistory, SequenceSpec};
/// let spec = SequenceSpec::from(8);
/// assert_eq!((spec.len, spec.history), (8, SequenceHistory::Windows));
/// assert_eq!(spec.horizon(), 8); // windows (w - 8, w] may be steps of the sequence ending at w
/// assert_eq!(SequenceSpec::active(8, 100).horizon(), 100);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SequenceSpec {
    /// `L`, steps per sequence (at least 1).
    pub len: usize,
    /// Which windows the steps are.
    pub history: SequenceHistory,
    /// [`SequenceHistory::Active`] only: windows older than this many windows before the
    /// current one are forgotten (and so is a user idle this long); taken as at least `len`.
    pub max_idle_windows: u64,
}

impl SequenceSpec {
    /// The last `len` windows ([`SequenceHistory::Windows`]).
    pub fn windows(len: usize) -> Self {
        SequenceSpec {
            len: len.max(1),
            history: SequenceHistory::Windows,
            max_idle_windows: DEFAULT_MAX_IDLE_WINDOWS,
        }
    }

    /// The last `len` active windows within `max_idle_windows` ([`SequenceHistory::Active`]).
    pub fn active(len: usize, max_idle_windows: u64) -> Self {
        SequenceSpec {
            len: len.max(1),
            history: SequenceHistory::Active,
            max_idle_windows: max_idle_windows.max(1),
        }
    }

    /// How far back a sequence reaches: the sequence ending at `w` is built from the user's
    /// windows in `(w - horizon, w]`.
    pub fn horizon(&self) -> u64 {
        match self.history {
            SequenceHistory::Windows => self.len.max(1) as u64,
            // At least `L`: every window of the last `L` is then in reach, and the sequence's
            // windows view is exactly the window-history sequence.
            SequenceHistory::Active => self.max_idle_windows.max(self.len.max(1) as u64),
        }
    }
}

impl From<usize> for SequenceSpec {
    fn from(len: usize) -> Self {
        SequenceSpec::windows(len)
    }
}

/// A user's last `L` windows ending at `window`, oldest first, as one contiguous `L x F`
/// matrix (`F` = [`NUM_FEATURES`]) with a mask of the windows the user was active in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sequence {
    /// The window the sequence ends at (the user is active in it).
    pub window: u64,
    /// Row-major `L x F` features, oldest step first, the last step `window`; all zeros where
    /// a step is masked. Which window each step is depends on the [`SequenceHistory`].
    /// Shared: a window's sequences go to several consumers (the embedder, the forecaster,
    /// the feature sink, ...), and each gets a copy of the stream's records; the matrix, by
    /// far their largest part, is not copied.
    pub features: std::sync::Arc<Vector>,
    /// `active[i]`: step `i` holds a window the user had events in. Shared, as the matrix.
    pub active: std::sync::Arc<[bool]>,
    /// [`SequenceHistory::Active`] only: the window of each active step (0 where masked).
    /// Empty with window history, whose step `i` is window `window - L + 1 + i`. Shared, as
    /// the matrix: a consumer's copy of a sequence allocates nothing for its steps.
    pub step_windows: std::sync::Arc<[u64]>,
    /// Which windows the steps are.
    pub history: SequenceHistory,
    /// Active windows before the current one in the sequence (0 for a user with no history).
    pub history_windows: u32,
    /// Events in the current window.
    pub events: u64,
    /// Bytes in + out in the current window.
    pub bytes: u64,
    /// Authenticated in the current window.
    pub authenticated: bool,
    /// Known segment (authenticated users only).
    pub segment: Option<String>,
    /// Context seen in the current window.
    pub context: Context,
    /// What the current window asked of the network.
    pub demand: WindowDemand,
}

impl Sequence {
    /// Number of steps, `L`.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// True for a sequence of no steps (never built by [`build_sequence`]).
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Step `i`'s features, `None` where the user was inactive.
    pub fn step(&self, i: usize) -> Option<&[f32]> {
        self.active
            .get(i)
            .copied()
            .unwrap_or(false)
            .then(|| &self.features.0[i * NUM_FEATURES..(i + 1) * NUM_FEATURES])
    }

    /// The features of the active steps, oldest first.
    pub fn active_steps(&self) -> impl Iterator<Item = &[f32]> + '_ {
        (0..self.len()).filter_map(|i| self.step(i))
    }

    /// The current window's features (the last step).
    pub fn current(&self) -> &[f32] {
        self.step(self.len() - 1)
            .expect("a sequence's last step is its active window")
    }

    /// The sequence of the same user and window with [`SequenceHistory::Windows`]: what
    /// [`build_sequence`] makes of the user's last `L` windows (exactly, when the sequence was
    /// built with a horizon of at least `L`, as [`SequenceSpec::horizon`] ensures). Borrowed
    /// when it already is one. The demand forecaster reads this view: it was trained on
    /// consecutive windows, and what the next windows hold depends on the idle ones.
    ///
    /// ```
    /// use personaflow_operators::{Event, WindowSpec};
    /// use personaflow_operators::window::features::{WindowAgg, WindowSummary};
    /// use personaflow_operators::sequences::{build_sequence, build_sequence_with, SequenceSpec};
    /// let spec = WindowSpec::default();
    /// let s = |w: u64| WindowSummary::new(&WindowAgg::of(&Event::new(w as i64 * 60_000, "u", "a")), w, &spec);
    /// let (a, b, c) = (s(3), s(8), s(10));
    /// let history = [(3, &a), (8, &b), (10, &c)];
    /// let active = build_sequence_with(&SequenceSpec::active(4, 100), 10, &history).unwrap();
    /// assert_eq!(active.history_windows, 2);
    /// let view = active.windows_view();
    /// assert_eq!(*view, build_sequence(10, 4, &history).unwrap()); // windows 7..=10: 8 and 10
    /// ```
    pub fn windows_view(&self) -> std::borrow::Cow<'_, Sequence> {
        use std::borrow::Cow;
        if self.history == SequenceHistory::Windows {
            return Cow::Borrowed(self);
        }
        let len = self.len();
        let mut features = vec![0f32; len * NUM_FEATURES];
        let mut active = vec![false; len];
        let mut placed = 0u32;
        for i in 0..len {
            let w = self.step_windows[i];
            let Some(step) = self.step(i) else { continue };
            if w > self.window || self.window - w >= len as u64 {
                continue;
            }
            let pos = len - 1 - (self.window - w) as usize;
            let x = &mut features[pos * NUM_FEATURES..(pos + 1) * NUM_FEATURES];
            x.copy_from_slice(step);
            if placed == 0 {
                // The first step in range has no earlier active step in the view.
                x[VELOCITY_EVENTS] = 0.0;
                x[VELOCITY_BYTES] = 0.0;
            }
            active[pos] = true;
            placed += 1;
        }
        Cow::Owned(Sequence {
            window: self.window,
            features: std::sync::Arc::new(Vector(features)),
            active: active.into(),
            step_windows: Vec::new().into(),
            history: SequenceHistory::Windows,
            history_windows: placed.saturating_sub(1),
            events: self.events,
            bytes: self.bytes,
            authenticated: self.authenticated,
            segment: self.segment.clone(),
            context: self.context.clone(),
            demand: self.demand.clone(),
        })
    }

    /// The [windows view](Self::windows_view) where an embedder would read it differently from
    /// this sequence (other steps, activity or velocities): `None` for a window history, and
    /// for an active history whose steps are exactly the view's (a user active in each of the
    /// last `L` windows, whose oldest step's velocities are zero).
    ///
    /// ```
    /// use personaflow_operators::{Event, WindowSpec};
    /// use personaflow_operators::window::features::{WindowAgg, WindowSummary};
    /// use personaflow_operators::sequences::{build_sequence, build_sequence_with, SequenceSpec};
    /// let spec = WindowSpec::default();
    /// let s = |w: u64| WindowSummary::new(&WindowAgg::of(&Event::new(w as i64 * 60_000, "u", "a")), w, &spec);
    /// let (a, b, c) = (s(3), s(8), s(10));
    /// let sparse = [(3, &a), (8, &b), (10, &c)];
    /// let active = build_sequence_with(&SequenceSpec::active(4, 100), 10, &sparse).unwrap();
    /// assert_eq!(active.distinct_windows_view(), Some(build_sequence(10, 4, &sparse).unwrap()));
    /// let d = s(9);
    /// let dense = [(9, &d), (10, &c)];
    /// let active = build_sequence_with(&SequenceSpec::active(2, 100), 10, &dense).unwrap();
    /// assert_eq!(active.distinct_windows_view(), None); // the same two windows
    /// let windows = build_sequence(10, 4, &sparse).unwrap();
    /// assert_eq!(windows.distinct_windows_view(), None);
    /// ```
    pub fn distinct_windows_view(&self) -> Option<Sequence> {
        if self.history == SequenceHistory::Windows || self.is_its_windows_view() {
            return None;
        }
        let view = self.windows_view().into_owned();
        (view.active != self.active || view.features != self.features).then_some(view)
    }

    /// True when every active step already sits at its window's position among the last `L`
    /// and the oldest has no velocity: the windows view would copy the sequence unchanged (a
    /// user active in each of the last `L` windows, most sequences of a dense day), so
    /// [`distinct_windows_view`](Self::distinct_windows_view) need not build it to know.
    fn is_its_windows_view(&self) -> bool {
        let last = self.len() as u64 - 1;
        let placed = (0..self.len()).filter(|i| self.active[*i]).all(|i| {
            self.step_windows
                .get(i)
                .is_some_and(|w| w + last == self.window + i as u64)
        });
        let first_still = self
            .active_steps()
            .next()
            .is_none_or(|x| x[VELOCITY_EVENTS] == 0.0 && x[VELOCITY_BYTES] == 0.0);
        placed && first_still
    }
}

/// Builds the sequence of length `len` ending at `window` from the user's window summaries
/// `history` (any order; windows outside `(window - len, window]` are ignored). Returns `None`
/// if the user is not active in `window`.
///
/// Velocity features compare each step with the previous active step inside the sequence.
///
/// ```
/// use personaflow_operators::{Event, WindowSpec};
/// use personaflow_operators::window::features::{WindowAgg, WindowSummary};
/// use personaflow_operators::sequences::build_sequence;
/// let spec = WindowSpec::default();
/// let s = |w: u64| WindowSummary::new(&WindowAgg::of(&Event::new(w as i64 * 60_000, "u", "a")), w, &spec);
/// let seq = build_sequence(10, 4, &[(7, &s(7)), (10, &s(10)), (3, &s(3))]).unwrap();
/// assert_eq!(seq.history_windows, 1); // window 3 is outside (6, 10]
/// assert!(seq.step(0).is_some() && seq.step(1).is_none() && seq.step(3).is_some()); // windows 7..=10
/// assert!(build_sequence(11, 4, &[(10, &s(10))]).is_none());
/// ```
pub fn build_sequence(
    window: u64,
    len: usize,
    history: &[(u64, &WindowSummary)],
) -> Option<Sequence> {
    build_sequence_with(&SequenceSpec::windows(len), window, history)
}

/// Builds the sequence `spec` describes ending at `window` from the user's window summaries
/// `history` (any order, at most one summary per window; windows outside
/// `(window - horizon, window]` are ignored, see [`SequenceSpec::horizon`]). Returns `None` if
/// the user is not active in `window`.
///
/// ```
/// use personaflow_operators::{Event, WindowSpec};
/// use personaflow_operators::window::features::{WindowAgg, WindowSummary};
/// use personaflow_operators::sequences::{build_sequence_with, SequenceSpec};
/// let spec = WindowSpec::default();
/// let s = |w: u64| WindowSummary::new(&WindowAgg::of(&Event::new(w as i64 * 60_000, "u", "a")), w, &spec);
/// let (a, b, c) = (s(3), s(70), s(200));
/// let seq = build_sequence_with(&SequenceSpec::active(4, 1_000), 200, &[(70, &b), (3, &a), (200, &c)]).unwrap();
/// assert_eq!(seq.history_windows, 2); // windows 3 and 70, the last active ones before 200
/// assert!(seq.step(0).is_none() && seq.step(1).is_some() && seq.step(3).is_some());
/// let seq = build_sequence_with(&SequenceSpec::active(4, 150), 200, &[(70, &b), (3, &a), (200, &c)]).unwrap();
/// assert_eq!(seq.history_windows, 1); // window 3 is more than 150 windows before 200
/// ```
pub fn build_sequence_with(
    spec: &SequenceSpec,
    window: u64,
    history: &[(u64, &WindowSummary)],
) -> Option<Sequence> {
    let (_, current) = history.iter().rev().find(|(w, _)| *w == window)?;
    assemble(spec, window, history, current)
}

/// The sequence of [`build_sequence_with`] from the steps `history` (any order, at most one
/// per window), with the current window's other fields from `current`.
fn assemble(
    spec: &SequenceSpec,
    window: u64,
    history: &[(u64, &WindowSummary)],
    current: &WindowSummary,
) -> Option<Sequence> {
    let len = spec.len.max(1);
    let horizon = spec.horizon();
    let mut slots: Vec<Option<(u64, &WindowSummary)>> = vec![None; len];
    match spec.history {
        SequenceHistory::Windows => {
            for (w, s) in history {
                if *w <= window && window - *w < len as u64 {
                    slots[len - 1 - (window - *w) as usize] = Some((*w, *s));
                }
            }
        }
        SequenceHistory::Active => {
            let mut kept: Vec<(u64, &WindowSummary)> = history
                .iter()
                .filter(|(w, _)| *w <= window && window - *w < horizon)
                .map(|(w, s)| (*w, *s))
                .collect();
            kept.sort_by_key(|(w, _)| *w);
            if kept.last().is_none_or(|(w, _)| *w != window) {
                return None;
            }
            let skip = kept.len().saturating_sub(len);
            let first = len - (kept.len() - skip);
            for (slot, step) in slots[first..].iter_mut().zip(&kept[skip..]) {
                *slot = Some(*step);
            }
        }
    }
    slots[len - 1]?;
    let mut features = vec![0f32; len * NUM_FEATURES];
    // The previous active step's `ln1p` of events and bytes: each step's are taken once.
    let mut prev: Option<(f32, f32)> = None;
    for (slot, x) in slots.iter().zip(features.chunks_exact_mut(NUM_FEATURES)) {
        if let Some((_, s)) = slot {
            let base = s.base.as_slice();
            x[..base.len()].copy_from_slice(base);
            let logs = (ln1p(s.events), ln1p(s.bytes));
            if let Some((events, bytes)) = prev {
                x[VELOCITY_EVENTS] = logs.0 - events;
                x[VELOCITY_BYTES] = logs.1 - bytes;
            }
            prev = Some(logs);
        }
    }
    let active: Vec<bool> = slots.iter().map(Option::is_some).collect();
    let step_windows: Vec<u64> = match spec.history {
        SequenceHistory::Windows => Vec::new(),
        SequenceHistory::Active => slots.iter().map(|s| s.map_or(0, |(w, _)| w)).collect(),
    };
    let history_windows = active.iter().filter(|a| **a).count() as u32 - 1;
    Some(Sequence {
        window,
        features: std::sync::Arc::new(Vector(features)),
        active: active.into(),
        step_windows: step_windows.into(),
        history: spec.history,
        history_windows,
        events: current.events,
        bytes: current.bytes,
        authenticated: current.authenticated,
        segment: current.segment.clone(),
        context: current.context.clone(),
        demand: current.demand.clone(),
    })
}

/// What a sequence ring keeps of one of a user's windows: its base features and the counts the
/// velocity features compare. The rest of a [`WindowSummary`] (segment, context, demand) is
/// read from the current window only, so a ring does not keep it: 140 bytes and no allocation
/// a window, where a whole summary took about 500 bytes in five allocations. With active
/// history a ring holds up to `L` windows of every user seen within `sequence.max_idle`.
///
/// ```
/// use personaflow_operators::{Event, WindowSpec};
/// use personaflow_operators::window::features::{WindowAgg, WindowSummary};
/// use personaflow_operators::sequences::HeldWindow;
/// let s = WindowSummary::new(&WindowAgg::of(&Event::new(0, "u", "a")), 0, &WindowSpec::default());
/// let held = HeldWindow::from(&s);
/// assert_eq!((&held.base[..], held.events), (s.base.as_slice(), 1));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldWindow {
    /// The [`NUM_BASE_FEATURES`] base features.
    pub base: [f32; NUM_BASE_FEATURES],
    /// Events in the window.
    pub events: u64,
    /// Bytes in + out.
    pub bytes: u64,
}

impl From<&WindowSummary> for HeldWindow {
    fn from(s: &WindowSummary) -> Self {
        let mut base = [0f32; NUM_BASE_FEATURES];
        let n = s.base.len().min(NUM_BASE_FEATURES);
        base[..n].copy_from_slice(&s.base.as_slice()[..n]);
        HeldWindow {
            base,
            events: s.events,
            bytes: s.bytes,
        }
    }
}

/// A window in a user's ring: what is held of it, and the `ln1p` of its events and bytes that
/// the velocity features of every later sequence compare (taken once, not at every window
/// the ring is read).
#[derive(Clone, Debug)]
struct Ringed {
    window: u64,
    held: HeldWindow,
    logs: (f32, f32),
}

impl Ringed {
    fn new(window: u64, held: HeldWindow) -> Self {
        let logs = (ln1p(held.events), ln1p(held.bytes));
        Ringed { window, held, logs }
    }
}

/// The sequence [`assemble`] makes of a user's ring ending at `window`, read straight off
/// the ring: the ring is in window order, ends at `window`, holds at most `L` windows and none
/// older than the spec's horizon ([`SequenceHistories::hold`] keeps it so), so each window's
/// step is known without gathering, filtering or sorting the history, and the matrix is
/// written once in step order (masked steps as zeros) instead of zeroed and then filled.
fn ring_sequence(
    spec: &SequenceSpec,
    window: u64,
    ring: &VecDeque<Ringed>,
    current: WindowSummary,
) -> Sequence {
    let len = spec.len.max(1);
    debug_assert!(ring.back().is_some_and(|r| r.window == window) && ring.len() <= len);
    // Each ring window's step, in increasing order.
    let positions = || {
        ring.iter()
            .enumerate()
            .map(move |(k, r)| match spec.history {
                SequenceHistory::Windows => (len - 1 - (window - r.window) as usize, r),
                SequenceHistory::Active => (len - ring.len() + k, r),
            })
    };
    let mut features = Vec::with_capacity(len * NUM_FEATURES);
    let mut prev: Option<(f32, f32)> = None;
    for (pos, r) in positions() {
        // The masked steps before this one.
        features.resize(pos * NUM_FEATURES, 0.0);
        features.extend_from_slice(&r.held.base);
        let (events, bytes) = match prev {
            Some((events, bytes)) => (r.logs.0 - events, r.logs.1 - bytes),
            None => (0.0, 0.0),
        };
        features.extend_from_slice(&[events, bytes]);
        prev = Some(r.logs);
    }
    // The mask and the step windows collected straight into their shared slices (an iterator
    // of known length: one allocation each, no vector copied).
    let mut steps = positions().peekable();
    let active: std::sync::Arc<[bool]> = (0..len)
        .map(|p| steps.next_if(|(q, _)| *q == p).is_some())
        .collect();
    let step_windows: std::sync::Arc<[u64]> = match spec.history {
        SequenceHistory::Windows => std::sync::Arc::new([]),
        SequenceHistory::Active => {
            let mut steps = positions().peekable();
            (0..len)
                .map(|p| steps.next_if(|(q, _)| *q == p).map_or(0, |(_, r)| r.window))
                .collect()
        }
    };
    debug_assert_eq!(features.len(), len * NUM_FEATURES);
    Sequence {
        window,
        features: std::sync::Arc::new(Vector(features)),
        active,
        step_windows,
        history: spec.history,
        history_windows: ring.len() as u32 - 1,
        events: current.events,
        bytes: current.bytes,
        authenticated: current.authenticated,
        segment: current.segment,
        context: current.context,
        demand: current.demand,
    }
}

/// Each user's window summaries a sequence may hold, in window order: the keyed ring buffer
/// the [`Sequences`](operator::Sequences) operator keeps, so that a user's new window costs one
/// push and one sequence, whatever the user's history or the windows in between.
///
/// Windows must be pushed in non-decreasing order (the operator hands them on as windows
/// complete). A ring holds at most `L` summaries, none older than the spec's
/// [`horizon`](SequenceSpec::horizon); users idle for the horizon or longer are dropped every
/// horizon windows, so the state holds the users of at most the last two horizons.
///
/// ```
/// use personaflow_operators::{Event, WindowSpec};
/// use personaflow_operators::window::features::{WindowAgg, WindowSummary};
/// use personaflow_operators::sequences::{SequenceHistories, SequenceSpec};
/// let spec = WindowSpec::default();
/// let s = |w: u64| WindowSummary::new(&WindowAgg::of(&Event::new(w as i64 * 60_000, "u", "a")), w, &spec);
/// let mut histories = SequenceHistories::new(4);
/// let mut active = SequenceHistories::with_spec(SequenceSpec::active(4, 1_000));
/// for w in [3, 7, 9] {
///     histories.push("u", w, s(w));
///     active.push("u", w, s(w));
/// }
/// let seq = histories.push("u", 10, s(10));
/// assert_eq!((seq.window, seq.history_windows), (10, 2)); // windows 7 and 9 are in (6, 10]
/// assert_eq!(active.push("u", 10, s(10)).history_windows, 3); // windows 3, 7 and 9
/// assert_eq!(histories.users(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct SequenceHistories {
    spec: SequenceSpec,
    users: HashMap<String, VecDeque<Ringed>>,
    /// The window of the last sweep of idle users.
    swept: u64,
}

impl Default for SequenceHistories {
    fn default() -> Self {
        SequenceHistories::new(DEFAULT_SEQUENCE_LEN)
    }
}

impl SequenceHistories {
    /// Empty histories for sequences of the last `len` windows (at least 1).
    pub fn new(len: usize) -> Self {
        SequenceHistories::with_spec(SequenceSpec::windows(len))
    }

    /// Empty histories for the sequences `spec` describes.
    pub fn with_spec(spec: SequenceSpec) -> Self {
        SequenceHistories {
            spec: SequenceSpec {
                len: spec.len.max(1),
                ..spec
            },
            users: HashMap::new(),
            swept: 0,
        }
    }

    /// Users with a summary held.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Records `user`'s summary of `window` and returns the user's sequence ending at it
    /// (what [`build_sequence_with`] makes of the user's summaries). A second summary of the
    /// same user and window replaces the first.
    pub fn push(&mut self, user: &str, window: u64, summary: WindowSummary) -> Sequence {
        self.hold(user, window, HeldWindow::from(&summary), |spec, ring| {
            ring_sequence(spec, window, ring, summary)
        })
    }

    /// The rings as a checkpoint holds them, taken apart.
    fn into_state(self) -> SequenceState {
        SequenceState {
            users: self
                .users
                .into_iter()
                .map(|(u, ring)| (u, ring.into_iter().map(|r| (r.window, r.held)).collect()))
                .collect(),
            swept: self.swept,
        }
    }

    /// The rings as a checkpoint holds them.
    pub fn state(&self) -> SequenceState {
        SequenceState {
            users: self
                .users
                .iter()
                .map(|(u, ring)| {
                    let ring = ring.iter().map(|r| (r.window, r.held.clone())).collect();
                    (u.clone(), ring)
                })
                .collect(),
            swept: self.swept,
        }
    }

    /// Histories for `spec` holding the rings of `state`.
    pub fn from_state(spec: SequenceSpec, state: SequenceState) -> Self {
        let mut h = SequenceHistories::with_spec(spec);
        h.swept = state.swept;
        h.users = state
            .users
            .into_iter()
            .map(|(u, ring)| {
                let ring = ring.into_iter().map(|(w, held)| Ringed::new(w, held));
                (u, ring.collect())
            })
            .collect();
        h
    }

    /// Records `user`'s summary of `window` in its ring (what [`push`](Self::push) does before
    /// it builds the sequence) and hands the ring to `then`.
    fn hold<R>(
        &mut self,
        user: &str,
        window: u64,
        held: HeldWindow,
        then: impl FnOnce(&SequenceSpec, &VecDeque<Ringed>) -> R,
    ) -> R {
        let horizon = self.spec.horizon();
        if window >= self.swept + horizon {
            self.users
                .retain(|_, ring| ring.back().is_some_and(|r| r.window + horizon > window));
            self.swept = window;
        }
        let ring = match self.users.get_mut(user) {
            Some(ring) => ring,
            None => self.users.entry(user.to_string()).or_default(),
        };
        while ring.front().is_some_and(|r| r.window + horizon <= window) {
            ring.pop_front();
        }
        if ring.back().is_some_and(|r| r.window == window) {
            ring.pop_back();
        }
        debug_assert!(
            ring.back().is_none_or(|r| r.window < window),
            "windows are pushed in order"
        );
        if ring.len() >= self.spec.len {
            ring.pop_front();
        }
        ring.push_back(Ringed::new(window, held));
        then(&self.spec, ring)
    }
}

/// One worker's rings as a checkpoint holds them: each user's held summaries, oldest first,
/// and the window of the last sweep of idle users.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SequenceState {
    /// User -> (window, what the ring holds of it), in window order.
    pub users: BTreeMap<String, Vec<(u64, HeldWindow)>>,
    /// The window of the last sweep (only when idle users are dropped depends on it).
    pub swept: u64,
}

impl SequenceState {
    /// The users worker `index` of `peers` keeps (the operator places users by
    /// differential's hash of the user id).
    pub fn owned_by(&self, index: usize, peers: usize) -> SequenceState {
        SequenceState {
            users: self
                .users
                .iter()
                .filter(|(u, _)| worker_of(user_hash(u), peers) == index)
                .map(|(u, r)| (u.clone(), r.clone()))
                .collect(),
            swept: self.swept,
        }
    }

    /// The union of disjoint sets of users (each worker's part): an error names a user two
    /// parts hold. The earliest sweep is kept (sweeps only drop idle users early).
    ///
    /// ```
    /// use personaflow_operators::sequences::{SequenceHistories, SequenceSpec, SequenceState};
    /// use personaflow_operators::window::features::{WindowAgg, WindowSummary};
    /// use personaflow_operators::{Event, WindowSpec};
    /// let mut h = SequenceHistories::with_spec(SequenceSpec::active(4, 100));
    /// for (u, w) in [("a", 1), ("b", 2), ("a", 3)] {
    ///     h.push(u, w, WindowSummary::new(&WindowAgg::of(&Event::new(w as i64 * 60_000, u, "x")), w, &WindowSpec::default()));
    /// }
    /// let whole = h.state();
    /// let parts: Vec<SequenceState> = (0..3).map(|i| whole.owned_by(i, 3)).collect();
    /// assert_eq!(SequenceState::merge(parts).unwrap(), whole);
    /// assert!(SequenceState::merge([whole.clone(), whole]).is_err());
    /// ```
    pub fn merge(parts: impl IntoIterator<Item = SequenceState>) -> Result<SequenceState> {
        let mut all = SequenceState {
            users: BTreeMap::new(),
            swept: u64::MAX,
        };
        for part in parts {
            all.swept = all.swept.min(part.swept);
            for (user, ring) in part.users {
                if all.users.contains_key(&user) {
                    return Err(Error::StateOverlap(format!(
                        "the sequence of user {user:?}"
                    )));
                }
                all.users.insert(user, ring);
            }
        }
        if all.swept == u64::MAX {
            all.swept = 0;
        }
        Ok(all)
    }
}

/// What a continuous job keeps to checkpoint the rings as of an earlier window than the
/// operator's: the rings before window `before` and every push since, by window. A restart
/// replays the last windows of events, so a checkpoint stores the rings as of the window
/// before its replay starts, and the replay pushes the same summaries again.
#[derive(Clone, Debug)]
pub struct SequenceLog {
    base: SequenceHistories,
    before: u64,
    pushes: BTreeMap<u64, Vec<(String, HeldWindow)>>,
}

/// A worker's [`SequenceLog`], shared between the operator and the job's checkpoints.
pub type SequenceSnapshots = Rc<RefCell<SequenceLog>>;

impl SequenceLog {
    /// A log whose base is `state`, the rings before window `before`.
    pub fn new(spec: SequenceSpec, state: SequenceState, before: u64) -> Self {
        SequenceLog {
            base: SequenceHistories::from_state(spec, state),
            before,
            pushes: BTreeMap::new(),
        }
    }

    /// The earliest window whose rings before it [`state_before`](Self::state_before) can
    /// still give.
    pub fn earliest(&self) -> u64 {
        self.before
    }

    /// Records the pushes of `window` (in the operator's order).
    pub fn record(&mut self, window: u64, pushes: Vec<(String, HeldWindow)>) {
        if window >= self.before && !pushes.is_empty() {
            self.pushes.entry(window).or_default().extend(pushes);
        }
    }

    /// The rings before window `window`: the base with the pushes of the windows before it
    /// applied. `None` if the log was pruned past it.
    ///
    /// ```
    /// use personaflow_operators::sequences::{HeldWindow, SequenceHistories, SequenceLog, SequenceSpec, SequenceState};
    /// use personaflow_operators::window::features::{WindowAgg, WindowSummary};
    /// use personaflow_operators::{Event, WindowSpec};
    /// let spec = SequenceSpec::active(4, 100);
    /// let s = |w: u64| WindowSummary::new(&WindowAgg::of(&Event::new(w as i64 * 60_000, "u", "x")), w, &WindowSpec::default());
    /// let mut log = SequenceLog::new(spec, SequenceState::default(), 0);
    /// let mut live = SequenceHistories::with_spec(spec);
    /// for w in [1, 5, 9] {
    ///     live.push("u", w, s(w));
    ///     log.record(w, vec![("u".into(), HeldWindow::from(&s(w)))]);
    /// }
    /// assert_eq!(log.state_before(10).unwrap(), live.state());
    /// assert_eq!(log.state_before(6).unwrap().users["u"].len(), 2); // windows 1 and 5
    /// log.prune_before(6);
    /// assert!(log.state_before(5).is_none());
    /// ```
    pub fn state_before(&self, window: u64) -> Option<SequenceState> {
        if window < self.before {
            return None;
        }
        let mut rings = self.base.clone();
        for (w, pushes) in self.pushes.range(..window) {
            for (user, held) in pushes {
                rings.hold(user, *w, held.clone(), |_, _| ());
            }
        }
        Some(rings.into_state())
    }

    /// Applies the pushes of the windows before `window` to the base and forgets them: later
    /// states can still be had, earlier ones not.
    pub fn prune_before(&mut self, window: u64) {
        if window <= self.before {
            return;
        }
        let kept = self.pushes.split_off(&window);
        for (w, pushes) in std::mem::replace(&mut self.pushes, kept) {
            for (user, held) in pushes {
                self.base.hold(&user, w, held, |_, _| ());
            }
        }
        self.before = window;
    }
}

fn ln1p(v: u64) -> f32 {
    (v as f64).ln_1p() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::features::{WindowAgg, NUM_BASE_FEATURES};
    use crate::{Event, WindowSpec};

    /// The shortcut of `distinct_windows_view` (no view built for a sequence that is its own
    /// view) agrees with building the view and comparing, on seeded random activity.
    #[test]
    fn distinct_windows_views_are_exactly_the_views_that_differ() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (mut same, mut differ) = (0, 0);
        for _ in 0..40 {
            let len = rng.random_range(1..6usize);
            let mut h = SequenceHistories::with_spec(SequenceSpec::active(len, 40));
            let busy = rng.random_range(0.2..1.0);
            for w in 0..60u64 {
                if rng.random_bool(busy) {
                    let seq = h.push("u", w, summary_of("u", w, rng.random_range(1..4)));
                    let view = seq.windows_view().into_owned();
                    let differs = view.active != seq.active || view.features != seq.features;
                    assert_eq!(seq.distinct_windows_view(), differs.then_some(view));
                    if differs {
                        differ += 1
                    } else {
                        same += 1
                    }
                }
            }
        }
        assert!(same > 50 && differ > 50, "{same} same, {differ} differing");
    }

    fn summary(w: u64, events: usize) -> WindowSummary {
        let mut agg = WindowAgg::empty();
        for i in 0..events {
            agg.add(&Event::new(w as i64 * 60_000 + i as i64, "u", "a"));
        }
        WindowSummary::new(&agg, w, &WindowSpec::default())
    }

    #[test]
    fn velocity_compares_with_previous_active_step() {
        let (a, b) = (summary(5, 1), summary(8, 7));
        let seq = build_sequence(8, 16, &[(8, &b), (5, &a)]).unwrap();
        let cur = seq.current();
        assert_eq!(cur.len(), NUM_FEATURES);
        assert!((cur[VELOCITY_EVENTS] - (8f32.ln() - 2f32.ln())).abs() < 1e-6);
        let first = seq.step(16 - 4).unwrap();
        assert_eq!(first[VELOCITY_EVENTS], 0.0, "no earlier active step");
        assert_eq!(&cur[..NUM_BASE_FEATURES], b.base.as_slice());
        assert_eq!(seq.active_steps().count(), 2);
        assert!(seq.step(16 - 3).is_none());
        assert_eq!(seq.history_windows, 1);
        assert_eq!(seq.events, 7);
    }

    /// The ring buffer's sequences are `build_sequence_with` over the user's whole history,
    /// recomputed from scratch, at every window of seeded random activity, for both kinds of
    /// history; idle users leave.
    #[test]
    fn histories_give_the_sequences_of_the_whole_history() {
        use rand::{Rng, SeedableRng};
        for seed in 0..40u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let len = rng.random_range(1..6usize);
            let spec = if seed % 2 == 0 {
                SequenceSpec::windows(len)
            } else {
                SequenceSpec::active(len, rng.random_range(1..30))
            };
            let horizon = spec.horizon();
            let mut histories = SequenceHistories::with_spec(spec);
            let mut all: Vec<(String, u64, WindowSummary)> = Vec::new();
            for w in 0..60u64 {
                for u in 0..8 {
                    if rng.random_bool(0.3) {
                        let user = format!("u{u}");
                        let s = summary_of(&user, w, rng.random_range(1..4));
                        let got = histories.push(&user, w, s.clone());
                        all.push((user.clone(), w, s));
                        let history: Vec<(u64, &WindowSummary)> = all
                            .iter()
                            .filter(|(v, _, _)| *v == user)
                            .map(|(_, w, s)| (*w, s))
                            .collect();
                        let want = build_sequence_with(&spec, w, &history).unwrap();
                        assert_eq!(got, want, "seed {seed}, user {user}, window {w}");
                    }
                }
                let recent = all
                    .iter()
                    .filter(|(_, v, _)| v + 2 * horizon > w)
                    .map(|(u, _, _)| u)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len();
                assert!(histories.users() <= recent.max(1), "idle users are dropped");
            }
        }
    }

    fn summary_of(user: &str, w: u64, events: usize) -> WindowSummary {
        let mut agg = WindowAgg::empty();
        for i in 0..events {
            agg.add(&Event::new(w as i64 * 60_000 + i as i64, user, "a"));
        }
        WindowSummary::new(&agg, w, &WindowSpec::default())
    }

    /// A user's random active windows below `max_window` (at least one), in order, and their
    /// summaries.
    fn random_history(
        rng: &mut rand::rngs::StdRng,
        max_window: u64,
    ) -> (Vec<u64>, Vec<WindowSummary>) {
        use rand::Rng;
        let mut windows: Vec<u64> = (0..rng.random_range(1..20))
            .map(|_| rng.random_range(0..max_window))
            .collect();
        windows.sort();
        windows.dedup();
        let summaries = windows
            .iter()
            .map(|w| summary(*w, rng.random_range(1..5)))
            .collect();
        (windows, summaries)
    }

    /// An active-history sequence is, recomputed the plain way, the user's last `L` windows
    /// with events within the horizon, right-aligned, velocity against the step before.
    #[test]
    fn active_sequences_are_the_last_active_windows() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..500 {
            let len = rng.random_range(1..8usize);
            let max_idle = rng.random_range(1..200u64);
            let spec = SequenceSpec::active(len, max_idle);
            let (windows, summaries) = random_history(&mut rng, 300);
            let mut history: Vec<(u64, &WindowSummary)> =
                windows.iter().copied().zip(&summaries).collect();
            let current = *windows.last().unwrap();
            history.reverse(); // any order
            let seq = build_sequence_with(&spec, current, &history).unwrap();
            let kept: Vec<usize> = (0..windows.len())
                .filter(|i| current - windows[*i] < max_idle.max(len as u64))
                .collect();
            let kept = &kept[kept.len().saturating_sub(len)..];
            assert_eq!(seq.len(), len);
            assert_eq!(seq.history_windows as usize, kept.len() - 1);
            let first = len - kept.len();
            for step in 0..len {
                match step.checked_sub(first) {
                    None => assert!(seq.step(step).is_none()),
                    Some(k) => {
                        let s = &summaries[kept[k]];
                        let x = seq.step(step).unwrap();
                        assert_eq!(&x[..NUM_BASE_FEATURES], s.base.as_slice());
                        let want = if k == 0 {
                            0.0
                        } else {
                            let p = &summaries[kept[k - 1]];
                            ln1p(s.events) - ln1p(p.events)
                        };
                        assert_eq!(x[VELOCITY_EVENTS], want);
                    }
                }
            }
            assert!(build_sequence_with(&spec, current + 1, &history).is_none());
        }
    }

    /// The windows view of an active-history sequence is the window-history sequence built
    /// from scratch, whatever the history and the horizon.
    #[test]
    fn the_windows_view_is_the_window_history_sequence() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for _ in 0..500 {
            let len = rng.random_range(1..8usize);
            let spec = SequenceSpec::active(len, rng.random_range(1..40u64));
            let (windows, summaries) = random_history(&mut rng, 60);
            let history: Vec<(u64, &WindowSummary)> =
                windows.iter().copied().zip(&summaries).collect();
            let current = *windows.last().unwrap();
            let active = build_sequence_with(&spec, current, &history).unwrap();
            let plain = build_sequence(current, len, &history).unwrap();
            assert_eq!(*active.windows_view(), plain);
            assert!(matches!(
                plain.windows_view(),
                std::borrow::Cow::Borrowed(_)
            ));
        }
    }

    /// The log's rings before any window it can still give are those of a fresh history fed
    /// every push before that window, recomputed from scratch; pruning keeps that true for
    /// the windows after it; a state split between workers and merged back is the same.
    #[test]
    fn the_log_gives_the_rings_before_any_later_window() {
        use rand::{Rng, SeedableRng};
        for seed in 0..30u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let spec = SequenceSpec::active(rng.random_range(1..5), rng.random_range(1..20));
            let mut log = SequenceLog::new(spec, SequenceState::default(), 0);
            let mut all: Vec<(u64, String, WindowSummary)> = Vec::new();
            let mut pruned = 0u64;
            for w in 0..80u64 {
                let mut pushes = Vec::new();
                for u in 0..6 {
                    if rng.random_bool(0.25) {
                        let user = format!("u{u}");
                        let s = summary_of(&user, w, rng.random_range(1..4));
                        pushes.push((user.clone(), HeldWindow::from(&s)));
                        all.push((w, user, s));
                    }
                }
                log.record(w, pushes);
                let x = rng.random_range(pruned..=w + 1);
                let mut fresh = SequenceHistories::with_spec(spec);
                for (v, user, s) in all.iter().filter(|(v, _, _)| *v < x) {
                    fresh.push(user, *v, s.clone());
                }
                let got = log.state_before(x).unwrap();
                assert_eq!(got, fresh.state(), "seed {seed}, window {w}, before {x}");
                let parts: Vec<SequenceState> = (0..3).map(|i| got.owned_by(i, 3)).collect();
                assert_eq!(SequenceState::merge(parts).unwrap().users, got.users);
                if rng.random_bool(0.2) {
                    pruned = rng.random_range(pruned..=w + 1);
                    log.prune_before(pruned);
                    if pruned > 0 {
                        assert!(log.state_before(pruned - 1).is_none());
                    }
                }
            }
        }
    }

    #[test]
    fn early_windows_do_not_underflow() {
        let s = summary(1, 2);
        let seq = build_sequence(1, 16, &[(1, &s)]).unwrap();
        assert_eq!(seq.len(), 16);
        assert_eq!(seq.features.len(), 16 * NUM_FEATURES);
        assert_eq!(seq.history_windows, 0);
    }
}
