//! CPU reference ops: small cases worked by hand, and properties checked against straightforward
//! definitions written out here.
use approx::assert_abs_diff_eq;
use models::ops::{self, Padding};
use models::{Error, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn t(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::new(shape, data.to_vec())
}

fn random(rng: &mut StdRng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape, (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
}

fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "element {i}: {x} vs {y}"
        );
    }
}

fn assert_shape_err<T: std::fmt::Debug>(r: models::Result<T>, op: &str) {
    match r {
        Err(Error::Shape2 { op: o, .. }) => assert_eq!(o, op),
        other => panic!("expected a Shape2 error from {op}, got {other:?}"),
    }
}

/// Convolution straight from the definition (nearest upsampling, padding, cross-correlation), in f64.
fn naive_conv(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: Padding,
    up: usize,
) -> Tensor {
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (k, r, s) = (w.shape[0], w.shape[2], w.shape[3]);
    let (hu, wu) = ((h * up) as isize, (wd * up) as isize);
    let p = match pad {
        Padding::Reflect(p) | Padding::Zero(p) => p as isize,
    };
    let oh = ((hu + 2 * p - r as isize) / stride as isize + 1) as usize;
    let ow = ((wu + 2 * p - s as isize) / stride as isize + 1) as usize;
    let fetch = |ni: usize, ci: usize, i: isize, j: isize| -> f64 {
        let (mut i, mut j) = (i, j);
        match pad {
            Padding::Zero(_) => {
                if i < 0 || j < 0 || i >= hu || j >= wu {
                    return 0.0;
                }
            }
            Padding::Reflect(_) => {
                i = if i < 0 {
                    -i
                } else if i >= hu {
                    2 * (hu - 1) - i
                } else {
                    i
                };
                j = if j < 0 {
                    -j
                } else if j >= wu {
                    2 * (wu - 1) - j
                } else {
                    j
                };
            }
        }
        let (si, sj) = (i as usize / up, j as usize / up);
        x.data[((ni * c + ci) * h + si) * wd + sj] as f64
    };
    let mut out = Tensor::zeros(&[n, k, oh, ow]);
    for ni in 0..n {
        for ki in 0..k {
            for oi in 0..oh {
                for oj in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b.data[ki] as f64);
                    for ci in 0..c {
                        for ri in 0..r {
                            for sj in 0..s {
                                let i = (oi * stride + ri) as isize - p;
                                let j = (oj * stride + sj) as isize - p;
                                acc += w.data[((ki * c + ci) * r + ri) * s + sj] as f64
                                    * fetch(ni, ci, i, j);
                            }
                        }
                    }
                    out.data[((ni * k + ki) * oh + oi) * ow + oj] = acc as f32;
                }
            }
        }
    }
    out
}

// ------------------------------------------------------------------ conv2d

