//! What both implementations share: vector validation and normalisation, and
//! the stable digest that names a vector space on disk and in Milvus.

use karen_domain::ports::VectorSpace;
use karen_domain::{Error, Result};
use sha2::{Digest, Sha256};

/// The longest vector accepted (Milvus's own limit is 32768).
pub(crate) const MAX_DIMS: u32 = 32_768;
/// The longest model id accepted.
const MAX_MODEL_CHARS: usize = 200;

/// Refuses a space no index could hold.
pub(crate) fn check_space(space: &VectorSpace) -> Result<()> {
    if space.dims == 0 || space.dims > MAX_DIMS {
        return Err(Error::invalid(
            Some("dims"),
            format!(
                "vector length must be between 1 and {MAX_DIMS} (got {})",
                space.dims
            ),
        ));
    }
    let chars = space.model.chars().count();
    if chars == 0 || chars > MAX_MODEL_CHARS || space.model.chars().any(char::is_control) {
        return Err(Error::invalid(
            Some("model"),
            format!(
                "embedding model id must be 1-{MAX_MODEL_CHARS} characters without control characters"
            ),
        ));
    }
    Ok(())
}

/// Checks a vector against its space and scales it to unit length, so that an
/// inner product is the cosine similarity. A zero vector stays zero (it scores
/// 0 against everything) rather than becoming NaN.
pub(crate) fn unit_vector(space: &VectorSpace, vector: &[f32]) -> Result<Vec<f32>> {
    if vector.len() != space.dims as usize {
        return Err(Error::invalid(
            Some("vector"),
            format!(
                "vector has {} dimensions but space '{}' holds vectors of {}",
                vector.len(),
                space.model,
                space.dims
            ),
        ));
    }
    if vector.iter().any(|x| !x.is_finite()) {
        return Err(Error::invalid(
            Some("vector"),
            "vector contains a NaN or infinite component",
        ));
    }
    let norm = vector
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 {
        return Ok(vector.to_vec());
    }
    #[allow(clippy::cast_possible_truncation)]
    Ok(vector
        .iter()
        .map(|x| (f64::from(*x) / norm) as f32)
        .collect())
}

/// The inner product of two vectors of the same length. Eight running sums,
/// so that the compiler can keep them in one SIMD register (a single sum is a
/// chain of dependent additions it may not reorder): exact scoring of many
/// entries runs through here.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for ((sum, x), y) in sums.iter_mut().zip(x).zip(y) {
            *sum += x * y;
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// A stable digest of a space (model and dims): the same on every machine and
/// release, unlike `std`'s hashers, because it names files and collections.
pub(crate) fn space_digest(space: &VectorSpace) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"karen-vector-space\0");
    hasher.update(space.model.as_bytes());
    hasher.update(b"\0");
    hasher.update(space.dims.to_le_bytes());
    hasher
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(model: &str, dims: u32) -> VectorSpace {
        VectorSpace {
            model: model.to_owned(),
            dims,
        }
    }

    #[test]
    fn wrong_length_and_non_finite_vectors_are_refused() {
        let s = space("m", 3);
        assert!(matches!(
            unit_vector(&s, &[1.0, 2.0]),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            unit_vector(&s, &[1.0, f32::NAN, 0.0]),
            Err(Error::Invalid { .. })
        ));
        let v = unit_vector(&s, &[3.0, 0.0, 4.0]).unwrap();
        assert!((dot(&v, &v) - 1.0).abs() < 1e-6);
        let long: Vec<f32> = (0..21).map(|i| i as f32).collect();
        let expected: f32 = long.iter().map(|x| x * x).sum();
        assert!((dot(&long, &long) - expected).abs() < 1e-3);
        assert_eq!(unit_vector(&s, &[0.0; 3]).unwrap(), vec![0.0; 3]);
    }

    #[test]
    fn digest_separates_model_and_dims() {
        assert_ne!(
            space_digest(&space("a", 384)),
            space_digest(&space("a", 385))
        );
        assert_ne!(
            space_digest(&space("a", 384)),
            space_digest(&space("b", 384))
        );
        assert_eq!(
            space_digest(&space("a", 384)),
            space_digest(&space("a", 384))
        );
        assert_eq!(space_digest(&space("a", 384)).len(), 24);
    }
}
