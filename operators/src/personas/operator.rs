//! `personas`: streaming clustering of user profiles into personas with stable ids (DESIGN.md
//! step 7).

use crate::ops::batch::BatchByWindow;
use crate::ops::{user_hash, worker_of, Profile, Snapshots, UserWindow};
use crate::personas::{distinguishing_features, ColumnStats, PersonaConfig, PersonaModel};
use crate::vector::{Score, Vector};
use crate::window::features::FEATURES;
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Exchange as _;

/// One persona in one window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Persona {
    /// Stable id.
    pub id: u32,
    /// Users assigned to it in the window.
    pub size: u64,
    /// Centroid in profile space.
    pub centroid: Vector,
    /// The features that set its users apart most: name and difference of their mean from the
    /// window's mean, in the window's standard deviations.
    pub characteristics: Vec<(String, Score)>,
    /// Personas in the window (k).
    pub personas: u32,
    /// k was chosen (by batch k-means and silhouette) in this window.
    pub reselected: bool,
}

/// A user's persona in one window.
///
/// Its lists are shared: the window's ids are one list for all its users, and each copy of an
/// assignment for another consumer (the pins, the policies, the sink) shares the lists instead
/// of allocating them again, on the one worker that makes every assignment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PersonaAssignment {
    /// The nearest persona.
    pub persona: u32,
    /// Euclidean distance to its centroid.
    pub distance: Score,
    /// The window's persona ids, ascending.
    pub ids: Arc<[u32]>,
    /// Probability of each of them.
    pub probabilities: Arc<Vector>,
}

/// What the personas operator emits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum PersonaFact {
    Persona(Persona),
    Assignment(UserWindow, PersonaAssignment),
}

/// The two collections the personas operator makes.
#[allow(missing_debug_implementations)]
pub struct PersonaCollections<'scope> {
    /// `(id, Persona)` facts, one per persona and window.
    pub personas: VecCollection<'scope, u64, (u32, Persona), isize>,
    /// `((user, w), PersonaAssignment)` facts, one per profile.
    pub assignments: VecCollection<'scope, u64, (UserWindow, PersonaAssignment), isize>,
}

/// The model's state after each window it processed, for checkpoints.
pub type PersonaSnapshots = Snapshots<PersonaModel>;

/// The exchange hash every profile travels by: one worker carries the model.
const MODEL_HASH: u64 = 0;

/// The worker, of `peers`, that carries the persona model (a checkpointed model is resumed
/// there).
pub fn model_worker(peers: usize) -> usize {
    worker_of(MODEL_HASH, peers)
}

/// The personas of one window from `profiles` (sorted by user), updating `model`: the plain
/// function behind [`ClusterPersonas::personas`].
pub fn window_personas(
    model: &mut PersonaModel,
    window: u64,
    profiles: &[(UserWindow, Profile)],
    config: &PersonaConfig,
) -> Vec<(Persona, Vec<(UserWindow, PersonaAssignment)>)> {
    let dims = profiles.first().map_or(0, |(_, p)| p.embedding.len());
    let points: Vec<&[f32]> = profiles
        .iter()
        .filter(|(_, p)| p.embedding.len() == dims)
        .map(|(_, p)| p.embedding.as_slice())
        .collect();
    let Some(mut out) = model.update(window, &points, config) else {
        return Vec::new();
    };
    let mut population = ColumnStats::default();
    let mut groups: Vec<ColumnStats> = vec![ColumnStats::default(); out.ids.len()];
    let mut members: Vec<Vec<(UserWindow, PersonaAssignment)>> = vec![Vec::new(); out.ids.len()];
    let ids: Arc<[u32]> = out.ids.as_slice().into();
    let rows = profiles.iter().filter(|(_, p)| p.embedding.len() == dims);
    for ((key, profile), a) in rows.zip(std::mem::take(&mut out.assignments)) {
        let slot = out.ids.iter().position(|id| *id == a.persona).unwrap_or(0);
        population.add(profile.features.as_slice());
        groups[slot].add(profile.features.as_slice());
        members[slot].push((
            key.clone(),
            PersonaAssignment {
                persona: a.persona,
                distance: Score(a.distance as f32),
                ids: Arc::clone(&ids),
                probabilities: Arc::new(Vector(a.probabilities)),
            },
        ));
    }
    let (mean, std) = (population.mean(), population.std());
    out.ids
        .iter()
        .zip(&out.centroids)
        .zip(groups.iter().zip(members))
        .map(|((id, centroid), (group, members))| {
            let characteristics = if group.count() == 0 {
                Vec::new()
            } else {
                distinguishing_features(&group.mean(), &mean, &std, config.top_features)
                    .into_iter()
                    .map(|(i, z)| {
                        let name = FEATURES.get(i).map_or("?", |f| f.name);
                        (name.to_string(), Score(z as f32))
                    })
                    .collect()
            };
            let persona = Persona {
                id: *id,
                size: members.len() as u64,
                centroid: Vector(centroid.clone()),
                characteristics,
                personas: out.ids.len() as u32,
                reselected: out.reselected,
            };
            (persona, members)
        })
        .collect()
}