#[test]
fn conv_reflect_3x3_by_hand() {
    // Input 1..9, reflection pad 1:
    //   5 4 5 6 5 / 2 1 2 3 2 / 5 4 5 6 5 / 8 7 8 9 8 / 5 4 5 6 5; a ones kernel sums each 3x3 window.
    let x = t(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    let ones = t(&[1, 1, 3, 3], &[1.0; 9]);
    let y = ops::conv2d(&x, &ones, Some(&t(&[1], &[1.0])), 1, Padding::Reflect(1), 1).unwrap();
    assert_eq!(y.shape, [1, 1, 3, 3]);
    assert_eq!(y.data, [34., 37., 40., 43., 46., 49., 52., 55., 58.]);
    // A kernel with only its top-left tap set reads the padded image directly (cross-correlation, no flip).
    let mut tl = vec![0.0; 9];
    tl[0] = 1.0;
    let y = ops::conv2d(&x, &t(&[1, 1, 3, 3], &tl), None, 1, Padding::Reflect(1), 1).unwrap();
    assert_eq!(y.data, [5., 4., 5., 2., 1., 2., 5., 4., 5.]);
    // Its bottom-right tap reads the window's last element.
    let mut br = vec![0.0; 9];
    br[8] = 1.0;
    let y = ops::conv2d(&x, &t(&[1, 1, 3, 3], &br), None, 1, Padding::Reflect(1), 1).unwrap();
    assert_eq!(y.data, [5., 6., 5., 8., 9., 8., 5., 6., 5.]);
}

#[test]
fn conv_stride2_zero_pad_by_hand() {
    // Input 0..15 as 4x4, zero pad 1, stride 2: windows centred on (0,0), (0,2), (2,0), (2,2).
    let x = Tensor::new(&[1, 1, 4, 4], (0..16).map(|v| v as f32).collect());
    let y = ops::conv2d(
        &x,
        &t(&[1, 1, 3, 3], &[1.0; 9]),
        None,
        2,
        Padding::Zero(1),
        1,
    )
    .unwrap();
    assert_eq!(y.shape, [1, 1, 2, 2]);
    assert_eq!(y.data, [10., 24., 51., 90.]);
}

#[test]
fn conv_upsample_pads_in_upsampled_coordinates() {
    // [1 2; 3 4] upsampled x2 is 1 1 2 2 / 1 1 2 2 / 3 3 4 4 / 3 3 4 4; reflecting that by 1 puts its row 1
    // (1 1 2 2) above row 0, not the source's row 1 (3 3 4 4).
    let x = t(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
    let mut tl = vec![0.0; 9];
    tl[0] = 1.0;
    let y = ops::conv2d(&x, &t(&[1, 1, 3, 3], &tl), None, 1, Padding::Reflect(1), 2).unwrap();
    assert_eq!(y.shape, [1, 1, 4, 4]);
    assert_eq!(
        y.data,
        [1., 1., 1., 2., 1., 1., 1., 2., 1., 1., 1., 2., 3., 3., 3., 4.]
    );
}

/// (n, c, h, w, k, r, stride, pad, upsample)
type ConvCase = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    Padding,
    usize,
);

#[test]
fn conv_matches_definition_on_random_cases() {
    let mut rng = StdRng::seed_from_u64(7);
    // (n, c, h, w, k, r, stride, pad, upsample): odd sizes, strides 1-3, both paddings, many channels
    // (more than one output-channel block, and a ragged last block), large enough to use threads.
    let cases: &[ConvCase] = &[
        (1, 1, 3, 3, 1, 3, 1, Padding::Reflect(1), 1),
        (2, 3, 7, 5, 6, 3, 1, Padding::Reflect(1), 1),
        (1, 3, 9, 11, 5, 3, 2, Padding::Reflect(1), 1),
        (1, 2, 10, 9, 3, 3, 3, Padding::Zero(1), 1),
        (1, 3, 12, 10, 4, 9, 1, Padding::Reflect(4), 1),
        (2, 4, 5, 3, 7, 3, 1, Padding::Reflect(1), 2),
        (1, 2, 6, 6, 3, 1, 1, Padding::Zero(0), 1),
        (1, 3, 8, 8, 2, 4, 4, Padding::Zero(0), 1),
        (1, 16, 33, 31, 9, 3, 1, Padding::Reflect(1), 1),
        (1, 8, 20, 18, 5, 3, 2, Padding::Reflect(1), 2),
        // Over the threading threshold: bands of output rows on several threads.
        (2, 16, 40, 37, 13, 3, 1, Padding::Reflect(1), 1),
        (1, 16, 21, 19, 12, 3, 1, Padding::Reflect(1), 2),
    ];
    for &(n, c, h, w, k, r, stride, pad, up) in cases {
        let x = random(&mut rng, &[n, c, h, w]);
        let wt = random(&mut rng, &[k, c, r, r]);
        let b = random(&mut rng, &[k]);
        let got = ops::conv2d(&x, &wt, Some(&b), stride, pad, up).unwrap();
        let want = naive_conv(&x, &wt, Some(&b), stride, pad, up);
        assert_eq!(
            got.shape,
            want.shape,
            "case {:?}",
            (n, c, h, w, k, r, stride, pad, up)
        );
        assert_close(&got.data, &want.data, 1e-5);
    }
}

#[test]
fn conv_with_upsample_equals_conv_of_upsampled() {
    let mut rng = StdRng::seed_from_u64(3);
    let x = random(&mut rng, &[2, 3, 5, 4]);
    let w = random(&mut rng, &[4, 3, 3, 3]);
    let a = ops::conv2d(&x, &w, None, 1, Padding::Reflect(1), 2).unwrap();
    let b = ops::conv2d(
        &ops::upsample_nearest(&x, 2).unwrap(),
        &w,
        None,
        1,
        Padding::Reflect(1),
        1,
    )
    .unwrap();
    assert_eq!(a.shape, b.shape);
    assert_close(&a.data, &b.data, 1e-6);
}

#[test]
fn conv_is_linear() {
    let mut rng = StdRng::seed_from_u64(11);
    let x1 = random(&mut rng, &[1, 4, 9, 7]);
    let x2 = random(&mut rng, &[1, 4, 9, 7]);
    let w = random(&mut rng, &[5, 4, 3, 3]);
    let (a, b) = (0.7f32, -1.3f32);
    let mix = Tensor::new(
        &x1.shape,
        x1.data
            .iter()
            .zip(&x2.data)
            .map(|(p, q)| a * p + b * q)
            .collect(),
    );
    let y = ops::conv2d(&mix, &w, None, 2, Padding::Reflect(1), 1).unwrap();
    let y1 = ops::conv2d(&x1, &w, None, 2, Padding::Reflect(1), 1).unwrap();
    let y2 = ops::conv2d(&x2, &w, None, 2, Padding::Reflect(1), 1).unwrap();
    let lin: Vec<f32> = y1
        .data
        .iter()
        .zip(&y2.data)
        .map(|(p, q)| a * p + b * q)
        .collect();
    assert_close(&y.data, &lin, 1e-5);
}

#[test]
fn conv_stride2_output_size_follows_pytorch() {
    // (H + 2 pad - R) / stride + 1 with pad 1, R 3: 250 -> 125 -> 63, 190 -> 95 -> 48, 256 -> 128.
    let w = Tensor::zeros(&[1, 1, 3, 3]);
    for (h, w_, oh, ow) in [
        (250, 190, 125, 95),
        (125, 95, 63, 48),
        (256, 256, 128, 128),
        (5, 4, 3, 2),
    ] {
        let y = ops::conv2d(
            &Tensor::zeros(&[1, 1, h, w_]),
            &w,
            None,
            2,
            Padding::Reflect(1),
            1,
        )
        .unwrap();
        assert_eq!(y.shape, [1, 1, oh, ow], "input {h}x{w_}");
    }
    assert_eq!(models::TransformerNet::output_size(250, 190), (252, 192));
    assert_eq!(models::TransformerNet::output_size(256, 256), (256, 256));
    assert_eq!(models::TransformerNet::output_size(7, 9), (8, 12));
}

#[test]
fn conv_rejects_bad_shapes() {
    let x = Tensor::zeros(&[1, 3, 8, 8]);
    assert_shape_err(
        ops::conv2d(
            &x,
            &Tensor::zeros(&[4, 2, 3, 3]),
            None,
            1,
            Padding::Zero(1),
            1,
        ),
        "conv2d",
    );
    assert_shape_err(
        ops::conv2d(
            &x,
            &Tensor::zeros(&[4, 3, 3, 3]),
            Some(&Tensor::zeros(&[3])),
            1,
            Padding::Zero(1),
            1,
        ),
        "conv2d",
    );
    assert_shape_err(
        ops::conv2d(
            &Tensor::zeros(&[3, 8, 8]),
            &Tensor::zeros(&[4, 3, 3, 3]),
            None,
            1,
            Padding::Zero(1),
            1,
        ),
        "conv2d",
    );
    assert_shape_err(
        ops::conv2d(
            &x,
            &Tensor::zeros(&[4, 3, 3, 3]),
            None,
            0,
            Padding::Zero(1),
            1,
        ),
        "conv2d",
    );
    // Reflection padding must be smaller than the input, as in PyTorch.
    assert_shape_err(
        ops::conv2d(
            &Tensor::zeros(&[1, 3, 4, 4]),
            &Tensor::zeros(&[1, 3, 9, 9]),
            None,
            1,
            Padding::Reflect(4),
            1,
        ),
        "conv2d",
    );
    // Kernel larger than the padded input.
    assert_shape_err(
        ops::conv2d(
            &x,
            &Tensor::zeros(&[1, 3, 11, 11]),
            None,
            1,
            Padding::Zero(1),
            1,
        ),
        "conv2d",
    );
}

// ------------------------------------------------------------------ elementwise and norms

#[test]
fn upsample_values() {
    let x = t(&[1, 1, 2, 3], &[1., 2., 3., 4., 5., 6.]);
    let y = ops::upsample_nearest(&x, 2).unwrap();
    assert_eq!(y.shape, [1, 1, 4, 6]);
    #[rustfmt::skip]
    let want = [1., 1., 2., 2., 3., 3.,  1., 1., 2., 2., 3., 3.,  4., 4., 5., 5., 6., 6.,  4., 4., 5., 5., 6., 6.];
    assert_eq!(y.data, want);
    assert_shape_err(
        ops::upsample_nearest(&Tensor::zeros(&[2, 2]), 2),
        "upsample_nearest",
    );
}

#[test]
fn instance_norm_of_known_vector() {
    // Plane [1, 2, 3, 4]: mean 2.5, biased variance 1.25; γ 2, β 1. Second channel constant: output β.
    let x = t(&[1, 2, 2, 2], &[1., 2., 3., 4., 7., 7., 7., 7.]);
    let (g, b) = (t(&[2], &[2., 3.]), t(&[2], &[1., -0.5]));
    let y = ops::instance_norm(&x, &g, &b, false, None).unwrap();
    let inv = 1.0 / (1.25f64 + 1e-5).sqrt();
    for (i, v) in [1., 2., 3., 4.].iter().enumerate() {
        assert_abs_diff_eq!(
            y.data[i] as f64,
            (v - 2.5) * inv * 2.0 + 1.0,
            epsilon = 1e-6
        );
    }
    assert_abs_diff_eq!(y.data[0], -1.683_271, epsilon = 2e-6);
    for v in &y.data[4..] {
        assert_abs_diff_eq!(*v, -0.5, epsilon = 1e-6);
    }
    // ReLU, then the residual.
    let r = t(&[1, 2, 2, 2], &[10.; 8]);
    let y2 = ops::instance_norm(&x, &g, &b, true, Some(&r)).unwrap();
    for (a, bb) in y2.data.iter().zip(&y.data) {
        assert_abs_diff_eq!(*a, bb.max(0.0) + 10.0, epsilon = 1e-6);
    }
    assert_shape_err(
        ops::instance_norm(&x, &t(&[1], &[1.]), &b, false, None),
        "instance_norm",
    );
    assert_shape_err(
        ops::instance_norm(&x, &g, &b, false, Some(&Tensor::zeros(&[1, 2, 2, 1]))),
        "instance_norm",
    );
}

#[test]
fn instance_norm_is_per_sample_and_channel() {
    let mut rng = StdRng::seed_from_u64(5);
    let x = random(&mut rng, &[2, 3, 5, 4]);
    let y = ops::instance_norm(&x, &t(&[3], &[1.; 3]), &t(&[3], &[0.; 3]), false, None).unwrap();
    for plane in y.data.chunks(20) {
        let m = plane.iter().map(|v| *v as f64).sum::<f64>() / 20.0;
        let var = plane.iter().map(|v| (*v as f64 - m).powi(2)).sum::<f64>() / 20.0;
        assert_abs_diff_eq!(m, 0.0, epsilon = 1e-6);
        assert_abs_diff_eq!(var, 1.0, epsilon = 1e-3);
    }
}

#[test]
fn relu_and_add() {
    let x = t(&[4], &[-1., 0., 2., -0.5]);
    assert_eq!(ops::relu(&x).data, [0., 0., 2., 0.]);
    assert_eq!(ops::add(&x, &x).unwrap().data, [-2., 0., 4., -1.]);
    assert_shape_err(ops::add(&x, &t(&[2, 2], &[0.; 4])), "add");
}

#[test]
fn linear_by_hand() {
    let x = t(&[2, 1, 2], &[1., 2., -1., 0.5]);
    let w = t(&[3, 2], &[1., 0., 0., 1., 1., 1.]);
    let b = t(&[3], &[0., 0., 1.]);
    let y = ops::linear(&x, &w, Some(&b)).unwrap();
    assert_eq!(y.shape, [2, 1, 3]);
    assert_eq!(y.data, [1., 2., 4., -1., 0.5, 0.5]);
    assert_shape_err(ops::linear(&x, &t(&[3, 3], &[0.; 9]), None), "linear");
    assert_shape_err(ops::linear(&x, &w, Some(&t(&[2], &[0.; 2]))), "linear");
}

#[test]
fn linear_long_rows_match_f64_sums() {
    let mut rng = StdRng::seed_from_u64(2);
    let x = random(&mut rng, &[3, 37]);
    let w = random(&mut rng, &[5, 37]);
    let y = ops::linear(&x, &w, None).unwrap();
    for i in 0..3 {
        for o in 0..5 {
            let want: f64 = (0..37)
                .map(|j| x.data[i * 37 + j] as f64 * w.data[o * 37 + j] as f64)
                .sum();
            assert_abs_diff_eq!(y.data[i * 5 + o] as f64, want, epsilon = 1e-5);
        }
    }
}

#[test]
fn layer_norm_by_hand() {
    // [1, 2, 3]: mean 2, biased variance 2/3.
    let x = t(&[1, 3], &[1., 2., 3.]);
    let y = ops::layer_norm(&x, &t(&[3], &[1., 2., 1.]), &t(&[3], &[0., 0., 1.])).unwrap();
    let s = 1.0 / (2.0f64 / 3.0 + 1e-5).sqrt();
    assert_abs_diff_eq!(y.data[0] as f64, -s, epsilon = 1e-6);
    assert_abs_diff_eq!(y.data[1] as f64, 0.0, epsilon = 1e-6);
    assert_abs_diff_eq!(y.data[2] as f64, s + 1.0, epsilon = 1e-6);
    assert_abs_diff_eq!(y.data[0], -1.224_736, epsilon = 2e-6);
    assert_shape_err(
        ops::layer_norm(&x, &t(&[2], &[1., 1.]), &t(&[3], &[0.; 3])),
        "layer_norm",
    );
}

#[test]
fn gelu_values() {
    let y = ops::gelu(&t(&[5], &[0., 1., -1., 3., -6.]));
    assert_eq!(y.data[0], 0.0);
    assert_abs_diff_eq!(y.data[1], 0.841_344_7, epsilon = 1e-6);
    assert_abs_diff_eq!(y.data[2], -0.158_655_3, epsilon = 1e-6);
    assert_abs_diff_eq!(y.data[3], 2.995_950_3, epsilon = 1e-5);
    assert_abs_diff_eq!(y.data[4], 0.0, epsilon = 1e-7);
}

#[test]
fn gelu_tanh_values_and_distance_from_exact() {
    // PyTorch: F.gelu(torch.tensor([1., -1., 3.]), approximate='tanh') = 0.8411920, -0.1588080, 2.9963627.
    let y = ops::gelu_tanh(&t(&[4], &[0., 1., -1., 3.]));
    assert_eq!(y.data[0], 0.0);
    assert_abs_diff_eq!(y.data[1], 0.841_192, epsilon = 1e-6);
    assert_abs_diff_eq!(y.data[2], -0.158_808, epsilon = 1e-6);
    assert_abs_diff_eq!(y.data[3], 2.996_362_7, epsilon = 1e-5);
    // Within 4.8e-4 of exact GELU everywhere (the documented 4.7e-4 bound, near |x| = 2).
    let xs: Vec<f32> = (0..=16000).map(|i| -8.0 + i as f32 * 1e-3).collect();
    let x = t(&[xs.len()], &xs);
    let (a, e) = (ops::gelu_tanh(&x), ops::gelu(&x));
    let worst = a.data.iter().zip(&e.data).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
    assert!(worst < 4.8e-4 && worst > 1e-4, "max |gelu_tanh - gelu| = {worst}");
}

// ------------------------------------------------------------------ attention

#[test]
fn attention_with_one_key_returns_v() {
    let mut rng = StdRng::seed_from_u64(1);
    let q = random(&mut rng, &[2, 3, 4, 8]);
    let k = random(&mut rng, &[2, 3, 1, 8]);
    let v = random(&mut rng, &[2, 3, 1, 8]);
    let y = ops::attention(&q, &k, &v).unwrap();
    assert_eq!(y.shape, [2, 3, 4, 8]);
    for (bh, rows) in y.data.chunks(4 * 8).enumerate() {
        for row in rows.chunks(8) {
            assert_close(row, &v.data[bh * 8..(bh + 1) * 8], 1e-6);
        }
    }
}

#[test]
fn attention_by_hand() {
    // q = [1, 0], keys [1, 0] and [0, 1], Dh 2: scores 1/√2 and 0, weights e^(1/√2) : 1.
    let q = t(&[1, 1, 1, 2], &[1., 0.]);
    let k = t(&[1, 1, 2, 2], &[1., 0., 0., 1.]);
    let v = t(&[1, 1, 2, 2], &[10., 0., 0., 10.]);
    let y = ops::attention(&q, &k, &v).unwrap();
    let e = (1.0f64 / 2f64.sqrt()).exp();
    assert_abs_diff_eq!(y.data[0] as f64, 10.0 * e / (e + 1.0), epsilon = 1e-5);
    assert_abs_diff_eq!(y.data[1] as f64, 10.0 / (e + 1.0), epsilon = 1e-5);
    // Large scores do not overflow (max subtraction).
    let y = ops::attention(&t(&[1, 1, 1, 2], &[1000., 0.]), &k, &v).unwrap();
    assert_abs_diff_eq!(y.data[0], 10.0, epsilon = 1e-5);
    assert!(y.data[1].abs() < 1e-5);
}

#[test]
fn attention_invariant_to_key_permutation() {
    let mut rng = StdRng::seed_from_u64(4);
    let (nk, dh) = (6, 4);
    let q = random(&mut rng, &[1, 2, 5, dh]);
    let k = random(&mut rng, &[1, 2, nk, dh]);
    let v = random(&mut rng, &[1, 2, nk, dh]);
    let perm = [3, 0, 5, 1, 4, 2];
    let permute = |x: &Tensor| {
        let mut y = x.clone();
        for h in 0..2 {
            for (dst, &src) in perm.iter().enumerate() {
                let (d0, s0) = ((h * nk + dst) * dh, (h * nk + src) * dh);
                y.data[d0..d0 + dh].copy_from_slice(&x.data[s0..s0 + dh]);
            }
        }
        y
    };
    let a = ops::attention(&q, &k, &v).unwrap();
    let b = ops::attention(&q, &permute(&k), &permute(&v)).unwrap();
    assert_close(&a.data, &b.data, 1e-6);
    assert_shape_err(
        ops::attention(
            &q,
            &Tensor::zeros(&[1, 2, nk, dh + 1]),
            &Tensor::zeros(&[1, 2, nk, dh + 1]),
        ),
        "attention",
    );
    assert_shape_err(
        ops::attention(&q, &k, &Tensor::zeros(&[1, 2, nk + 1, dh])),
        "attention",
    );
}

#[test]
fn multi_head_attention_matches_per_head_definition() {
    // Heads split the projected q, k, v channels into contiguous groups of Dh.
    let mut rng = StdRng::seed_from_u64(9);
    let (b, n, d, h) = (2, 5, 8, 2);
    let dh = d / h;
    let x = random(&mut rng, &[b, n, d]);
    let (wq, bq) = (random(&mut rng, &[3 * d, d]), random(&mut rng, &[3 * d]));
    let (wo, bo) = (random(&mut rng, &[d, d]), random(&mut rng, &[d]));
    let y = ops::multi_head_attention(&x, &wq, &bq, &wo, &bo, h).unwrap();
    assert_eq!(y.shape, [b, n, d]);
    let qkv = ops::linear(&x, &wq, Some(&bq)).unwrap();
    let at = |bi: usize, t: usize, c: usize| qkv.data[(bi * n + t) * 3 * d + c] as f64;
    for bi in 0..b {
        let mut merged = vec![0f64; n * d];
        for hi in 0..h {
            for i in 0..n {
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..dh)
                            .map(|c| at(bi, i, hi * dh + c) * at(bi, j, d + hi * dh + c))
                            .sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                for c in 0..dh {
                    merged[i * d + hi * dh + c] = (0..n)
                        .map(|j| (s[j] - m).exp() / z * at(bi, j, 2 * d + hi * dh + c))
                        .sum();
                }
            }
        }
        for i in 0..n {
            for o in 0..d {
                let want = bo.data[o] as f64
                    + (0..d)
                        .map(|c| merged[i * d + c] * wo.data[o * d + c] as f64)
                        .sum::<f64>();
                assert_abs_diff_eq!(y.data[(bi * n + i) * d + o] as f64, want, epsilon = 1e-5);
            }
        }
    }
    assert_shape_err(
        ops::multi_head_attention(&x, &wq, &bq, &wo, &bo, 3),
        "multi_head_attention",
    );
}

