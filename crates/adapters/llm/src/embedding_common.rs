//! Checks every embedder applies, so that the port behaves the same whatever
//! implements it: a caller tested against the built-in embedder meets the
//! same refusals in production.

use karen_domain::ports::LlmError;

/// Refuses a model id the embedder does not serve: its vectors would be
/// stored under the wrong model and mixed with another vector space.
pub(crate) fn check_model(requested: &str, served: &str) -> Result<(), LlmError> {
    if requested == served {
        Ok(())
    } else {
        Err(LlmError::Refused(format!(
            "this embedder serves the model '{served}', not '{requested}'"
        )))
    }
}

/// Refuses an empty list of inputs: it is a caller's mistake, and the
/// OpenAI API answers it with a 400 after a round trip.
pub(crate) fn check_inputs(inputs: &[String]) -> Result<(), LlmError> {
    if inputs.is_empty() {
        return Err(LlmError::Refused("there is nothing to embed".into()));
    }
    Ok(())
}

/// Checks that `vectors` holds one non-empty vector of finite numbers per
/// input, all of one length (the length of `dimensions` when it is known
/// already, e.g. from an earlier batch), and returns that length.
pub(crate) fn check_vectors(
    vectors: &[Vec<f32>],
    inputs: usize,
    dimensions: Option<usize>,
) -> Result<usize, LlmError> {
    if vectors.len() != inputs {
        return Err(LlmError::InvalidResponse(format!(
            "{} embeddings for {inputs} inputs",
            vectors.len()
        )));
    }
    let mut expected = dimensions;
    for (index, vector) in vectors.iter().enumerate() {
        if vector.is_empty() {
            return Err(LlmError::InvalidResponse(format!(
                "embedding {index} is empty"
            )));
        }
        match expected {
            Some(length) if length != vector.len() => {
                return Err(LlmError::InvalidResponse(format!(
                    "embedding {index} has {} dimensions where the others have {length}",
                    vector.len()
                )));
            }
            Some(_) => {}
            None => expected = Some(vector.len()),
        }
        if !vector.iter().all(|value| value.is_finite()) {
            return Err(LlmError::InvalidResponse(format!(
                "embedding {index} contains a value that is not a finite number"
            )));
        }
    }
    Ok(expected.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_models_and_empty_inputs_are_refused() {
        assert!(check_model("a", "a").is_ok());
        assert!(
            matches!(check_model("b", "a"), Err(LlmError::Refused(reason)) if reason.contains("'a', not 'b'"))
        );
        assert!(matches!(check_inputs(&[]), Err(LlmError::Refused(_))));
        assert!(check_inputs(&[String::new()]).is_ok());
    }

    #[test]
    fn vectors_must_match_the_inputs_and_each_other() {
        let two = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        assert_eq!(check_vectors(&two, 2, None), Ok(2));
        assert_eq!(check_vectors(&two, 2, Some(2)), Ok(2));
        let invalid = |vectors: &[Vec<f32>], inputs, dimensions| {
            matches!(
                check_vectors(vectors, inputs, dimensions),
                Err(LlmError::InvalidResponse(_))
            )
        };
        assert!(invalid(&two, 3, None), "count differs");
        assert!(invalid(&two, 2, Some(3)), "earlier batch differs");
        assert!(invalid(&[vec![1.0], vec![1.0, 2.0]], 2, None), "ragged");
        assert!(invalid(&[vec![]], 1, None), "empty vector");
        assert!(invalid(&[vec![f32::NAN]], 1, None), "not finite");
    }
}
