//! Segment profiles: the mean latent profile of each known segment's authenticated users over
//! a rolling window (DESIGN.md step 5), kept as an exact (count, sum) so that inserting or
//! retracting a profile costs O(dims).
//!
//! [`SegmentSum`] is a differential-dataflow difference type: fixed-point integers, so sums and
//! retractions are exact and a segment whose profiles all expired consolidates to nothing.
//!
//! Its operator: [`operator::SegmentProfiles`].

pub mod operator;

use crate::event::Context;
use crate::vector::Vector;
use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use serde::{Deserialize, Serialize};

/// Default rolling window `W` of segment profiles, in windows.
pub const DEFAULT_SEGMENT_WINDOW: u64 = 60;
/// Fixed-point scale of embedding sums (2^20: about 1e-6 resolution, room for 2^43 in sums).
pub const FIXED_POINT_SCALE: f64 = 1_048_576.0;
/// Segments with fewer profiles than this in the rolling window are left out of resonance.
pub const DEFAULT_MIN_SEGMENT_PROFILES: i64 = 1;

/// Which context field a context count is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ContextField {
    /// Device class.
    Device,
    /// Operating system.
    Os,
    /// Country.
    Country,
}

/// All context fields, in order.
pub const CONTEXT_FIELDS: [ContextField; 3] = [
    ContextField::Device,
    ContextField::Os,
    ContextField::Country,
];

/// The position of a field in [`CONTEXT_FIELDS`].
pub fn field_index(field: ContextField) -> usize {
    match field {
        ContextField::Device => 0,
        ContextField::Os => 1,
        ContextField::Country => 2,
    }
}

impl ContextField {
    /// The field's value in a context.
    pub fn of(self, c: &Context) -> Option<&str> {
        match self {
            ContextField::Device => c.device.as_deref(),
            ContextField::Os => c.os.as_deref(),
            ContextField::Country => c.country.as_deref(),
        }
    }
}

/// Exact running sum of profiles of one segment: the number of profiles, the fixed-point sum
/// of their embeddings and counts of their context values.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentSum {
    /// Number of profiles.
    pub profiles: i64,
    /// Fixed-point sum of embeddings ([`FIXED_POINT_SCALE`]).
    pub sum: Vec<i64>,
    /// Counts per (field, value), sorted, without zero entries.
    pub context: Vec<((ContextField, String), i64)>,
}

/// Converts an embedding value to fixed point.
pub fn to_fixed(x: f32) -> i64 {
    (f64::from(x) * FIXED_POINT_SCALE).round() as i64
}

impl SegmentSum {
    /// The sum of a single profile.
    pub fn of_profile(embedding: &[f32], context: &Context) -> Self {
        let mut ctx: Vec<((ContextField, String), i64)> = CONTEXT_FIELDS
            .iter()
            .filter_map(|f| f.of(context).map(|v| ((*f, v.to_string()), 1)))
            .collect();
        ctx.sort();
        SegmentSum {
            profiles: 1,
            sum: embedding.iter().map(|x| to_fixed(*x)).collect(),
            context: ctx,
        }
    }

    /// Adds one profile: exactly what adding its [`of_profile`](Self::of_profile) sum gives
    /// (`plus_equals`), without making that sum first; a context value is copied only when it
    /// is new to this sum (three strings a profile otherwise).
    ///
    /// ```
    /// use differential_dataflow::difference::Semigroup;
    /// use personaflow_operators::segments::SegmentSum;
    /// use personaflow_operators::Context;
    /// let c = Context { device: Some("tv".into()), ..Context::default() };
    /// let (mut a, mut b) = (SegmentSum::default(), SegmentSum::default());
    /// for x in [0.5, -1.25] {
    ///     a.add_profile(&[x, 2.0], &c);
    ///     b.plus_equals(&SegmentSum::of_profile(&[x, 2.0], &c));
    /// }
    /// assert_eq!(a, b);
    /// assert_eq!((a.profiles, a.context.len()), (2, 1));
    /// ```
    pub fn add_profile(&mut self, embedding: &[f32], context: &Context) {
        self.profiles += 1;
        if self.sum.len() < embedding.len() {
            self.sum.resize(embedding.len(), 0);
        }
        for (a, x) in self.sum.iter_mut().zip(embedding) {
            *a += to_fixed(*x);
        }
        if self.sum.iter().all(|s| *s == 0) {
            self.sum.clear();
        }
        for field in CONTEXT_FIELDS {
            let Some(value) = field.of(context) else {
                continue;
            };
            let at = self
                .context
                .binary_search_by(|((f, v), _)| (*f, v.as_str()).cmp(&(field, value)));
            match at {
                Ok(i) if self.context[i].1 == -1 => {
                    self.context.remove(i);
                }
                Ok(i) => self.context[i].1 += 1,
                Err(i) => self.context.insert(i, ((field, value.to_string()), 1)),
            }
        }
    }

