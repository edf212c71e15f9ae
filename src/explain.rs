//! The built-in, model-agnostic explainer behind `:explain`.
//!
//! Occlusion: for each instance and each input feature (or patch of features),
//! the feature is replaced by a baseline and the change in the model's float
//! outputs (L1 distance) is its importance; scores are normalised to sum to 1.
//! All perturbed copies go to the model in one batched call, so explaining B
//! instances of F features costs one extra run of B x min(F, K) rows.

use crate::error::ServingError;
use crate::memory::RequestBudget;
use crate::model::{Servable, Signature, TensorMap};
use crate::serving::{PredictCall, ServingCore};
use crate::tensor::{DataType, Tensor, TensorData};

/// Settings of the built-in explainer.
#[derive(Clone, Copy, Debug)]
pub struct ExplainOptions {
    /// Value a feature is replaced with.
    pub baseline: f64,
    /// At most this many features (or patches) per instance; larger inputs are grouped.
    pub max_features: usize,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        crate::config::ServerConfig::default().serve.rest.explain
    }
}

/// Contiguous groups of the flattened features: `groups` ranges over `0..features`.
fn groups(features: usize, max: usize) -> Vec<std::ops::Range<usize>> {
    let size = features.div_ceil(max.max(1)).max(1);
    (0..features).step_by(size).map(|s| s..(s + size).min(features)).collect()
}

/// One copy of each instance per group, with that group's features set to `baseline`.
fn perturb<T: Copy>(src: &[T], features: usize, groups: &[std::ops::Range<usize>], baseline: T) -> Vec<T> {
    let mut out = Vec::with_capacity(src.len() * groups.len());
    for instance in src.chunks_exact(features.max(1)) {
        for range in groups {
            let start = out.len();
            out.extend_from_slice(instance);
            out[start + range.start..start + range.end].fill(baseline);
        }
    }
    out
}

/// Float values of a tensor as f64, for distances.
fn float_values(t: &Tensor) -> Option<Vec<f64>> {
    match t.data() {
        TensorData::Float(b) => Some(b.as_slice().iter().map(|v| *v as f64).collect()),
        TensorData::Double(b) => Some(b.as_slice().to_vec()),
        _ => None,
    }
}

/// Importance scores per instance for `inputs`, given the model's outputs on them; the
/// perturbed copies and the model's outputs on them are charged to `budget` first.
#[allow(clippy::too_many_arguments)]
pub async fn explain(
    core: &ServingCore,
    servable: &Servable,
    signature_name: &str,
    signature: &Signature,
    inputs: &TensorMap,
    original: &TensorMap,
    options: ExplainOptions,
    budget: &RequestBudget,
) -> Result<Vec<Vec<f64>>, ServingError> {
    let unsupported = |why: &str| {
        ServingError::invalid_argument(format!("the built-in explainer cannot explain this signature: {why}"))
    };
    if inputs.len() != 1 {
        return Err(unsupported("it needs exactly one input"));
    }
    let (alias, input) = inputs.iter().next().expect("one input");
    if !matches!(input.dtype(), DataType::Float | DataType::Double) {
        return Err(unsupported("the input must be float or double"));
    }
    let Some((&batch, feature_dims)) = input.shape().split_first() else {
        return Err(unsupported("the input needs a batch dimension"));
    };
    let features: usize = feature_dims.iter().product();
    let groups = groups(features, options.max_features);
    let g = groups.len();

    // B x G perturbed copies, each with one group set to the baseline.
    let rows = batch * g;
    let element = input.dtype().size().unwrap_or(8);
    let copies = rows.checked_mul(features).and_then(|n| n.checked_mul(element)).unwrap_or(usize::MAX);
    budget.charge(copies, || {
        format!("explaining {batch} instances of {features} features ({g} perturbed copies each)")
    })?;
    let mut shape = vec![rows];
    shape.extend_from_slice(feature_dims);
    let perturbed = match input.data() {
        TensorData::Float(b) => {
            Tensor::from_vec(shape, perturb(b.as_slice(), features, &groups, options.baseline as f32))
        }
        TensorData::Double(b) => Tensor::from_vec(shape, perturb(b.as_slice(), features, &groups, options.baseline)),
        _ => unreachable!("checked above"),
    }
    .map_err(|e| ServingError::internal(e.to_string()))?;

    let outputs: Vec<String> = signature
        .outputs
        .iter()
        .filter(|(_, spec)| matches!(spec.dtype, DataType::Float | DataType::Double))
        .map(|(k, _)| k.clone())
        .collect();
    if outputs.is_empty() {
        return Err(unsupported("it has no float outputs to compare"));
    }
    let call = PredictCall {
        servable,
        signature_name,
        signature,
        inputs: TensorMap::from([(alias.clone(), perturbed)]),
        outputs: outputs.clone(),
        deadline: None,
        origin: crate::core::Origin { api: "explain", front_end: "rest" },
    };
    let changed = core.predict(call, budget).await?;

    let mut scores = vec![vec![0.0; g]; batch];
    for name in &outputs {
        let (Some(before), Some(after)) =
            (original.get(name).and_then(float_values), changed.get(name).and_then(float_values))
        else {
            continue;
        };
        if before.len() % batch.max(1) != 0 || after.len() != before.len() / batch.max(1) * rows {
            return Err(unsupported("its outputs are not batched along the input's first dimension"));
        }
        let per_row = before.len() / batch.max(1);
        for i in 0..batch {
            let base = &before[i * per_row..(i + 1) * per_row];
            for (k, score) in scores[i].iter_mut().enumerate() {
                let row = &after[(i * g + k) * per_row..(i * g + k + 1) * per_row];
                *score += base.iter().zip(row).map(|(a, b)| (a - b).abs()).sum::<f64>();
            }
        }
    }
    for row in &mut scores {
        let total: f64 = row.iter().sum();
        if total > 0.0 && total.is_finite() {
            row.iter_mut().for_each(|s| *s /= total);
        }
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::groups;

    #[test]
    fn features_are_grouped_into_at_most_k_patches() {
        assert_eq!(groups(4, 64).len(), 4);
        let g = groups(150_528, 64);
        assert!(g.len() <= 64);
        assert_eq!(g.first().unwrap().start, 0);
        assert_eq!(g.last().unwrap().end, 150_528);
        assert!(g.windows(2).all(|w| w[0].end == w[1].start));
    }
}
