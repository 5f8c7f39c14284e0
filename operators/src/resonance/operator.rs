//! `resonance`: each active user's probability distribution over segments (DESIGN.md step 6).

use crate::ops::consolidate;
use crate::ops::{Profile, UserWindow};
use crate::resonance::{resonance, Resonance, ResonanceConfig};
use crate::segments::{SegmentSum, SegmentTable};
use differential_dataflow::difference::Semigroup;
use differential_dataflow::{AsCollection, VecCollection};
use std::collections::BTreeMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Capability;

/// Computes resonance.
pub trait Resonate<'scope> {
    /// For each profile fact at window `w`, the user's [`Resonance`] against the segment
    /// profiles as they are at `w`, as a fact at `w`.
    ///
    /// The segment collection changes by a few records per window; its updates are broadcast
    /// to every worker, which keeps the current segment table and scores its own profiles of a
    /// window once that window is complete on both inputs. Work per window is proportional to
    /// the users active in it times the number of segments; nothing is recomputed when a window
    /// passes.
    ///
    /// ```
    /// use personaflow_operators::{Event, WindowSpec};
    /// use personaflow_operators::embed::StandardisedEmbedder;
    /// use personaflow_operators::ops::*;
    /// use personaflow_operators::resonance::ResonanceConfig;
    /// use timely::dataflow::operators::ToStream;
    /// let mut a = Event::new(1_000, "a", "stream_chunk");
    /// a.authenticated = true;
    /// a.segment = Some("video".into());
    /// let b = Event::new(2_000, "b", "stream_chunk");
    /// timely::example(move |scope| {
    ///     let profiles = vec![a, b]
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .window_aggregate(WindowSpec::default())
    ///         .sequences(16)
    ///         .embed_profiles(Box::new(StandardisedEmbedder::default()), 64, ErrorSlot::default());
    ///     let segments = profiles.clone().segment_profiles(60);
    ///     profiles
    ///         .resonance(segments, ResonanceConfig::default())
    ///         .inspect(|(((_, w), r), t, d)| assert!(*w == 0 && r.top_segment() == "video" && *t == 0 && *d == 1));
    /// });
    /// ```
    fn resonance(
        self,
        segments: VecCollection<'scope, u64, (String, SegmentSum), isize>,
        config: ResonanceConfig,
    ) -> VecCollection<'scope, u64, (UserWindow, Resonance), isize>;
}

type Pending<D> = BTreeMap<u64, (Capability<u64>, Vec<(D, isize)>)>;
type TableUpdates = BTreeMap<u64, Vec<((String, SegmentSum), isize)>>;

impl<'scope> Resonate<'scope> for VecCollection<'scope, u64, (UserWindow, Profile), isize> {
    fn resonance(
        self,
        segments: VecCollection<'scope, u64, (String, SegmentSum), isize>,
        config: ResonanceConfig,
    ) -> VecCollection<'scope, u64, (UserWindow, Resonance), isize> {
        let table_updates = segments.inner.broadcast();
        self.inner
            .binary_frontier::<_, CapacityContainerBuilder<Vec<_>>, _, _, _, _>(
                table_updates,
                Pipeline,
                Pipeline,
                "Resonance",
                move |_cap, _info| {
                    let mut profiles: Pending<(UserWindow, Profile)> = BTreeMap::new();
                    let mut table_pending: TableUpdates = BTreeMap::new();
                    // The segment collection as of the last window scored: record -> count.
                    let mut state: BTreeMap<(String, SegmentSum), isize> = BTreeMap::new();
                    move |(profile_input, profile_frontier),
                          (table_input, table_frontier),
                          output| {
                        profile_input.for_each_time(|cap, data| {
                            for batch in data {
                                for (d, t, r) in batch.drain(..) {
                                    profiles
                                        .entry(t)
                                        .or_insert_with(|| (crate::ops::held(&cap), Vec::new()))
                                        .1
                                        .push((d, r));
                                }
                            }
                        });
                        table_input.for_each_time(|_cap, data| {
                            for batch in data {
                                for (d, t, r) in batch.drain(..) {
                                    table_pending.entry(t).or_default().push((d, r));
                                }
                            }
                        });
                        while let Some(entry) = profiles.first_entry() {
                            let window = *entry.key();
                            if profile_frontier.less_equal(&window)
                                || table_frontier.less_equal(&window)
                            {
                                break;
                            }
                            while let Some(updates) = table_pending.first_entry() {
                                if *updates.key() > window {
                                    break;
                                }
                                for (d, r) in updates.remove() {
                                    let count = state.entry(d.clone()).or_default();
                                    count.plus_equals(&r);
                                    if *count == 0 {
                                        state.remove(&d);
                                    }
                                }
                            }
                            let table = SegmentTable::from_sums(
                                state
                                    .iter()
                                    .filter(|(_, c)| **c > 0)
                                    .map(|((name, sum), _)| (name.as_str(), sum)),
                                config.min_segment_profiles,
                            );
                            let (cap, mut updates) = entry.remove();
                            consolidate(&mut updates);
                            let mut session = output.session(&cap);
                            for ((key, profile), r) in updates {
                                if r <= 0 {
                                    continue;
                                }
                                if let Some(res) = resonance(
                                    key.1,
                                    profile.embedding.as_slice(),
                                    profile.history_windows,
                                    &profile.context,
                                    &table,
                                    &config,
                                ) {
                                    session.give(((key, res), window, 1isize));
                                }
                            }
                        }
                        crate::ops::follow_frontier(
                            profiles.values_mut().map(|(cap, _)| cap),
                            crate::ops::earliest([profile_frontier, table_frontier]),
                        );
                    }
                },
            )
            .as_collection()
    }
}
