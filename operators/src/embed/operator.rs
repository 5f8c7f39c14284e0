//! `embed_profiles`: sequences to latent profiles through an [`Embedder`], batched by the
//! windows complete at once (DESIGN.md step 4).

use crate::embed::{Embedder, Embedding};
use crate::event::Context;
use crate::ops::batch::BatchByWindow;
use crate::ops::UserWindow;
use crate::policies::socket::WindowDemand;
use crate::sequences::Sequence;
use crate::vector::{Score, Vector};
use crate::window::features::NUM_FEATURES;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;

/// Default largest batch handed to an embedder (and to a forecaster) at once. With one intra-op
/// thread per session (the default) the recurrent models run fastest per sequence at about
/// this size: larger batches' recurrent state leaves the caches (BENCHMARKS.md, "Inference").
/// Results do not depend on it: the ONNX models give a sequence the same outputs in any batch
/// (`personaflow_models`, which runs a batch of one as two copies of its row).
pub const DEFAULT_MAX_BATCH: usize = 64;

/// Where an operator that cannot return errors leaves the first one for the runtime to report.
pub type ErrorSlot = Rc<RefCell<Option<crate::Error>>>;

/// A user's latent profile in one window: a shared handle that reads as its [`ProfileData`].
/// Timely hands every consumer of a stream its own copy of each record, and the profiles go to
/// half a dozen (segments, resonance, personas, drift, policies, the sink): a copy of a
/// `Profile` is a pointer, not its vectors and strings. It serialises as its data.
///
/// ```
/// use personaflow_operators::ops::{Profile, ProfileData};
/// let p = Profile::new(ProfileData { events: 3, ..ProfileData::default() });
/// let q = p.clone();
/// assert_eq!(q.events, 3);
/// assert!(std::ptr::eq(&*p, &*q));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Profile(Arc<ProfileData>);

impl Profile {
    /// The handle of `data`.
    pub fn new(data: ProfileData) -> Self {
        Profile(Arc::new(data))
    }
}

impl From<ProfileData> for Profile {
    fn from(data: ProfileData) -> Self {
        Profile::new(data)
    }
}

impl Deref for Profile {
    type Target = ProfileData;

    fn deref(&self) -> &ProfileData {
        &self.0
    }
}

/// What a [`Profile`] holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProfileData {
    /// The embedding.
    pub embedding: Vector,
    /// Anomaly score, when the embedder provides one.
    pub anomaly_score: Option<Score>,
    /// Active windows of history before this one.
    pub history_windows: u32,
    /// Events in the window.
    pub events: u64,
    /// Authenticated in the window.
    pub authenticated: bool,
    /// Known segment (authenticated users only).
    pub segment: Option<String>,
    /// Device, os, country.
    pub context: Context,
    /// The window's behavioural features (the sequence's last step), which personas and drift
    /// are described by.
    pub features: Vector,
    /// What the window asked of the network (for policies and socket profiles).
    pub demand: WindowDemand,
    /// With active history ([`crate::sequences::SequenceHistory::Active`]): the embedding of
    /// the user's last `L` windows ([`Sequence::windows_view`]) where it differs from the
    /// active history's; `None` where they are the same (window history, or a user active in
    /// each of the last `L` windows). See [`ProfileData::windows_embedding`].
    pub windows_embedding: Option<Vector>,
}

impl ProfileData {
    /// The embedding of the user's last `L` windows, whichever history the sequences keep.
    /// Drift compares these: an active history reaches back over a user's idle time, so after
    /// a change in behaviour it would mix the sessions before the change with those after it
    /// for longer, and the detector would find changes later or not at all.
    pub fn windows_embedding(&self) -> &Vector {
        self.windows_embedding.as_ref().unwrap_or(&self.embedding)
    }
}

/// Embeds sequences.
pub trait EmbedProfiles<'scope> {
    /// For each sequence whose net update at window `w` is an insertion, one fact
    /// `((user, w), Profile)` at `w`. The sequences of every window this worker finds complete
    /// at once (one window, or a run of windows sent at one time) are embedded together, in
    /// batches of at most `max_batch`, in window order; with active history, the [distinct
    /// windows views](Sequence::distinct_windows_view) too, after them (for
    /// [`ProfileData::windows_embedding`]; a batch of views alone goes to
    /// [`Embedder::embed_vectors`]). An embedder's outputs for a sequence must not depend on
    /// the batch it comes in (the ONNX models' do not: `personaflow_models`). If the embedder
    /// fails, the error goes to `errors` and those windows yield no profiles; the runtime
    /// reports it and stops.
    ///
    /// ```
    /// use personaflow_operators::{Event, WindowSpec};
    /// use personaflow_operators::embed::StandardisedEmbedder;
    /// use personaflow_operators::ops::{EmbedProfiles, ErrorSlot, Sequences, WindowAggregate};
    /// use timely::dataflow::operators::ToStream;
    /// timely::example(|scope| {
    ///     vec![Event::new(1_000, "u", "a")]
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .window_aggregate(WindowSpec::default())
    ///         .sequences(16)
    ///         .embed_profiles(Box::new(StandardisedEmbedder::default()), 64, ErrorSlot::default())
    ///         .inspect(|(((u, w), p), t, r)| assert!(&**u == "u" && *w == 0 && *t == 0 && *r == 1 && p.history_windows == 0));
    /// });
    /// ```
    fn embed_profiles(
        self,
        embedder: Box<dyn Embedder>,
        max_batch: usize,
        errors: ErrorSlot,
    ) -> VecCollection<'scope, u64, (UserWindow, Profile), isize>
    where
        Self: Sized,
    {
        self.embed_profiles_with(embedder, max_batch, errors, true)
    }

    /// As [`embed_profiles`](Self::embed_profiles); the windows views of active histories
    /// are embedded only if `windows_views` (without them every
    /// [`ProfileData::windows_embedding`] is the profile's own embedding).
    fn embed_profiles_with(
        self,
        embedder: Box<dyn Embedder>,
        max_batch: usize,
        errors: ErrorSlot,
        windows_views: bool,
    ) -> VecCollection<'scope, u64, (UserWindow, Profile), isize>;
}

