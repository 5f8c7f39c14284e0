//! `segment_profiles`: rolling (count, sum) of authenticated users' profiles per segment
//! (DESIGN.md step 5).

use crate::ops::{Profile, UserWindow};
use crate::segments::SegmentSum;
use crate::window::features::Fnv;
use differential_dataflow::difference::{Abelian, IsZero, Multiply, Semigroup};
use differential_dataflow::{AsCollection, VecCollection};
use std::collections::{BTreeMap, HashMap};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::progress::frontier::AntichainRef;

/// Maintains segment profiles.
pub trait SegmentProfiles<'scope> {
    /// The current [`SegmentSum`] of every segment: each authenticated user's profile with a
    /// known segment is added at its window `w` and retracted at `w + window` (`window` at
    /// least 1; retractions in the input are ignored: profiles are facts). At each window the
    /// output changes only for the segments whose sum changed there: the old sum retracted,
    /// the new one inserted. Each worker sums its own profiles that count by segment and
    /// window first (`SumSegmentProfiles`), and those sums go to their segment's worker
    /// (`SegmentProfiles`), which keeps the rolling totals; the sums are exact (fixed point),
    /// so the order of additions does not matter. An oracle test checks it against the same
    /// sums held for `window` windows and counted by differential's `count_total` at every
    /// window.
    ///
    /// ```
    /// use personaflow_operators::{Event, WindowSpec};
    /// use personaflow_operators::embed::StandardisedEmbedder;
    /// use personaflow_operators::ops::{EmbedProfiles, ErrorSlot, SegmentProfiles, Sequences, WindowAggregate};
    /// use timely::dataflow::operators::ToStream;
    /// let mut e = Event::new(1_000, "u", "a");
    /// e.authenticated = true;
    /// e.segment = Some("gamer".into());
    /// timely::example(move |scope| {
    ///     vec![e]
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .window_aggregate(WindowSpec::default())
    ///         .sequences(16)
    ///         .embed_profiles(Box::new(StandardisedEmbedder::default()), 64, ErrorSlot::default())
    ///         .segment_profiles(60)
    ///         .inspect(|((s, sum), t, r)| assert!(s == "gamer" && sum.profiles == 1 && (*t == 0 && *r == 1 || *t == 60 && *r == -1)));
    /// });
    /// ```
    fn segment_profiles(
        self,
        window: u64,
    ) -> VecCollection<'scope, u64, (String, SegmentSum), isize>;
}

impl<'scope> SegmentProfiles<'scope> for VecCollection<'scope, u64, (UserWindow, Profile), isize> {
    fn segment_profiles(
        self,
        window: u64,
    ) -> VecCollection<'scope, u64, (String, SegmentSum), isize> {
        let window = window.max(1);
        // Each worker first sums its own profiles by segment and window (in each message that
        // brings them): the sums are exact, so adding them up later gives the same totals,
        // and a segment's worker receives a few sums a window instead of every profile of the
        // segment (the profiles that do not count are dropped where they are).
        let partial = self
            .inner
            .unary::<CapacityContainerBuilder<Vec<_>>, _, _, _>(
                Pipeline,
                "SumSegmentProfiles",
                |_cap, _info| {
                    move |input, output| {
                        input.for_each_time(|cap, data| {
                            // Ordered maps: the sums go out in the same order every run.
                            let mut sums: BTreeMap<u64, BTreeMap<String, SegmentSum>> =
                                BTreeMap::new();
                            for batch in data {
                                for ((_, p), t, r) in batch.drain(..) {
                                    let Some(segment) = p.segment.as_deref() else {
                                        continue;
                                    };
                                    if !counts(&p, r) {
                                        continue;
                                    }
                                    let by_segment = sums.entry(t).or_default();
                                    let sum = match by_segment.get_mut(segment) {
                                        Some(sum) => sum,
                                        None => by_segment.entry(segment.to_string()).or_default(),
                                    };
                                    if r == 1 {
                                        sum.add_profile(p.embedding.as_slice(), &p.context);
                                    } else {
                                        sum.plus_equals(
                                            &SegmentSum::of_profile(
                                                p.embedding.as_slice(),
                                                &p.context,
                                            )
                                            .multiply(&r),
                                        );
                                    }
                                }
                            }
                            output
                                .session(&cap)
                                .give_iterator(sums.into_iter().flat_map(|(t, by_segment)| {
                                    by_segment.into_iter().map(move |sum| (sum, t, 1isize))
                                }));
                        });
                    }
                },
            );
        let by_segment = Exchange::new(
            |((segment, _), _, _): &((String, SegmentSum), u64, isize)| Fnv::hash_str(segment),
        );
        partial
            .unary_frontier::<CapacityContainerBuilder<Vec<_>>, _, _, _>(
                by_segment,
                "SegmentProfiles",
                move |_cap, _info| {
                    let mut rolling = RollingSums::default();
                    move |(input, frontier), output| {
                        input.for_each_time(|cap, data| {
                            for batch in data {
                                for ((segment, sum), t, r) in batch.drain(..) {
                                    rolling.add(&cap, t, window, segment, sum.multiply(&r));
                                }
                            }
                        });
                        while let Some((cap, t, changes)) = rolling.complete(frontier.frontier()) {
                            output
                                .session(&cap)
                                .give_iterator(changes.into_iter().map(|(d, r)| (d, t, r)));
                        }
                        crate::ops::follow_frontier(
                            rolling.pending.values_mut().map(|(cap, _)| cap),
                            crate::ops::earliest([frontier]),
                        );
                    }
                },
            )
            .as_collection()
    }
}

