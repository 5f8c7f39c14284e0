//! Small dense vectors with a total order (so they can be differential data) and the
//! embedding math used by segment profiles and resonance.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// A dense `f32` vector that is `Eq + Ord + Hash` by bit pattern (`f32::total_cmp`), so it
/// can travel through differential-dataflow collections.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Vector(pub Vec<f32>);

impl Vector {
    /// The vector's values.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// Number of dimensions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for a zero-dimensional vector.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<f32>> for Vector {
    fn from(v: Vec<f32>) -> Self {
        Vector(v)
    }
}

impl PartialEq for Vector {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Vector {}

impl PartialOrd for Vector {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Vector {
    fn cmp(&self, other: &Self) -> Ordering {
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            match a.total_cmp(b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}

impl Hash for Vector {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.len().hash(state);
        for x in &self.0 {
            x.to_bits().hash(state);
        }
    }
}

/// An `f32` score with a total order (for differential data).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Score(pub f32);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl Hash for Score {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

/// Dot product over the common prefix of two slices.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Euclidean norm.
pub fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

/// Cosine similarity; 0 when either vector has (near) zero norm.
///
/// ```
/// use personaflow_operators::vector::cosine;
/// assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-6);
/// assert_eq!(cosine(&[1.0, 0.0], &[0.0, 0.0]), 0.0);
/// ```
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (na, nb) = (norm(a), norm(b));
    if na <= f32::EPSILON || nb <= f32::EPSILON {
        0.0
    } else {
        (dot(a, b) / (na * nb)).clamp(-1.0, 1.0)
    }
}

/// Softmax of `scores / temperature`, numerically stable (max subtracted).
///
/// ```
/// use personaflow_operators::vector::softmax;
/// let p = softmax(&[1.0, 0.0], 1.0);
/// assert!((p[0] + p[1] - 1.0).abs() < 1e-6 && p[0] > p[1]);
/// ```
pub fn softmax(scores: &[f32], temperature: f32) -> Vec<f32> {
    if scores.is_empty() {
        return Vec::new();
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scores
        .iter()
        .map(|s| ((s - max) / temperature).exp())
        .collect();
    let total: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_order_is_total_and_consistent_with_eq() {
        let a = Vector(vec![1.0, f32::NAN]);
        let b = Vector(vec![1.0, f32::NAN]);
        assert_eq!(a, b);
        assert!(Vector(vec![1.0]) < Vector(vec![1.0, 0.0]));
        assert!(Vector(vec![-0.0]) < Vector(vec![0.0]));
    }

    #[test]
    fn cosine_of_opposites_is_minus_one() {
        assert!((cosine(&[1.0, 2.0], &[-1.0, -2.0]) + 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-6);
    }

    #[test]
    fn softmax_temperature_sharpens() {
        let warm = softmax(&[0.5, 0.4], 1.0);
        let cold = softmax(&[0.5, 0.4], 0.01);
        assert!(cold[0] > warm[0]);
        assert!((cold.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