// ------------------------------------------------------------------ AdaIN, positions, patches

#[test]
fn adain_gives_style_statistics() {
    let mut rng = StdRng::seed_from_u64(8);
    let c = random(&mut rng, &[2, 10, 3]);
    let mut s = random(&mut rng, &[2, 7, 3]);
    for v in s.data.iter_mut() {
        *v = *v * 4.0 + 2.0;
    }
    let y = ops::adain(&c, &s).unwrap();
    let stats = |x: &[f32], n: usize, ch: usize| {
        let m = (0..n).map(|t| x[t * 3 + ch] as f64).sum::<f64>() / n as f64;
        let v = (0..n)
            .map(|t| (x[t * 3 + ch] as f64 - m).powi(2))
            .sum::<f64>()
            / (n - 1) as f64;
        (m, v)
    };
    for b in 0..2 {
        for ch in 0..3 {
            let (ym, yv) = stats(&y.data[b * 30..], 10, ch);
            let (sm, sv) = stats(&s.data[b * 21..], 7, ch);
            let (_, cv) = stats(&c.data[b * 30..], 10, ch);
            assert_abs_diff_eq!(ym, sm, epsilon = 1e-5);
            // Unbiased variance with eps: var(y) = cv / (cv + eps) * (sv + eps).
            assert_abs_diff_eq!(yv, cv / (cv + 1e-5) * (sv + 1e-5), epsilon = 1e-4);
        }
    }
    // A style batch of 1 is broadcast.
    let s1 = Tensor::new(&[1, 7, 3], s.data[..21].to_vec());
    let y1 = ops::adain(&c, &s1).unwrap();
    assert_eq!(y1.data[..30], y.data[..30]);
    assert_shape_err(ops::adain(&c, &Tensor::zeros(&[3, 7, 3])), "adain");
    assert_shape_err(ops::adain(&c, &Tensor::zeros(&[2, 1, 3])), "adain");
    assert_shape_err(ops::adain(&c, &Tensor::zeros(&[2, 7, 4])), "adain");
}