impl<'scope> EmbedProfiles<'scope> for VecCollection<'scope, u64, (UserWindow, Sequence), isize> {
    fn embed_profiles_with(
        self,
        mut embedder: Box<dyn Embedder>,
        max_batch: usize,
        errors: ErrorSlot,
        windows_views: bool,
    ) -> VecCollection<'scope, u64, (UserWindow, Profile), isize> {
        let max_batch = max_batch.max(1);
        self.batch_by_windows("EmbedProfiles", move |windows, profiles| {
            // Every window complete now is embedded together: a run of windows fills the
            // batches one window would leave part empty. (Each sequence's embedding is the same
            // whatever batch it is in.) Each key names its window.
            let records: Vec<(UserWindow, Sequence)> =
                windows.into_iter().flat_map(|(_, r)| r).collect();
            // Active histories that differ from their last `L` windows are embedded twice:
            // the views go after the windows' sequences, in the same batches.
            let views: Vec<(usize, Sequence)> = records
                .iter()
                .enumerate()
                .filter(|_| windows_views)
                .filter_map(|(i, (_, s))| Some((i, s.distinct_windows_view()?)))
                .collect();
            let seqs: Vec<&Sequence> = records
                .iter()
                .map(|(_, s)| s)
                .chain(views.iter().map(|(_, v)| v))
                .collect();
            let mut embeddings = Vec::with_capacity(seqs.len());
            for (i, chunk) in seqs.chunks(max_batch).enumerate() {
                // A batch of views alone needs no anomaly scores: the embedder may take its
                // cheaper path to the same vectors. (A batch that starts with the window's
                // sequences keeps its shape, so its outputs are bit for bit as before.)
                let result = match i * max_batch >= records.len() {
                    true => embedder.embed_vectors(chunk).map(|vs| {
                        vs.into_iter()
                            .map(|vector| Embedding {
                                vector,
                                anomaly_score: None,
                            })
                            .collect()
                    }),
                    false => embedder.embed_batch(chunk),
                };
                match result {
                    Ok(e) => embeddings.extend(e),
                    Err(e) => {
                        // The window yields no profiles; the runtime reports the error and
                        // stops.
                        errors.borrow_mut().get_or_insert(e);
                        return;
                    }
                }
            }
            let mut windows_embeddings = embeddings.split_off(records.len()).into_iter();
            let mut views = views.into_iter().map(|(i, _)| i).peekable();
            // The sequences are this operator's: their fields move into the profiles, the
            // current window's features are the last step's.
            for (i, ((key, seq), emb)) in records.into_iter().zip(embeddings).enumerate() {
                let windows_embedding = views
                    .next_if_eq(&i)
                    .and_then(|_| windows_embeddings.next())
                    .map(|e| Vector(e.vector));
                let all = &seq.features.0;
                let features = all[all.len().saturating_sub(NUM_FEATURES)..].to_vec();
                profiles.push((
                    key.1,
                    (
                        key,
                        Profile::new(ProfileData {
                            embedding: Vector(emb.vector),
                            anomaly_score: emb.anomaly_score.map(Score),
                            history_windows: seq.history_windows,
                            events: seq.events,
                            authenticated: seq.authenticated,
                            segment: seq.segment,
                            context: seq.context,
                            features: Vector(features),
                            demand: seq.demand,
                            windows_embedding,
                        }),
                    ),
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::StandardisedEmbedder;
    use crate::ops::{Sequences, WindowAggregate};
    use crate::sequences::SequenceSpec;
    use crate::{Event, WindowSpec};
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use timely::dataflow::operators::ToStream;

    /// The profiles of `u` (windows 3, 8, 10) and `d` (windows 9, 10) with sequences of 4
    /// steps of `spec`'s history, embedded in batches of 1 (the views in batches of their own).
    fn profiles(spec: SequenceSpec) -> BTreeMap<UserWindow, Profile> {
        profiles_with(spec, true)
    }

    fn profiles_with(spec: SequenceSpec, views: bool) -> BTreeMap<UserWindow, Profile> {
        profiles_by(spec, views, || Box::new(StandardisedEmbedder::default()), 1)
    }

    fn profiles_by(
        spec: SequenceSpec,
        views: bool,
        embedder: impl Fn() -> Box<dyn Embedder> + Send + Sync + 'static,
        max_batch: usize,
    ) -> BTreeMap<UserWindow, Profile> {
        let got = Arc::new(Mutex::new(BTreeMap::new()));
        let sink = got.clone();
        timely::example(move |scope| {
            let events: Vec<Event> = [("u", 3), ("u", 8), ("u", 10), ("d", 9), ("d", 10)]
                .iter()
                .map(|(u, w)| Event::new(w * 60_000 + 7, *u, "a"))
                .collect();
            events
                .to_stream(scope)
                .container::<Vec<_>>()
                .window_aggregate(WindowSpec::default())
                .sequences(spec)
                .embed_profiles_with(embedder(), max_batch, ErrorSlot::default(), views)
                .inspect(move |((k, p), _, r)| {
                    assert_eq!(*r, 1);
                    sink.lock().unwrap().insert(k.clone(), p.clone());
                });
        });
        let got = got.lock().unwrap().clone();
        got
    }

    #[test]
    fn active_histories_carry_the_embedding_of_their_last_windows_where_it_differs() {
        let active = profiles(SequenceSpec::active(4, 100));
        let windows = profiles(SequenceSpec::windows(4));
        assert_eq!(active.len(), 5);
        for (key, p) in &active {
            let w = &windows[key];
            assert_eq!(w.windows_embedding, None, "{key:?}");
            // Drift reads the same points in both modes.
            assert_eq!(p.windows_embedding(), &w.embedding, "{key:?}");
            let differs = p.embedding != w.embedding;
            assert_eq!(p.windows_embedding.is_some(), differs, "{key:?}");
        }
        // u at 8 remembers window 3 (outside windows 5..=8), at 10 windows 3 and 8: both
        // differ; d's two windows are the last two in both histories.
        let some: Vec<&UserWindow> = active
            .iter()
            .filter(|(_, p)| p.windows_embedding.is_some())
            .map(|(k, _)| k)
            .collect();
        assert_eq!(some, [&("u".into(), 8), &("u".into(), 10)]);
        // Not asked for: none.
        let without = profiles_with(SequenceSpec::active(4, 100), false);
        assert!(without.values().all(|p| p.windows_embedding.is_none()));
        assert_eq!(
            without.values().map(|p| &p.embedding).collect::<Vec<_>>(),
            active.values().map(|p| &p.embedding).collect::<Vec<_>>()
        );
    }

    /// Records which method embedded each batch, and its size.
    struct Recording {
        inner: StandardisedEmbedder,
        calls: Arc<Mutex<Vec<(&'static str, usize)>>>,
    }

    impl Embedder for Recording {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn dims(&self) -> usize {
            self.inner.dims()
        }
        fn embed_batch(&mut self, batch: &[&Sequence]) -> crate::Result<Vec<Embedding>> {
            self.calls.lock().unwrap().push(("batch", batch.len()));
            self.inner.embed_batch(batch)
        }
        fn embed_vectors(&mut self, batch: &[&Sequence]) -> crate::Result<Vec<Vec<f32>>> {
            self.calls.lock().unwrap().push(("vectors", batch.len()));
            self.inner.embed_vectors(batch)
        }
    }

    #[test]
    fn batches_span_the_windows_complete_at_once_and_views_alone_take_the_vectors_path() {
        let spec = SequenceSpec::active(4, 100);
        let want = profiles(spec);
        let (b, v) = ("batch", "vectors");
        // Every window is complete at once here (the events are sent at one time): the
        // sequences of windows 3 (u), 8 (u), 9 (d) and 10 (d, u), then the views of u at 8
        // and at 10.
        for (max_batch, expected) in [
            (
                1,
                vec![(b, 1), (b, 1), (b, 1), (b, 1), (b, 1), (v, 1), (v, 1)],
            ),
            (2, vec![(b, 2), (b, 2), (b, 2), (v, 1)]),
            (3, vec![(b, 3), (b, 3), (v, 1)]),
            (64, vec![(b, 7)]),
        ] {
            let calls = Arc::new(Mutex::new(Vec::new()));
            let sink = calls.clone();
            let embedder = move || -> Box<dyn Embedder> {
                Box::new(Recording {
                    inner: StandardisedEmbedder::default(),
                    calls: sink.clone(),
                })
            };
            let got = profiles_by(spec, true, embedder, max_batch);
            assert_eq!(got, want, "max_batch {max_batch}");
            assert_eq!(*calls.lock().unwrap(), expected, "max_batch {max_batch}");
        }
    }
}