    /// The mean embedding (empty when there are no profiles).
    pub fn mean(&self) -> Vec<f32> {
        if self.profiles <= 0 {
            return Vec::new();
        }
        let n = self.profiles as f64 * FIXED_POINT_SCALE;
        self.sum.iter().map(|s| (*s as f64 / n) as f32).collect()
    }

    fn scale(&mut self, by: i64) {
        self.profiles *= by;
        self.sum.iter_mut().for_each(|s| *s *= by);
        self.context.iter_mut().for_each(|(_, c)| *c *= by);
        self.context.retain(|(_, c)| *c != 0);
    }
}

impl IsZero for SegmentSum {
    fn is_zero(&self) -> bool {
        self.profiles == 0 && self.sum.iter().all(|s| *s == 0) && self.context.is_empty()
    }
}

impl Semigroup for SegmentSum {
    fn plus_equals(&mut self, rhs: &Self) {
        self.profiles += rhs.profiles;
        if self.sum.len() < rhs.sum.len() {
            self.sum.resize(rhs.sum.len(), 0);
        }
        for (a, b) in self.sum.iter_mut().zip(&rhs.sum) {
            *a += *b;
        }
        if self.sum.iter().all(|s| *s == 0) {
            self.sum.clear();
        }
        // The context counts merged in place: each of `rhs`'s values found by binary search
        // and its count added, only values new to this sum cloned in (a merge into a fresh
        // list cloned every value, a string each, for every profile added: most of this
        // function's time). Both lists are sorted and hold no zero counts, so this gives the
        // sorted merge with the zeros dropped (tested against it).
        let mut fresh = Vec::new();
        for (key, count) in &rhs.context {
            match self.context.binary_search_by(|(k, _)| k.cmp(key)) {
                Ok(i) => self.context[i].1 += count,
                Err(_) => fresh.push((key.clone(), *count)),
            }
        }
        self.context.retain(|(_, c)| *c != 0);
        if !fresh.is_empty() {
            self.context.extend(fresh);
            self.context.sort_by(|a, b| a.0.cmp(&b.0));
        }
    }
}

impl Monoid for SegmentSum {
    fn zero() -> Self {
        SegmentSum::default()
    }
}

impl Abelian for SegmentSum {
    fn negate(&mut self) {
        self.scale(-1);
    }
}

impl Multiply<isize> for SegmentSum {
    type Output = SegmentSum;
    fn multiply(mut self, rhs: &isize) -> SegmentSum {
        self.scale(*rhs as i64);
        self
    }
}

/// One segment's profile at a point in time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// Segment name, shared with every resonance score of the segment.
    pub name: std::sync::Arc<str>,
    /// Profiles in the rolling window.
    pub profiles: i64,
    /// Mean embedding.
    pub mean: Vector,
    /// Mean embedding minus the table's global mean (what centred resonance compares).
    pub centred_mean: Vector,
    /// Context counts (see [`SegmentSum::context`]).
    pub context: Vec<((ContextField, String), i64)>,
    /// Per field of [`CONTEXT_FIELDS`], the total of this segment's context counts.
    pub context_totals: [i64; 3],
}

impl SegmentEntry {
    /// How many of this segment's profiles had `value` for `field`.
    pub fn context_count(&self, field: ContextField, value: &str) -> i64 {
        self.context
            .binary_search_by(|((f, v), _)| (*f, v.as_str()).cmp(&(field, value)))
            .map(|i| self.context[i].1)
            .unwrap_or(0)
    }
}

/// Every segment's profile at a point in time, sorted by name, with the profile-weighted
/// global mean used to centre embeddings before cosine similarity.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentTable {
    /// Segments, sorted by name.
    pub segments: Vec<SegmentEntry>,
    /// Mean of all profiles of the listed segments.
    pub global_mean: Vector,
    /// Per field of [`CONTEXT_FIELDS`], the number of distinct values over all segments.
    pub context_vocabulary: [usize; 3],
}