#[test]
fn sinusoidal_positions() {
    let pe = ops::sinusoidal(5, 8);
    assert_eq!(pe.shape, [5, 8]);
    assert_eq!(pe.data[..8], [0., 1., 0., 1., 0., 1., 0., 1.]);
    // Column pair 0 has frequency 1; pair 1 has 10000^(-2/8) = 0.1.
    for t in 0..5 {
        assert_abs_diff_eq!(pe.data[t * 8], (t as f32).sin(), epsilon = 1e-6);
        assert_abs_diff_eq!(pe.data[t * 8 + 1], (t as f32).cos(), epsilon = 1e-6);
        assert_abs_diff_eq!(pe.data[t * 8 + 2], (t as f32 * 0.1).sin(), epsilon = 1e-6);
        assert_abs_diff_eq!(pe.data[t * 8 + 3], (t as f32 * 0.1).cos(), epsilon = 1e-6);
    }
}

#[test]
fn patch_embed_then_unpatch_round_trips() {
    // With weight[d, c, r, s] = 1 where d = (r·p + s)·3 + c, the patch embedding lays each patch out in
    // exactly the (row, column, channel) order that unpatch reads, so unpatch gives the image back.
    let mut rng = StdRng::seed_from_u64(12);
    let (p, hp, wp) = (4, 2, 3);
    let img = random(&mut rng, &[2, 3, hp * p, wp * p]);
    let d = p * p * 3;
    let mut w = Tensor::zeros(&[d, 3, p, p]);
    for c in 0..3 {
        for r in 0..p {
            for s in 0..p {
                let di = (r * p + s) * 3 + c;
                w.data[((di * 3 + c) * p + r) * p + s] = 1.0;
            }
        }
    }
    let tokens = ops::patch_embed(&img, &w, &Tensor::zeros(&[d]), p).unwrap();
    assert_eq!(tokens.shape, [2, hp * wp, d]);
    // Token order is row-major over patches: token 1 is the patch at (0, 1).
    assert_eq!(tokens.data[d], img.data[p]);
    let back = ops::unpatch(&tokens, hp, wp, p).unwrap();
    assert_eq!(back, img);
    assert_shape_err(
        ops::patch_embed(&Tensor::zeros(&[1, 3, 6, 8]), &w, &Tensor::zeros(&[d]), p),
        "patch_embed",
    );
    assert_shape_err(ops::unpatch(&tokens, hp, wp + 1, p), "unpatch");
}

