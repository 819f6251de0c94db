//! CUDA graph replay vs direct launches: both networks must give bit-identical outputs whether their
//! forward pass is replayed from a captured graph or launched kernel by kernel (the first call for a
//! shape launches directly and captures; the following ones replay), across repeated replays,
//! a new input at the same shape (the graph must read the new input), a shape change and back (recapture),
//! and for StyleViT an alpha change (alpha is baked into the graph).
use models::Tensor;

use super::{catch, compare, random, Check, CheckResult, Rng64, Tolerance};
use crate::gpu::{DeviceTensor, Gpu};
use crate::nets::{GpuStyleVit, GpuTransformerNet};

pub fn checks() -> Vec<Check> {
    vec![Check {
        op: "graph",
        run: graph_checks,
    }]
}

const OP: &str = "graph";
const EXACT: Tolerance = Tolerance {
    rel_l2: 0.0,
    max_rel: 0.0,
};

/// Exact comparison plus the requirement that the graph path really replayed a graph.
fn exact(
    case: &str,
    got: &Tensor,
    want: &Tensor,
    graph_error: Option<&str>,
    nodes: Option<usize>,
) -> CheckResult {
    let mut r = compare(OP, case, &got.data, &want.data, EXACT);
    if got.shape != want.shape {
        r.passed = false;
        r.detail = format!(
            "shape {:?}, direct launches gave {:?}",
            got.shape, want.shape
        );
    } else if let Some(e) = graph_error {
        r.passed = false;
        r.detail = format!("graph capture failed, fell back to direct launches: {e}");
    } else if nodes.is_none_or(|n| n == 0) {
        r.passed = false;
        r.detail = "no graph was captured".into();
    } else if r.passed {
        r.detail = format!("{} graph nodes", nodes.unwrap_or(0));
    }
    r
}

fn graph_checks(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let mut out = transformer_net_graph(gpu, rng);
    out.extend(style_vit_graph(gpu, rng));
    out
}

fn transformer_net_graph(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let net = match super::cnn::random_transformer_net(rng) {
        Ok(n) => n,
        Err(e) => return vec![super::errored(OP, "tnet random weights", e)],
    };
    let nets =
        GpuTransformerNet::new(gpu, &net).and_then(|d| Ok((d, GpuTransformerNet::new(gpu, &net)?)));
    let (mut direct, mut graphed) = match nets {
        Ok(n) => n,
        Err(e) => return vec![super::errored(OP, "tnet upload", e)],
    };
    direct.set_use_graph(false);
    let mut out = Vec::new();
    // The first call at a shape launches directly and captures; then three replays on the same input.
    let x = random(rng, &[1, 3, 40, 36], 0.0, 255.0);
    let want = direct.forward(&x);
    for i in 0..=3 {
        let case = if i == 0 {
            "tnet 1x3x40x36 first (capture)".to_string()
        } else {
            format!("tnet 1x3x40x36 replay #{i}")
        };
        out.push(catch(OP, &case, || {
            let want = want
                .as_ref()
                .map_err(|e| crate::Error::Other(format!("direct launches: {e}")))?;
            let got = graphed.forward(&x)?;
            Ok(exact(
                &case,
                &got,
                want,
                graphed.graph_error(),
                graphed.graph_nodes(),
            ))
        }));
    }
    // A new input given on the device (copied into the graph's input buffer on the stream).
    let case = "tnet 1x3x40x36 device input";
    out.push(catch(OP, case, || {
        let x = random(rng, &[1, 3, 40, 36], 0.0, 255.0);
        let want = direct.forward(&x)?;
        let dx = DeviceTensor::from_host(&x)?;
        let y = graphed.forward_device(&dx)?;
        gpu.synchronize()?;
        let got = y.to_host()?;
        Ok(exact(
            case,
            &got,
            &want,
            graphed.graph_error(),
            graphed.graph_nodes(),
        ))
    }));
    // Shape change (recapture) and back (recapture again, new input).
    let steps = [
        ([1usize, 3, 24, 20], "shape change"),
        ([1, 3, 24, 20], "shape change replay"),
        ([1, 3, 40, 36], "back"),
        ([1, 3, 40, 36], "back replay"),
    ];
    for (shape, label) in &steps {
        let case = format!(
            "tnet {}x{}x{}x{} {label}",
            shape[0], shape[1], shape[2], shape[3]
        );
        out.push(catch(OP, &case, || {
            let x = random(rng, shape, 0.0, 255.0);
            let want = direct.forward(&x)?;
            let got = graphed.forward(&x)?;
            Ok(exact(
                &case,
                &got,
                &want,
                graphed.graph_error(),
                graphed.graph_nodes(),
            ))
        }));
    }
    out
}

fn style_vit_graph(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let net = super::vit::random_style_vit(rng, 1);
    let nets = GpuStyleVit::new(gpu, &net).and_then(|d| Ok((d, GpuStyleVit::new(gpu, &net)?)));
    let (mut direct, mut graphed) = match nets {
        Ok(n) => n,
        Err(e) => return vec![super::errored(OP, "vit upload", e)],
    };
    direct.set_use_graph(false);
    let style = random(rng, &[1, 3, 24, 24], 0.0, 1.0);
    // (content shape, alpha, label): replays, an alpha change, a shape change and back.
    // The first call for given shapes and alpha launches directly and captures; later ones replay.
    let cases: [([usize; 4], f32, &str); 10] = [
        ([1, 3, 32, 48], 1.0, "first (capture)"),
        ([1, 3, 32, 48], 1.0, "replay #1"),
        ([1, 3, 32, 48], 1.0, "replay #2"),
        ([1, 3, 32, 48], 1.0, "replay #3"),
        ([1, 3, 32, 48], 0.6, "alpha change"),
        ([1, 3, 32, 48], 0.6, "alpha change replay"),
        ([1, 3, 16, 24], 0.6, "shape change"),
        ([1, 3, 16, 24], 0.6, "shape change replay"),
        ([1, 3, 32, 48], 0.6, "back"),
        ([1, 3, 32, 48], 0.6, "back replay"),
    ];
    let first = random(rng, &[1, 3, 32, 48], 0.0, 1.0);
    let mut out = Vec::new();
    for (i, (shape, alpha, label)) in cases.iter().enumerate() {
        let case = format!(
            "vit {}x{}x{}x{} a{alpha} {label}",
            shape[0], shape[1], shape[2], shape[3]
        );
        out.push(catch(OP, &case, || {
            // The replays reuse one input; later cases bring new ones.
            let content = if i < 4 {
                first.clone()
            } else {
                random(rng, shape, 0.0, 1.0)
            };
            let want = direct.forward(&content, &style, *alpha)?;
            let got = graphed.forward(&content, &style, *alpha)?;
            Ok(exact(
                &case,
                &got,
                &want,
                graphed.graph_error(),
                graphed.graph_nodes(),
            ))
        }));
    }
    out
}
