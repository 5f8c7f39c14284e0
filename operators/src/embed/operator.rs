//! `embed_profiles`: sequences to latent profiles through an [`Embedder`], batched per window
//! (DESIGN.md step 4).

use crate::embed::Embedder;
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
use std::rc::Rc;

/// Default largest batch handed to an embedder (and to a forecaster) at once. With one intra-op
/// thread per session (the default) the recurrent models run fastest per sequence at about
/// this size: larger batches' recurrent state leaves the caches (BENCHMARKS.md, "Inference").
/// Results depend on it only in the last bits: onnxruntime's kernels take other paths for
/// other batch shapes, so a sequence's outputs may differ by an ulp between batch sizes.
pub const DEFAULT_MAX_BATCH: usize = 64;

/// Where an operator that cannot return errors leaves the first one for the runtime to report.
pub type ErrorSlot = Rc<RefCell<Option<crate::Error>>>;

/// A user's latent profile in one window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Profile {
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
}

/// Embeds sequences.
pub trait EmbedProfiles<'scope> {
    /// For each sequence whose net update at window `w` is an insertion, one fact
    /// `((user, w), Profile)` at `w`. All sequences of a window on this worker are embedded
    /// together, in batches of at most `max_batch`, once the window is complete. If the
    /// embedder fails, the error goes to `errors` and that batch yields no profiles; the
    /// runtime reports it and stops.
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
    ///         .inspect(|(((u, w), p), t, r)| assert!(u == "u" && *w == 0 && *t == 0 && *r == 1 && p.history_windows == 0));
    /// });
    /// ```
    fn embed_profiles(
        self,
        embedder: Box<dyn Embedder>,
        max_batch: usize,
        errors: ErrorSlot,
    ) -> VecCollection<'scope, u64, (UserWindow, Profile), isize>;
}

impl<'scope> EmbedProfiles<'scope> for VecCollection<'scope, u64, (UserWindow, Sequence), isize> {
    fn embed_profiles(
        self,
        mut embedder: Box<dyn Embedder>,
        max_batch: usize,
        errors: ErrorSlot,
    ) -> VecCollection<'scope, u64, (UserWindow, Profile), isize> {
        let max_batch = max_batch.max(1);
        self.batch_by_window("EmbedProfiles", move |records, profiles| {
            let mut records = records.into_iter();
            let mut chunk: Vec<(UserWindow, Sequence)> = Vec::with_capacity(max_batch);
            loop {
                chunk.clear();
                chunk.extend(records.by_ref().take(max_batch));
                if chunk.is_empty() {
                    break;
                }
                let seqs: Vec<&Sequence> = chunk.iter().map(|(_, s)| s).collect();
                match embedder.embed_batch(&seqs) {
                    Ok(embeddings) => {
                        // The sequences are this operator's: their fields move into the
                        // profiles, the current window's features are the last step's.
                        for ((key, seq), emb) in chunk.drain(..).zip(embeddings) {
                            let all = &seq.features.0;
                            let features = all[all.len().saturating_sub(NUM_FEATURES)..].to_vec();
                            profiles.push((
                                key,
                                Profile {
                                    embedding: Vector(emb.vector),
                                    anomaly_score: emb.anomaly_score.map(Score),
                                    history_windows: seq.history_windows,
                                    events: seq.events,
                                    authenticated: seq.authenticated,
                                    segment: seq.segment,
                                    context: seq.context,
                                    features: Vector(features),
                                    demand: seq.demand,
                                },
                            ));
                        }
                    }
                    Err(e) => {
                        errors.borrow_mut().get_or_insert(e);
                    }
                }
            }
        })
    }
}