#[test]
fn patch_embed_equals_strided_conv() {
    let mut rng = StdRng::seed_from_u64(13);
    let img = random(&mut rng, &[1, 3, 8, 12]);
    let w = random(&mut rng, &[5, 3, 4, 4]);
    let b = random(&mut rng, &[5]);
    let tok = ops::patch_embed(&img, &w, &b, 4).unwrap();
    let conv = ops::conv2d(&img, &w, Some(&b), 4, Padding::Zero(0), 1).unwrap();
    // conv [1, 5, 2, 3] -> flatten(2).transpose(1, 2) -> [1, 6, 5]
    for t_ in 0..6 {
        for d in 0..5 {
            assert_abs_diff_eq!(tok.data[t_ * 5 + d], conv.data[d * 6 + t_], epsilon = 1e-5);
        }
    }
}

#[test]
fn unpatch_layout_by_hand() {
    // One 2x2 patch (p = 2): token features are (row, column, channel) = (i·2 + j)·3 + ch.
    let tok = Tensor::new(&[1, 1, 12], (0..12).map(|v| v as f32).collect());
    let img = ops::unpatch(&tok, 1, 1, 2).unwrap();
    assert_eq!(img.shape, [1, 3, 2, 2]);
    assert_eq!(img.data, [0., 3., 6., 9., 1., 4., 7., 10., 2., 5., 8., 11.]);
}
