//! `resonance`: each active user's probability distribution over segments (DESIGN.md step 6).

use crate::features::Fnv;
use crate::ops::{Hold, Profile, UserWindow};
use crate::resonance::{resonance, Resonance, ResonanceConfig};
use crate::segments::{SegmentSum, SegmentTable};
use differential_dataflow::VecCollection;

/// Default number of buckets users are spread over for the profile × segment-table join, so
/// the join is shared by all workers instead of landing on one.
pub const DEFAULT_RESONANCE_BUCKETS: u64 = 32;

/// Computes resonance.
pub trait Resonate<'scope> {
    /// For each profile fact at window `w`, the user's [`Resonance`] against the segment
    /// profiles as they are at `w`, present during `w` only. Work per window is proportional to
    /// the users active in it times the number of segments.
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
    ///         .resonance(segments, ResonanceConfig::default(), 4)
    ///         .inspect(|(((_, w), r), t, d)| assert!(*w == 0 && r.top_segment() == "video" && (*t == 0 && *d == 1 || *t == 1 && *d == -1)));
    /// });
    /// ```
    fn resonance(
        self,
        segments: VecCollection<'scope, u64, (String, SegmentSum), isize>,
        config: ResonanceConfig,
        buckets: u64,
    ) -> VecCollection<'scope, u64, (UserWindow, Resonance), isize>;
}

impl<'scope> Resonate<'scope> for VecCollection<'scope, u64, (UserWindow, Profile), isize> {
    fn resonance(
        self,
        segments: VecCollection<'scope, u64, (String, SegmentSum), isize>,
        config: ResonanceConfig,
        buckets: u64,
    ) -> VecCollection<'scope, u64, (UserWindow, Resonance), isize> {
        let buckets = buckets.max(1);
        let min_profiles = config.min_segment_profiles;
        let table = segments
            .map(|(name, sum)| ((), (name, sum)))
            .reduce_named("SegmentTable", move |_unit, values, output| {
                let sums = values
                    .iter()
                    .filter(|(_, r)| *r > 0)
                    .map(|((name, sum), _)| (name.as_str(), sum));
                output.push((SegmentTable::from_sums(sums, min_profiles), 1isize));
            })
            .flat_map(move |((), table)| (0..buckets).map(move |b| (b, table.clone())));
        self.hold_for(1)
            .map(move |(key, profile)| (Fnv::hash_str(&key.0) % buckets, (key, profile)))
            .join_map(table, move |_bucket, (key, profile), table| {
                let r = resonance(
                    key.1,
                    profile.embedding.as_slice(),
                    profile.history_windows,
                    &profile.context,
                    table,
                    &config,
                );
                (key.clone(), r)
            })
            .flat_map(|(key, r)| r.map(|r| (key, r)))
    }
}
