//! `segment_profiles`: rolling (count, sum) of authenticated users' profiles per segment
//! (DESIGN.md step 5).

use crate::ops::{Hold, Profile, UserWindow};
use crate::segments::SegmentSum;
use differential_dataflow::operators::count::CountTotal;
use differential_dataflow::VecCollection;

/// Maintains segment profiles.
pub trait SegmentProfiles<'scope> {
    /// The current [`SegmentSum`] of every segment: each authenticated user's profile with a
    /// known segment is added at its window `w` and retracted at `w + window`. The sums are the
    /// difference type of the collection, so a profile costs O(dims) and the output changes
    /// only for segments whose sum changed.
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
        self.filter(|(_, p)| p.authenticated && p.segment.is_some())
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
}
