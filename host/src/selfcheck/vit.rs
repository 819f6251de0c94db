//! Self-checks of the StyleViT kernels (linear, layer_norm, attention, adain, patch embedding, ...).
use super::Check;

pub fn checks() -> Vec<Check> {
    vec![]
}