impl SegmentTable {
    /// Builds the table from per-segment sums, leaving out segments with fewer than
    /// `min_profiles` profiles.
    ///
    /// ```
    /// use personaflow_operators::Context;
    /// use personaflow_operators::segments::{SegmentSum, SegmentTable};
    /// let a = SegmentSum::of_profile(&[1.0, 0.0], &Context::default());
    /// let b = SegmentSum::of_profile(&[0.0, 1.0], &Context::default());
    /// let t = SegmentTable::from_sums([("a", &a), ("b", &b)], 1);
    /// assert_eq!(t.segments.len(), 2);
    /// assert_eq!(t.global_mean.0, vec![0.5, 0.5]);
    /// ```
    pub fn from_sums<'a>(
        sums: impl IntoIterator<Item = (&'a str, &'a SegmentSum)>,
        min_profiles: i64,
    ) -> Self {
        let mut segments = Vec::new();
        let mut total = SegmentSum::default();
        for (name, sum) in sums {
            if sum.profiles < min_profiles.max(1) {
                continue;
            }
            total.profiles += sum.profiles;
            if total.sum.len() < sum.sum.len() {
                total.sum.resize(sum.sum.len(), 0);
            }
            for (t, s) in total.sum.iter_mut().zip(&sum.sum) {
                *t += *s;
            }
            let mut context_totals = [0i64; 3];
            for ((field, _), count) in &sum.context {
                context_totals[field_index(*field)] += count;
            }
            segments.push(SegmentEntry {
                name: name.into(),
                profiles: sum.profiles,
                mean: Vector(sum.mean()),
                centred_mean: Vector::default(),
                context: sum.context.clone(),
                context_totals,
            });
        }
        segments.sort();
        let global_mean = Vector(total.mean());
        for s in &mut segments {
            s.centred_mean = Vector(
                s.mean
                    .0
                    .iter()
                    .zip(global_mean.0.iter().chain(std::iter::repeat(&0.0)))
                    .map(|(x, m)| x - m)
                    .collect(),
            );
        }
        let mut vocabulary: [Vec<&str>; 3] = Default::default();
        for s in &segments {
            for ((field, value), _) in &s.context {
                vocabulary[field_index(*field)].push(value);
            }
        }
        let context_vocabulary = vocabulary.map(|mut values| {
            values.sort_unstable();
            values.dedup();
            values.len()
        });
        SegmentTable {
            segments,
            global_mean,
            context_vocabulary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(d: &str) -> Context {
        Context {
            device: Some(d.into()),
            os: None,
            country: Some("DE".into()),
        }
    }

    #[test]
    fn insert_then_retract_is_exactly_zero() {
        let a = SegmentSum::of_profile(&[0.1, -2.7, 3.3333], &ctx("tv"));
        let b = SegmentSum::of_profile(&[1e-3, 5.5, -0.25], &ctx("mobile"));
        let mut acc = SegmentSum::zero();
        acc.plus_equals(&a);
        acc.plus_equals(&b);
        let mut neg_a = a.clone();
        neg_a.negate();
        acc.plus_equals(&neg_a);
        assert_eq!(acc, b, "retracting a leaves exactly b");
        let mut neg_b = b.clone();
        neg_b.negate();
        acc.plus_equals(&neg_b);
        assert!(acc.is_zero());
    }

    /// The context counts as `plus_equals` merged them before it merged in place: a sorted
    /// merge into a fresh list, equal values' counts added and zeros dropped.
    fn context_merged_before(
        a: &[((ContextField, String), i64)],
        b: &[((ContextField, String), i64)],
    ) -> Vec<((ContextField, String), i64)> {
        let mut merged = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if j == b.len() || (i < a.len() && a[i].0 < b[j].0) {
                merged.push(a[i].clone());
                i += 1;
            } else if i == a.len() || b[j].0 < a[i].0 {
                merged.push(b[j].clone());
                j += 1;
            } else {
                let c = a[i].1 + b[j].1;
                if c != 0 {
                    merged.push((a[i].0.clone(), c));
                }
                i += 1;
                j += 1;
            }
        }
        merged
    }

    #[test]
    fn context_counts_merge_in_place_as_a_sorted_merge_would() {
        use rand::Rng;
        let mut rng = crate::personas::rng_for(21, 0, 0);
        let values = [
            "tv", "mobile", "desktop", "DE", "FR", "ios", "android", "linux",
        ];
        let value = |rng: &mut rand_chacha::ChaCha8Rng| {
            Some(std::sync::Arc::from(
                values[rng.random_range(0..values.len())],
            ))
        };
        for round in 0..200 {
            // A running sum of profiles that enter and leave, as a segment's does.
            let mut acc = SegmentSum::zero();
            let mut inside: Vec<SegmentSum> = Vec::new();
            for _ in 0..rng.random_range(1..40) {
                let leave = !inside.is_empty() && rng.random_bool(0.4);
                let step = if leave {
                    let mut gone = inside.swap_remove(rng.random_range(0..inside.len()));
                    gone.negate();
                    gone
                } else {
                    let context = Context {
                        device: value(&mut rng),
                        os: value(&mut rng).filter(|_| rng.random_bool(0.7)),
                        country: value(&mut rng),
                    };
                    let times = rng.random_range(1..4i64) as isize;
                    let s =
                        SegmentSum::of_profile(&[rng.random::<f32>()], &context).multiply(&times);
                    inside.push(s.clone());
                    s
                };
                let want = context_merged_before(&acc.context, &step.context);
                acc.plus_equals(&step);
                assert_eq!(acc.context, want, "round {round}");
            }
            for gone in inside {
                acc.plus_equals(&gone.multiply(&-1));
            }
            assert!(acc.is_zero(), "round {round}: every profile left");
        }
    }

    /// `add_profile` gives to the last bit and count what adding the profile's own sum gives,
    /// on seeded profiles (contexts with missing and repeated values, embeddings with zeros
    /// and opposite values that cancel) added to sums that hold negative counts too.
    #[test]
    fn adding_a_profile_is_adding_its_sum() {
        use rand::Rng;
        let mut rng = crate::personas::rng_for(22, 0, 0);
        let values = ["tv", "mobile", "DE", "FR", "ios", ""];
        let value = |rng: &mut rand_chacha::ChaCha8Rng| {
            rng.random_bool(0.8)
                .then(|| std::sync::Arc::from(values[rng.random_range(0..values.len())]))
        };
        for round in 0..300 {
            let (mut a, mut b) = (SegmentSum::zero(), SegmentSum::zero());
            if rng.random_bool(0.3) {
                // A sum with profiles leaving it (negative counts), as a retraction makes.
                let context = Context {
                    device: value(&mut rng),
                    os: value(&mut rng),
                    country: value(&mut rng),
                };
                let gone = SegmentSum::of_profile(&[1.5, 0.0], &context).multiply(&-2);
                a.plus_equals(&gone);
                b.plus_equals(&gone);
            }
            for _ in 0..rng.random_range(1..20) {
                let context = Context {
                    device: value(&mut rng),
                    os: value(&mut rng),
                    country: value(&mut rng),
                };
                let x: f32 = [0.0, 1.5, -1.5, rng.random_range(-4.0..4.0)][rng.random_range(0..4)];
                let embedding =
                    [x, -x, rng.random_range(-1.0..1.0)][..rng.random_range(1..4)].to_vec();
                a.add_profile(&embedding, &context);
                b.plus_equals(&SegmentSum::of_profile(&embedding, &context));
                assert_eq!(a, b, "round {round}");
            }
        }
    }

    #[test]
    fn mean_and_context_counts() {
        let mut acc = SegmentSum::of_profile(&[1.0, 3.0], &ctx("tv"));
        acc.plus_equals(&SegmentSum::of_profile(&[3.0, 5.0], &ctx("tv")));
        assert_eq!(acc.mean(), vec![2.0, 4.0]);
        assert!(acc
            .context
            .contains(&((ContextField::Device, "tv".into()), 2)));
        let twice = SegmentSum::of_profile(&[1.0, 3.0], &ctx("tv")).multiply(&2);
        assert_eq!(twice.profiles, 2);
    }

    #[test]
    fn table_skips_small_segments_and_sorts() {
        let big = SegmentSum::of_profile(&[2.0], &Context::default()).multiply(&3);
        let small = SegmentSum::of_profile(&[4.0], &Context::default());
        let t = SegmentTable::from_sums([("z", &big), ("a", &small)], 2);
        assert_eq!(t.segments.len(), 1);
        assert_eq!(&*t.segments[0].name, "z");
        let t = SegmentTable::from_sums([("z", &big), ("a", &small)], 1);
        assert_eq!(&*t.segments[0].name, "a");
        assert_eq!(t.global_mean.0, vec![2.5]);
    }
}
