//! The rules of the OpenAI-compatible embeddings API: how much one request
//! may ask for, and which models' vectors may be shortened.

use crate::Error;
use crate::chat::estimate_tokens;

/// The most inputs one request may embed (OpenAI's limit too).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

/// The most tokens (estimated locally) one input may have (OpenAI's
/// embedding models read at most 8192).
pub const MAX_EMBEDDING_INPUT_TOKENS: u32 = 8192;

/// Checks the inputs of a request: 1 to [`MAX_EMBEDDING_INPUTS`] of them,
/// none empty, none over [`MAX_EMBEDDING_INPUT_TOKENS`]. The error names the
/// input at fault (`input`, or `input[i]`).
pub fn check_inputs(inputs: &[String]) -> Result<(), Error> {
    if inputs.is_empty() {
        return Err(Error::invalid(
            Some("input"),
            "input must hold at least one text",
        ));
    }
    if inputs.len() > MAX_EMBEDDING_INPUTS {
        return Err(Error::invalid(
            Some("input"),
            format!(
                "input holds {} texts; at most {MAX_EMBEDDING_INPUTS} may be embedded in one request",
                inputs.len()
            ),
        ));
    }
    for (index, input) in inputs.iter().enumerate() {
        let field = format!("input[{index}]");
        if input.trim().is_empty() {
            return Err(Error::invalid(
                Some(&field),
                "an input is empty; there is nothing to embed in it",
            ));
        }
        let tokens = estimate_tokens(input);
        if tokens > MAX_EMBEDDING_INPUT_TOKENS {
            return Err(Error::invalid(
                Some(&field),
                format!(
                    "an input may have at most {MAX_EMBEDDING_INPUT_TOKENS} tokens; this one has about {tokens}"
                ),
            ));
        }
    }
    Ok(())
}

/// Whether the vectors of `model` may be shortened by truncation: OpenAI's
/// `text-embedding-3-*` models are trained so that a prefix of a vector,
/// renormalised, is a good embedding of its own (what their `dimensions`
/// parameter does). For other models a prefix is a worse vector, so Karen
/// refuses to cut it.
pub fn supports_shortening(model: &str) -> bool {
    model.starts_with("text-embedding-3-")
}

/// `vectors` at `dimensions` for `model`: unchanged when `dimensions` is
/// absent or their length; truncated and renormalised (unit length) when the
/// model supports shortening; otherwise `validation_failed` on `dimensions`.
pub fn fit_dimensions(
    model: &str,
    vectors: Vec<Vec<f32>>,
    dimensions: Option<u32>,
) -> Result<Vec<Vec<f32>>, Error> {
    let Some(wanted) = dimensions else {
        return Ok(vectors);
    };
    let native = vectors.first().map_or(0, Vec::len);
    let wanted = usize::try_from(wanted).unwrap_or(usize::MAX);
    if wanted == native {
        return Ok(vectors);
    }
    if !supports_shortening(model) {
        return Err(Error::invalid(
            Some("dimensions"),
            format!(
                "the model '{model}' gives {native}-dimensional vectors and cannot shorten them; omit dimensions or send {native}"
            ),
        ));
    }
    if wanted == 0 || wanted > native {
        return Err(Error::invalid(
            Some("dimensions"),
            format!("dimensions must be between 1 and {native} for the model '{model}'"),
        ));
    }
    Ok(vectors
        .into_iter()
        .map(|vector| shorten(&vector, wanted))
        .collect())
}

/// The first `length` values of `vector`, scaled back to unit length (a zero
/// prefix stays zero).
pub fn shorten(vector: &[f32], length: usize) -> Vec<f32> {
    let prefix = &vector[..length.min(vector.len())];
    let norm = prefix.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        prefix.iter().map(|x| x / norm).collect()
    } else {
        prefix.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_bounded() {
        assert!(check_inputs(&["hello".into()]).is_ok());
        let field = |inputs: &[String]| match check_inputs(inputs) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(&[]).as_deref(), Some("input"));
        let many = vec!["a".to_owned(); MAX_EMBEDDING_INPUTS + 1];
        assert_eq!(field(&many).as_deref(), Some("input"));
        assert_eq!(
            field(&["a".into(), " ".into()]).as_deref(),
            Some("input[1]")
        );
        let long = "word ".repeat(9000);
        assert_eq!(field(&["a".into(), long]).as_deref(), Some("input[1]"));
    }

    #[test]
    fn only_shortenable_models_are_cut_and_renormalised() {
        let vectors = vec![vec![0.6, 0.0, 0.8, 0.0], vec![0.0, 0.0, 0.0, 1.0]];
        let cut = fit_dimensions("text-embedding-3-small", vectors.clone(), Some(2)).unwrap();
        assert_eq!(cut, vec![vec![1.0, 0.0], vec![0.0, 0.0]]);
        assert_eq!(
            fit_dimensions("karen-offline-hash-384", vectors.clone(), Some(4)).unwrap(),
            vectors
        );
        assert!(fit_dimensions("karen-offline-hash-384", vectors.clone(), Some(2)).is_err());
        assert!(fit_dimensions("text-embedding-3-small", vectors.clone(), Some(5)).is_err());
        assert!(fit_dimensions("text-embedding-3-small", vectors, Some(0)).is_err());
    }
}