/// Whether a profile's update enters its segment's sum (if it has one): an insertion of an
/// authenticated user's profile.
fn counts(p: &Profile, r: isize) -> bool {
    r > 0 && p.authenticated
}

/// The operator's state: each segment's current sum and the changes not yet applied, by window.
#[derive(Default)]
struct RollingSums {
    totals: HashMap<String, SegmentSum>,
    /// Per window: a capability for it (at or before it, [`crate::ops::held`]) and the sums that enter (profiles of the window) or leave
    /// (negated: profiles of `window` windows before) at it.
    pending: BTreeMap<u64, (Capability<u64>, Vec<SegmentChange>)>,
}

/// A sum entering (or, negated, leaving) a segment.
type SegmentChange = (String, SegmentSum);
/// A segment's sum retracted (-1) or inserted (1).
type SumUpdate = ((String, SegmentSum), isize);

impl RollingSums {
    /// A profile's sum enters at `t` and leaves at `t + window`.
    fn add(
        &mut self,
        cap: &InputCapability<u64>,
        t: u64,
        window: u64,
        segment: String,
        sum: SegmentSum,
    ) {
        let mut gone = sum.clone();
        gone.negate();
        let until = t + window;
        self.pending
            .entry(until)
            .or_insert_with(|| (crate::ops::held(cap), Vec::new()))
            .1
            .push((segment.clone(), gone));
        self.pending
            .entry(t)
            .or_insert_with(|| (crate::ops::held(cap), Vec::new()))
            .1
            .push((segment, sum));
    }