/// Clusters profiles into personas.
pub trait ClusterPersonas<'scope> {
    /// The personas of each window and every profile's assignment, as facts at the window.
    ///
    /// All profiles of a window go to one worker ([`model_worker`]), which processes windows in
    /// order and carries one [`PersonaModel`] from window to window ([`window_personas`]):
    /// k-means++ seeding, mini-batch updates with decay, k by silhouette, ids matched across
    /// re-selections. `initial` `(w, model)` resumes from the model as of the end of window `w`,
    /// skipping windows up to `w`. With `snapshots`, the model is kept there after each window
    /// (and the initial one at `w`), where a checkpoint takes it ([`Snapshots`]). The personas
    /// stay on that worker; each assignment goes on to its user's ([`user_hash`]), where every
    /// consumer of the assignments places them.
    ///
    /// ```
    /// use personaflow_operators::personas::PersonaConfig;
    /// use personaflow_operators::{Event, WindowSpec};
    /// use personaflow_operators::embed::StandardisedEmbedder;
    /// use personaflow_operators::ops::*;
    /// use timely::dataflow::operators::ToStream;
    /// let events: Vec<Event> = (0..40)
    ///     .map(|u| Event::new(1_000, &format!("u{u}"), if u % 2 == 0 { "a" } else { "b" }))
    ///     .collect();
    /// timely::example(move |scope| {
    ///     let profiles = events
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .window_aggregate(WindowSpec::default())
    ///         .sequences(16)
    ///         .embed_profiles(Box::new(StandardisedEmbedder::default()), 64, ErrorSlot::default());
    ///     let config = PersonaConfig { k: Some(2), ..PersonaConfig::default() };
    ///     let out = profiles.personas(config, None, None);
    ///     out.personas.inspect(|((id, p), t, _)| assert!(*id < 2 && p.size == 20 && *t == 0));
    ///     out.assignments.inspect(|((_, a), _, _)| assert_eq!(*a.ids, [0, 1]));
    /// });
    /// ```
    fn personas(
        self,
        config: PersonaConfig,
        initial: Option<(u64, PersonaModel)>,
        snapshots: Option<PersonaSnapshots>,
    ) -> PersonaCollections<'scope>;
}

impl<'scope> ClusterPersonas<'scope> for VecCollection<'scope, u64, (UserWindow, Profile), isize> {
    fn personas(
        self,
        config: PersonaConfig,
        initial: Option<(u64, PersonaModel)>,
        snapshots: Option<PersonaSnapshots>,
    ) -> PersonaCollections<'scope> {
        let (resume_after, mut model) = match initial {
            Some((w, m)) => (Some(w), m),
            None => (None, PersonaModel::default()),
        };
        if let (Some(w), Some(s)) = (resume_after, &snapshots) {
            s.borrow_mut().insert(w, model.clone());
        }
        let facts = self.fold_by_window(
            Exchange::new(|_: &((UserWindow, Profile), u64, isize)| MODEL_HASH),
            "Personas",
            move |window, profiles: Vec<(UserWindow, Profile)>, out| {
                if resume_after.is_some_and(|r| window <= r) {
                    return;
                }
                for (persona, members) in window_personas(&mut model, window, &profiles, &config) {
                    out.push(PersonaFact::Persona(persona));
                    out.extend(
                        members
                            .into_iter()
                            .map(|(k, a)| PersonaFact::Assignment(k, a)),
                    );
                }
                if let Some(s) = &snapshots {
                    s.borrow_mut().insert(window, model.clone());
                }
            },
        );
        // Each assignment to its user's worker (a persona stays with the model): every consumer
        // of the assignments (the pins, the policies) places them by user anyway, and so the
        // facts' split and the assignments' sink are shared by the workers instead of falling
        // to the model's alone.
        let facts = facts
            .inner
            .exchange(|(fact, _, _)| match fact {
                PersonaFact::Persona(_) => MODEL_HASH,
                PersonaFact::Assignment((user, _), _) => user_hash(user),
            })
            .as_collection();
        PersonaCollections {
            personas: facts.clone().flat_map(|f| match f {
                PersonaFact::Persona(p) => Some((p.id, p)),
                PersonaFact::Assignment(..) => None,
            }),
            assignments: facts.flat_map(|f| match f {
                PersonaFact::Assignment(k, a) => Some((k, a)),
                PersonaFact::Persona(_) => None,
            }),
        }
    }
}
