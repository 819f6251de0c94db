//! Tests against ../shared/fixtures (NOT RUN when ../shared is absent): the CPU reference networks
//! against PyTorch's outputs, each within 1e-4 relative L2.
use std::process::ExitCode;

use models::tensor::rel_l2;
use models::{StyleVit, StyleVitConfig, Tensor, TransformerNet, Weights};
use styleforge_tests::{check, try_outcome, Case, Outcome};

const TOL: f64 = 1e-4;

fn load(rel: &str) -> Result<Weights, Outcome> {
    let path = styleforge_tests::shared_file(rel)?;
    Weights::load(&path).map_err(|e| Outcome::Fail(format!("loading {rel}: {e}")))
}

fn tensor(w: &Weights, key: &str) -> Result<Tensor, Outcome> {
    w.tensors
        .get(key)
        .cloned()
        .ok_or_else(|| Outcome::Fail(format!("{}: no tensor `{key}`", w.path.display())))
}

/// Compares `out` with `want` (shape and relative L2).
fn compare(what: &str, out: &Tensor, want: &Tensor) -> Outcome {
    if out.shape != want.shape {
        return Outcome::Fail(format!(
            "{what}: output shape {:?}, PyTorch's {:?}",
            out.shape, want.shape
        ));
    }
    let e = rel_l2(&out.data, &want.data);
    if e.is_finite() && e <= TOL {
        Outcome::Pass(format!("{what}: rel L2 {e:.2e}"))
    } else {
        Outcome::Fail(format!("{what}: rel L2 {e:.3e} > {TOL:e}"))
    }
}

fn tnet(input: &str, output: &str) -> Outcome {
    let net = check!(
        TransformerNet::new(try_outcome!(load("fixtures/tnet_a.safetensors"))),
        "TransformerNet::new"
    );
    let io = try_outcome!(load("fixtures/tnet_a_io.safetensors"));
    let x = try_outcome!(tensor(&io, input));
    let want = try_outcome!(tensor(&io, output));
    let (h, w) = TransformerNet::output_size(x.shape[2], x.shape[3]);
    if [h, w] != want.shape[2..] {
        return Outcome::Fail(format!(
            "output_size({}, {}) = ({h}, {w}), PyTorch gives {:?}",
            x.shape[2],
            x.shape[3],
            &want.shape[2..]
        ));
    }
    let out = check!(net.forward(&x), "TransformerNet::forward");
    compare(&format!("{input} -> {output}"), &out, &want)
}

fn tnet_256() -> Outcome {
    tnet("input_256", "output_256")
}

fn tnet_odd() -> Outcome {
    tnet("input_odd", "output_odd")
}

fn vit(content: &str, alpha: f32, output: &str) -> Outcome {
    let w = try_outcome!(load("fixtures/vit_nano.safetensors"));
    let cfg = check!(
        StyleVitConfig::from_weights(&w, None),
        "StyleVitConfig::from_weights"
    );
    if Some(cfg) != StyleVitConfig::variant("nano") {
        return Outcome::Fail(format!(
            "configuration from metadata {cfg:?} is not the nano variant"
        ));
    }
    let net = check!(StyleVit::new(cfg, w), "StyleVit::new");
    let io = try_outcome!(load("fixtures/vit_nano_io.safetensors"));
    let c = try_outcome!(tensor(&io, content));
    let s = try_outcome!(tensor(&io, "style"));
    let want = try_outcome!(tensor(&io, output));
    let out = check!(net.forward(&c, &s, alpha), "StyleVit::forward");
    compare(
        &format!("({content}, style, alpha {alpha}) -> {output}"),
        &out,
        &want,
    )
}

fn vit_square() -> Outcome {
    vit("content", 1.0, "output")
}

fn vit_wide() -> Outcome {
    vit("content_wide", 1.0, "output_wide")
}

fn vit_alpha_half() -> Outcome {
    vit("content", 0.5, "output_alpha_0.5")
}

fn main() -> ExitCode {
    styleforge_tests::run(
        "fixtures_cpu",
        &[
            Case {
                name: "transformer_net_256",
                run: tnet_256,
            },
            Case {
                name: "transformer_net_odd_250x190",
                run: tnet_odd,
            },
            Case {
                name: "style_vit_square",
                run: vit_square,
            },
            Case {
                name: "style_vit_wide_128x192",
                run: vit_wide,
            },
            Case {
                name: "style_vit_alpha_0_5",
                run: vit_alpha_half,
            },
        ],
    )
}