    /// The earliest pending window the frontier has passed (a capability for it, and the
    /// window), with the changes of the segments
    /// whose sum it changes: the old sum retracted, the new one inserted (a zero sum is
    /// neither), as differential's `count_total` of the same sums would give them.
    fn complete(
        &mut self,
        frontier: AntichainRef<'_, u64>,
    ) -> Option<(Capability<u64>, u64, Vec<SumUpdate>)> {
        let entry = self.pending.first_entry()?;
        let window = *entry.key();
        if frontier.less_equal(&window) {
            return None;
        }
        let (cap, mut sums) = entry.remove();
        sums.sort_by(|a, b| a.0.cmp(&b.0));
        let mut changes = Vec::new();
        for chunk in sums.chunk_by(|a, b| a.0 == b.0) {
            let segment = &chunk[0].0;
            let old = self.totals.get(segment).cloned().unwrap_or_default();
            let mut new = old.clone();
            for (_, s) in chunk {
                new.plus_equals(s);
            }
            if new == old {
                continue;
            }
            if !old.is_zero() {
                changes.push(((segment.clone(), old), -1));
            }
            if new.is_zero() {
                self.totals.remove(segment);
            } else {
                changes.push(((segment.clone(), new.clone()), 1));
                self.totals.insert(segment.clone(), new);
            }
        }
        Some((cap, window, changes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::operator::{Profile, ProfileData};
    use crate::ops::Hold;
    use crate::policies::socket::WindowDemand;
    use crate::vector::Vector;
    use crate::Context;
    use differential_dataflow::consolidation::consolidate_updates;
    use differential_dataflow::input::Input;
    use differential_dataflow::operators::count::CountTotal;
    use rand::{Rng, SeedableRng};
    use std::sync::{Arc, Mutex};

    type Updates = Arc<Mutex<Vec<((String, SegmentSum), u64, isize)>>>;

    fn profile(rng: &mut impl Rng) -> Profile {
        let pick = |rng: &mut dyn rand::RngCore, xs: &[&str]| {
            let i = rng.random_range(0..=xs.len());
            xs.get(i).map(|s| s.to_string())
        };
        let segments = ["gamer", "streamer", "office"];
        Profile::new(ProfileData {
            embedding: Vector(
                (0..3)
                    .map(|_| rng.random_range(-4..=4) as f32 * 0.25)
                    .collect(),
            ),
            anomaly_score: None,
            history_windows: 0,
            events: 1,
            authenticated: rng.random_bool(0.8),
            segment: pick(rng, &segments),
            context: Context {
                device: pick(rng, &["phone", "desktop"]).map(Into::into),
                os: pick(rng, &["linux"]).map(Into::into),
                country: pick(rng, &["de", "fr"]).map(Into::into),
            },
            features: Vector(vec![]),
            demand: WindowDemand::default(),
            windows_embedding: None,
        })
    }

    /// The rolling sums as they were first written: the profiles held for `window` windows,
    /// exploded into their sums and counted by differential.
    fn from_scratch<'scope>(
        profiles: VecCollection<'scope, u64, (UserWindow, Profile), isize>,
        window: u64,
    ) -> VecCollection<'scope, u64, (String, SegmentSum), isize> {
        profiles
            .filter(|(_, p)| p.authenticated && p.segment.is_some())
            .hold_for(window.max(1))
            .explode(|(_, p)| {
                let segment = p.segment.clone().unwrap_or_default();
                Some((
                    segment,
                    SegmentSum::of_profile(p.embedding.as_slice(), &p.context),
                ))
            })
            .count_total()
    }

    #[test]
    fn equals_differentials_count_of_the_held_sums_at_every_window() {
        for (seed, window, sparse) in [(1, 3, false), (2, 1, true), (3, 60, true), (4, 5, false)] {
            let got: Updates = Arc::default();
            let want: Updates = Arc::default();
            let (g, w) = (got.clone(), want.clone());
            timely::execute(timely::Config::process(2), move |worker| {
                let (g, w) = (g.clone(), w.clone());
                let mut input = worker.dataflow::<u64, _, _>(|scope| {
                    let (input, profiles) = scope.new_collection::<(UserWindow, Profile), isize>();
                    profiles
                        .clone()
                        .segment_profiles(window)
                        .inspect(move |u| g.lock().unwrap().push(u.clone()));
                    from_scratch(profiles, window)
                        .inspect(move |u| w.lock().unwrap().push(u.clone()));
                    input
                });
                if worker.index() == 0 {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                    let mut t = 0;
                    for _ in 0..40 {
                        t += if sparse { rng.random_range(1..20) } else { 1 };
                        input.advance_to(t);
                        for u in 0..rng.random_range(0..8) {
                            let p = profile(&mut rng);
                            let r = if rng.random_bool(0.1) { -1 } else { 1 };
                            input.update(((format!("u{u}").into(), t), p), r);
                        }
                    }
                }
            })
            .unwrap();
            let (mut got, mut want) = (got.lock().unwrap().clone(), want.lock().unwrap().clone());
            consolidate_updates(&mut got);
            consolidate_updates(&mut want);
            assert!(!want.is_empty());
            assert_eq!(got, want, "seed {seed}, window {window}");
        }
    }
}
