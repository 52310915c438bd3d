//! Linear layers: Conv, Gemm, MatMul, their XNOR-popcount twins, and BatchNorm.
//!
//! The sums follow onnxruntime's MLAS kernels ([`super::mac`]): which kernel runs depends on
//! the shapes exactly as in MLAS (`MlasConvPrepare`, `MlasGemm`), so the routing below mirrors
//! theirs. The reduction order within a convolution window is input channel, then kernel taps
//! row-major (im2col's). Bias and Gemm's C join the finished sums.

use std::borrow::Cow;

use super::mac::{
    dot_blocks, m1_dot, m1_rows, m1_transposed, m1_transposed_one, matmul_2d, pack_blocks,
};
use super::strided::{broadcast_indices, expand};
use super::{f32_result, floats, numel};
use crate::broadcast;
use crate::op::{ConvAttrs, GemmAttrs};
use crate::summation_order::{conv_route, segments, ConvRoute, Threading};
use crate::tensor::Tensor;

/// ONNX Conv (NCHW, any number of spatial axes, groups, dilations, zero padding), bias added
/// to the finished sum.
pub(super) fn conv(attrs: &ConvAttrs, x: &[&Tensor], out: &[usize]) -> Result<Tensor, String> {
    let mut y = conv_f32(
        attrs,
        &floats(x[0]),
        x[0].shape(),
        &floats(x[1]),
        x[1].shape(),
        out,
    );
    if let Some(bias) = x.get(2) {
        let bias = floats(bias);
        let plane = numel(&out[2..]);
        for (i, v) in y.iter_mut().enumerate() {
            *v += bias[(i / plane.max(1)) % bias.len().max(1)];
        }
    }
    f32_result(out, y)
}

/// Bipolar convolution: activations of ±1 against packed bipolar weights (unpacked here);
/// padded taps contribute 0. The sums are integers of magnitude at most K <= 2^24 (inference
/// checks), hence exact in f32.
pub(super) fn xnor_conv(attrs: &ConvAttrs, x: &[&Tensor], out: &[usize]) -> Result<Tensor, String> {
    let input = floats(x[0]);
    check_bipolar(&input, 0)?;
    // Each filter's words pack its group's channels (inference checked the division).
    let cg = x[0].shape()[1] / attrs.group.max(1);
    let packed = x[1].shape();
    let mut w_shape = vec![packed[0], cg];
    w_shape.extend_from_slice(&packed[1..packed.len() - 1]);
    let w = crate::packing::unpack_conv_weights(x[1], cg);
    f32_result(
        out,
        conv_f32(attrs, &input, x[0].shape(), &w, &w_shape, out),
    )
}

fn check_bipolar(v: &[f32], operand: usize) -> Result<(), String> {
    match v.iter().find(|&&x| x != 1.0 && x != -1.0) {
        Some(bad) => Err(format!("operand {operand} holds {bad}, not ±1")),
        None => Ok(()),
    }
}

/// The convolution sums. For every output position the receptive field is gathered into a
/// patch (zeros at padded taps) laid out as the weights are, `(C/group, k...)`; each block of
/// output channels then runs down the patch once.
fn conv_f32(
    attrs: &ConvAttrs,
    input: &[f32],
    in_shape: &[usize],
    w: &[f32],
    w_shape: &[usize],
    out: &[usize],
) -> Vec<f32> {
    let (batch, channels) = (in_shape[0], in_shape[1]);
    let (m, group) = (w_shape[0], attrs.group.max(1));
    let (cg, mg) = (channels / group, m / group);
    let (in_plane, out_plane) = (numel(&in_shape[2..]), numel(&out[2..]));
    let taps = numel(&attrs.kernel);
    let k = cg * taps;
    let mut y = vec![0f32; numel(out)];
    if k == 0 || out_plane == 0 {
        return y;
    }

    // Input offset (within a channel plane) of every tap of every output position, or None
    // for a tap in the padding.
    let tap_offsets = attrs.window().tap_offsets(&in_shape[2..], &out[2..]);

    let mut patch = vec![0f32; k];
    let mut sums = vec![0f32; mg];
    let route = conv_route(attrs, in_shape, cg, mg, out_plane, k);
    for g in 0..group {
        let w_g = &w[g * mg * k..(g + 1) * mg * k];
        let (packed, segs) = match route {
            ConvRoute::General(threading) => (
                pack_blocks(w_g, mg, k),
                segments(mg, out_plane, k, threading, true),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        for n in 0..batch {
            let x_group = &input
                [(n * channels + g * cg) * in_plane..(n * channels + (g + 1) * cg) * in_plane];
            for p in 0..out_plane {
                let offsets = &tap_offsets[p * taps..(p + 1) * taps];
                for (c, chunk) in patch.chunks_exact_mut(taps).enumerate() {
                    let plane = &x_group[c * in_plane..(c + 1) * in_plane];
                    for (v, off) in chunk.iter_mut().zip(offsets) {
                        *v = off.map_or(0.0, |o| plane[o]);
                    }
                }
                match route {
                    ConvRoute::General(_) => {
                        let stride = segs
                            .iter()
                            .find(|s| (s.start..s.end).contains(&p))
                            .map_or(k, |s| s.stride_k);
                        dot_blocks(&packed, &patch, stride, &mut sums)
                    }
                    ConvRoute::SingleFilter => sums[0] = m1_dot(w_g, &patch),
                    ConvRoute::FullWidthRows => {
                        sums[0] = m1_transposed_one(w_g, &patch, p, out_plane)
                    }
                    ConvRoute::SinglePosition => {
                        for (j, s) in sums.iter_mut().enumerate() {
                            *s = m1_transposed_one(&patch, &w_g[j * k..(j + 1) * k], j, mg);
                        }
                    }
                }
                let y_base = (n * m + g * mg) * out_plane + p;
                for (j, &v) in sums.iter().enumerate() {
                    y[y_base + j * out_plane] = v;
                }
            }
        }
    }
    y
}

fn transposed(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = v[r * cols + c];
        }
    }
    t
}

/// ONNX Gemm as onnxruntime runs it through MLAS. With C (and beta != 0) the output starts as
/// `beta * C` broadcast (no multiply when beta is 1); beta 0 ignores C entirely, even NaN.
/// A single row (or a single column) with alpha 1 and beta 0 or 1 goes through MLAS's M = 1
/// kernels ([`m1_rows`], [`m1_transposed`]); otherwise every sum is an fma chain joined to the
/// output as `fma(acc, alpha, y)`, or `alpha * acc` without C.
pub(super) fn gemm(attrs: &GemmAttrs, x: &[&Tensor], out: &[usize]) -> Result<Tensor, String> {
    let (a, b) = (floats(x[0]), floats(x[1]));
    let (&[ar, ac], &[br, bc]) = (x[0].shape(), x[1].shape()) else {
        return Err("Gemm operands must be matrices".into());
    };
    let (m, k) = if attrs.trans_a { (ac, ar) } else { (ar, ac) };
    let n = if attrs.trans_b { br } else { bc };
    let start = match x.get(2).filter(|_| attrs.beta != 0.0) {
        Some(c) => {
            let c_data = floats(c);
            let c = expand(&c_data, c.shape(), out)?;
            let beta = attrs.beta;
            Some(
                (0..m * n)
                    .map(|i| if beta == 1.0 { c.at(i) } else { beta * c.at(i) })
                    .collect::<Vec<f32>>(),
            )
        }
        None => None,
    };
    let m1 = attrs.alpha == 1.0 && (start.is_none() || attrs.beta == 1.0);
    let y = if m1 && m == 1 && !attrs.trans_a {
        if attrs.trans_b {
            m1_transposed(&a, &b, k, n, start.as_deref())
        } else {
            m1_rows(&a, &b, k, n, start.as_deref())
        }
    } else if m1 && n == 1 && !attrs.trans_b {
        // MLAS swaps the operands: the column B against every row of op(A).
        if attrs.trans_a {
            m1_rows(&b, &a, k, m, start.as_deref())
        } else {
            m1_transposed(&b, &a, k, m, start.as_deref())
        }
    } else {
        let segs = segments(m, n, k, Threading::Gemm, !attrs.trans_a);
        let a: Cow<[f32]> = if attrs.trans_a {
            Cow::Owned(transposed(&a, ar, ac))
        } else {
            a
        };
        let b: Cow<[f32]> = if attrs.trans_b {
            Cow::Owned(transposed(&b, br, bc))
        } else {
            b
        };
        matmul_2d(&a, &b, (m, k, n), &segs, attrs.alpha, start)
    };
    f32_result(out, y)
}

/// ONNX MatMul with numpy semantics: 1-D operands are promoted (and the axis removed again),
/// leading axes broadcast.
pub(super) fn matmul(x: &[&Tensor], out: &[usize]) -> Result<Tensor, String> {
    f32_result(
        out,
        matmul_nd(&floats(x[0]), x[0].shape(), &floats(x[1]), x[1].shape())?,
    )
}

/// Bipolar matrix product: activations of ±1 against packed bipolar weights (unpacked
/// here), so the f32 sums are the exact integer dot products (|dot| <= K <= 2^24, checked by
/// inference).
pub(super) fn xnor_matmul(x: &[&Tensor], out: &[usize]) -> Result<Tensor, String> {
    let a = floats(x[0]);
    check_bipolar(&a, 0)?;
    let k = x[0].shape().last().copied().unwrap_or(0);
    let m = x[1].shape()[0];
    let w = crate::packing::unpack_matrix_weights(x[1], k);
    f32_result(out, matmul_nd(&a, x[0].shape(), &w, &[k, m])?)
}

/// A low-bit integer matrix product: the activations' integers (`a / a_scale`, rounded)
/// against integer weights; the sums are exact integers (inference bounds them by 2^24).
pub(super) fn bitserial_matmul(
    a_scale: f32,
    x: &[&Tensor],
    out: &[usize],
) -> Result<Tensor, String> {
    let (a, w) = integer_operands(a_scale, x)?;
    f32_result(out, matmul_nd(&a, x[0].shape(), &w, x[1].shape())?)
}

/// The activations' integers (`a / a_scale`, rounded) and the weights, which must be
/// integers, of a bit-serial op.
fn integer_operands<'t>(
    a_scale: f32,
    x: &[&'t Tensor],
) -> Result<(Vec<f32>, Cow<'t, [f32]>), String> {
    let w = floats(x[1]);
    if let Some(bad) = w.iter().find(|w| w.fract() != 0.0) {
        return Err(format!("operand 1 holds {bad}, not an integer"));
    }
    let a = floats(x[0])
        .iter()
        .map(|&v| (v / a_scale).round())
        .collect();
    Ok((a, w))
}

/// A low-bit integer convolution: the activations' integers against integer weights, zero
/// padding contributing 0; the sums are exact integers (inference bounds them by 2^24).
pub(super) fn bitserial_conv(
    attrs: &ConvAttrs,
    a_scale: f32,
    x: &[&Tensor],
    out: &[usize],
) -> Result<Tensor, String> {
    let (a, w) = integer_operands(a_scale, x)?;
    f32_result(
        out,
        conv_f32(attrs, &a, x[0].shape(), &w, x[1].shape(), out),
    )
}

/// MatMul as onnxruntime runs it: one MLAS product per batch index (with alpha 1 and beta 0);
/// when B is a matrix, every leading axis of A folds into M, so that a batch of rows is one
/// product.
fn matmul_nd(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
) -> Result<Vec<f32>, String> {
    let (ra, rb) = (a_shape.len(), b_shape.len());
    if ra == 0 || rb == 0 {
        return Err("matmul operands must have rank at least 1".into());
    }
    let k = a_shape[ra - 1];
    let n = if rb == 1 { 1 } else { b_shape[rb - 1] };
    if rb == 1 {
        // A vector B: onnxruntime multiplies each row of A on its own (M = 1 each).
        return Ok(a
            .chunks_exact(k.max(1))
            .flat_map(|row| m1_rows(row, b, k, 1, None))
            .collect());
    }
    if rb == 2 {
        return Ok(mlas_gemm(a, b, numel(&a_shape[..ra - 1]), k, n));
    }
    let m = if ra == 1 { 1 } else { a_shape[ra - 2] };
    let (batch_a, batch_b) = (&a_shape[..ra.saturating_sub(2)], &b_shape[..rb - 2]);
    let batch = broadcast::shape(&[batch_a, batch_b]).map_err(|e| e.to_string())?;
    let ia = broadcast_indices(batch_a, &batch)?;
    let ib = broadcast_indices(batch_b, &batch)?;
    let mut y = Vec::with_capacity(numel(&batch) * m * n);
    for (i, j) in ia.zip(ib) {
        y.extend(mlas_gemm(
            &a[i * m * k..(i + 1) * m * k],
            &b[j * k * n..(j + 1) * k * n],
            m,
            k,
            n,
        ));
    }
    Ok(y)
}

/// `a (m x k) @ b (k x n)` with alpha 1 and beta 0, through the kernel MLAS picks.
fn mlas_gemm(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    if m == 1 {
        m1_rows(a, b, k, n, None)
    } else if n == 1 {
        m1_transposed(b, a, k, m, None)
    } else {
        matmul_2d(
            a,
            b,
            (m, k, n),
            &segments(m, n, k, Threading::Gemm, true),
            1.0,
            None,
        )
    }
}

/// ONNX BatchNormalization (inference) exactly as onnxruntime rounds it: per channel
/// `inv = 1 / sqrt(var + eps)`, `s = inv * gamma`, `t = beta - mean * s`, then `y = x * s + t`,
/// each step a separate f32 operation (no fused multiply-add).
/// One channel of BatchNorm in inference as the affine `y = x * s + t`, computed as
/// onnxruntime does (measured bit for bit): `inv = 1 / sqrt(var + eps)`, `s = inv * gamma`,
/// `t = beta - mean * s`, each step rounded to f32 and no fused multiply-add. The threshold
/// search folds BatchNorm with this same function.
pub fn batchnorm_scale_shift(
    gamma: f32,
    beta: f32,
    mean: f32,
    var: f32,
    epsilon: f32,
) -> (f32, f32) {
    let inv = 1.0 / (var + epsilon).sqrt();
    let s = inv * gamma;
    (s, beta - mean * s)
}

pub(super) fn batchnorm(epsilon: f32, x: &[&Tensor]) -> Result<Tensor, String> {
    let data = floats(x[0]);
    let [gamma, beta, mean, var] = [x[1], x[2], x[3], x[4]].map(floats);
    let shape = x[0].shape();
    let channels = *shape.get(1).ok_or("BatchNorm input needs a channel axis")?;
    let inner = numel(&shape[2..]);
    let factors: Vec<(f32, f32)> = (0..channels)
        .map(|c| batchnorm_scale_shift(gamma[c], beta[c], mean[c], var[c], epsilon))
        .collect();
    let y = data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (s, t) = factors[(i / inner.max(1)) % channels.max(1)];
            v * s + t
        })
        .collect();
    f32_result(shape, y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::eval;
    use crate::op::Op;

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::f32(shape.to_vec(), data.to_vec())
    }

    fn eval1(op: &Op, inputs: &[&Tensor]) -> Tensor {
        eval(op, inputs).unwrap().remove(0)
    }

    fn conv_attrs(
        kernel: &[usize],
        strides: &[usize],
        dilations: &[usize],
        pads: &[usize],
        group: usize,
    ) -> ConvAttrs {
        ConvAttrs {
            kernel: kernel.to_vec(),
            strides: strides.to_vec(),
            dilations: dilations.to_vec(),
            pads: pads.to_vec(),
            group,
        }
    }

    /// 1..=n as f32.
    fn iota(n: usize) -> Vec<f32> {
        (1..=n).map(|v| v as f32).collect()
    }

    #[test]
    fn conv_padded_with_bias() {
        // 1x1x3x3 input 1..9, 3x3 kernel of ones, pad 1: sums of the 3x3 neighbourhoods.
        let x = t(&[1, 1, 3, 3], &iota(9));
        let w = t(&[1, 1, 3, 3], &[1.0; 9]);
        let b = t(&[1], &[0.5]);
        let attrs = conv_attrs(&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], 1);
        let y = eval1(&Op::Conv(attrs), &[&x, &w, &b]);
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        let want = [12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0].map(|v: f32| v + 0.5);
        assert_eq!(y.as_f32().unwrap(), &want);
    }

    #[test]
    fn conv_strided_asymmetric_padding() {
        // ONNX's test_conv_with_strides_and_asymmetric_padding: 5x7 input 0..35, 3x3 ones,
        // strides 2, pads (top 1, left 0, bottom 1, right 0).
        let x = t(
            &[1, 1, 7, 5],
            &(0..35).map(|v| v as f32).collect::<Vec<_>>(),
        );
        let w = t(&[1, 1, 3, 3], &[1.0; 9]);
        let attrs = conv_attrs(&[3, 3], &[2, 2], &[1, 1], &[1, 0, 1, 0], 1);
        let y = eval1(&Op::Conv(attrs), &[&x, &w]);
        assert_eq!(y.shape(), &[1, 1, 4, 2]);
        assert_eq!(
            y.as_f32().unwrap(),
            &[21.0, 33.0, 99.0, 117.0, 189.0, 207.0, 171.0, 183.0]
        );
    }

    #[test]
    fn conv_depthwise_and_multi_channel() {
        // Depthwise: 2 channels, group 2, 1x1 kernels scaling channel c by w[c].
        let x = t(&[1, 2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let w = t(&[2, 1, 1, 1], &[10.0, -1.0]);
        let y = eval1(
            &Op::Conv(conv_attrs(&[1, 1], &[1, 1], &[1, 1], &[0; 4], 2)),
            &[&x, &w],
        );
        assert_eq!(y.as_f32().unwrap(), &[10.0, 20.0, -3.0, -4.0]);
        // 9 output channels (more than one block of 8) summing 2 input channels.
        let w = t(
            &[9, 2, 1, 1],
            &(0..18).map(|v| v as f32).collect::<Vec<_>>(),
        );
        let y = eval1(
            &Op::Conv(conv_attrs(&[1, 1], &[1, 1], &[1, 1], &[0; 4], 1)),
            &[&x, &w],
        );
        let want: Vec<f32> = (0..9)
            .flat_map(|m| [1.0, 2.0].map(|a| (2 * m) as f32 * a + (2 * m + 1) as f32 * (a + 2.0)))
            .collect();
        assert_eq!(y.as_f32().unwrap(), &want[..]);
    }

    #[test]
    fn conv_dilated_1d() {
        // 1-D, dilation 2, kernel [1, 10]: y[i] = x[i] + 10 * x[i + 2].
        let x = t(&[1, 1, 5], &iota(5));
        let w = t(&[1, 1, 2], &[1.0, 10.0]);
        let y = eval1(
            &Op::Conv(conv_attrs(&[2], &[1], &[2], &[0, 0], 1)),
            &[&x, &w],
        );
        assert_eq!(y.as_f32().unwrap(), &[31.0, 42.0, 53.0]);
    }

    #[test]
    fn xnor_conv_counts_only_valid_taps() {
        let conv_packed = |w: Tensor| crate::packing::pack_conv_weights(&w).unwrap();
        let x = t(&[1, 1, 2, 2], &[1.0, -1.0, -1.0, 1.0]);
        let w = conv_packed(t(&[1, 1, 3, 3], &[1.0; 9]));
        let attrs = conv_attrs(&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], 1);
        let y = eval1(&Op::XnorConv(attrs.clone()), &[&x, &w]);
        // Every window holds all four inputs: 1 - 1 - 1 + 1 = 0.
        assert_eq!(y.as_f32().unwrap(), &[0.0; 4]);
        let w = conv_packed(t(
            &[1, 1, 3, 3],
            &[-1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        ));
        let y = eval1(&Op::XnorConv(attrs.clone()), &[&x, &w]);
        // The -1 tap (top-left) sees x[0][0] only from output (1, 1).
        assert_eq!(y.as_f32().unwrap(), &[0.0, 0.0, 0.0, -2.0]);
        let zero = t(&[1, 1, 2, 2], &[1.0, 0.0, -1.0, 1.0]);
        assert!(eval(&Op::XnorConv(attrs), &[&zero, &w])
            .unwrap_err()
            .contains("not ±1"));
    }

    #[test]
    fn grouped_xnor_conv_is_the_grouped_conv_of_its_signs() {
        // Two groups of 3 channels, 4 filters (2 per group), padded: each filter's words
        // pack its own group's 3 channels.
        let sign = |i: usize| if (i * 7 + i / 3) % 5 < 2 { -1.0 } else { 1.0 };
        let x = t(&[1, 6, 3, 3], &(0..54).map(sign).collect::<Vec<_>>());
        let w = t(
            &[4, 3, 2, 2],
            &(0..48).map(|i| sign(i + 11)).collect::<Vec<_>>(),
        );
        let packed = crate::packing::pack_conv_weights(&w).unwrap();
        assert_eq!(packed.shape(), &[4, 2, 2, 1]);
        let attrs = conv_attrs(&[2, 2], &[1, 1], &[1, 1], &[1, 1, 0, 0], 2);
        let xnor = eval1(&Op::XnorConv(attrs.clone()), &[&x, &packed]);
        let conv = eval1(&Op::Conv(attrs), &[&x, &w]);
        assert_eq!(xnor.shape(), &[1, 4, 3, 3]);
        assert_eq!(xnor.as_f32().unwrap(), conv.as_f32().unwrap());
    }

    #[test]
    fn gemm_attributes() {
        let a = t(&[2, 3], &iota(6));
        let b = t(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let plain = Op::Gemm(GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
        });
        assert_eq!(
            eval1(&plain, &[&a, &b]).as_f32().unwrap(),
            &[4.0, 5.0, 10.0, 11.0]
        );
        // transA / transB with the transposed operands give the same product.
        let at = t(&[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let bt = t(&[2, 3], &[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]);
        let trans = Op::Gemm(GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: true,
            trans_b: true,
        });
        assert_eq!(
            eval1(&trans, &[&at, &bt]).as_f32().unwrap(),
            &[4.0, 5.0, 10.0, 11.0]
        );
        // alpha 0.5, beta 2 with C broadcast from a row vector.
        let c = t(&[2], &[1.0, -1.0]);
        let scaled = Op::Gemm(GemmAttrs {
            alpha: 0.5,
            beta: 2.0,
            trans_a: false,
            trans_b: false,
        });
        assert_eq!(
            eval1(&scaled, &[&a, &b, &c]).as_f32().unwrap(),
            &[4.0, 0.5, 7.0, 3.5]
        );
        // C of shape (2, 1) broadcasts along the columns; beta 0 ignores C (even NaN).
        let col = t(&[2, 1], &[10.0, 20.0]);
        assert_eq!(
            eval1(&plain, &[&a, &b, &col]).as_f32().unwrap(),
            &[14.0, 15.0, 30.0, 31.0]
        );
        let nan = t(&[1], &[f32::NAN]);
        let no_c = Op::Gemm(GemmAttrs {
            alpha: 1.0,
            beta: 0.0,
            trans_a: false,
            trans_b: false,
        });
        assert_eq!(
            eval1(&no_c, &[&a, &b, &nan]).as_f32().unwrap(),
            &[4.0, 5.0, 10.0, 11.0]
        );
    }

    #[test]
    fn matmul_batched_broadcast() {
        // a (2, 1, 2, 2) @ b (3, 2, 1): batch (2, 3).
        let a = t(&[2, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 0.0, -1.0]);
        let b = t(&[3, 2, 1], &[1.0, 1.0, 1.0, 0.0, 0.0, 2.0]);
        let y = eval1(&Op::MatMul, &[&a, &b]);
        assert_eq!(y.shape(), &[2, 3, 2, 1]);
        assert_eq!(
            y.as_f32().unwrap(),
            &[3.0, 7.0, 1.0, 3.0, 4.0, 8.0, -1.0, -1.0, -1.0, 0.0, 0.0, -2.0]
        );
        // 1-D operands.
        let v = t(&[2], &[1.0, -1.0]);
        assert_eq!(eval1(&Op::MatMul, &[&v, &v]).shape(), &[] as &[usize]);
        let m = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            eval1(&Op::MatMul, &[&v, &m]).as_f32().unwrap(),
            &[-2.0, -2.0]
        );
        assert_eq!(
            eval1(&Op::MatMul, &[&m, &v]).as_f32().unwrap(),
            &[-1.0, -1.0]
        );
    }

    #[test]
    fn xnor_matmul_dot() {
        let a = t(&[1, 4], &[1.0, -1.0, 1.0, 1.0]);
        let w = t(&[4, 2], &[1.0, -1.0, -1.0, -1.0, 1.0, -1.0, 1.0, -1.0]);
        let w = crate::packing::pack_matrix_weights(&w).unwrap();
        assert_eq!(w.shape(), &[2, 1]);
        assert_eq!(
            eval1(&Op::XnorMatMul, &[&a, &w]).as_f32().unwrap(),
            &[4.0, -2.0]
        );
    }

    #[test]
    fn bitserial_matmul_sums_the_integers() {
        // Activations 0.5, -0.25, 0.75 with a_scale 0.25 are 2, -1, 3.
        let a = t(&[1, 3], &[0.5, -0.25, 0.75]);
        let w = t(&[3, 2], &[1.0, -4.0, -2.0, 3.0, 3.0, 0.0]);
        let op = Op::BitSerialMatMul { a_scale: 0.25 };
        assert_eq!(eval1(&op, &[&a, &w]).as_f32().unwrap(), &[13.0, -11.0]);
        // Weights must be integers.
        let half = t(&[3, 2], &[0.5; 6]);
        assert!(eval(&op, &[&a, &half]).is_err());
    }

    #[test]
    fn bitserial_conv_sums_the_integers_with_zero_padding() {
        // 2x2 activations 0.5, 1.0, 1.5, -0.5 with a_scale 0.5 are 1, 2, 3, -1; a 2x2 filter
        // of ones with padding 1 sums each 2x2 window, the padding adding 0.
        let x = t(&[1, 1, 2, 2], &[0.5, 1.0, 1.5, -0.5]);
        let w = t(&[1, 1, 2, 2], &[1.0; 4]);
        let op = Op::BitSerialConv {
            attrs: conv_attrs(&[2, 2], &[1, 1], &[1, 1], &[1, 1, 1, 1], 1),
            a_scale: 0.5,
        };
        let y = eval1(&op, &[&x, &w]);
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        assert_eq!(
            y.as_f32().unwrap(),
            &[1.0, 3.0, 2.0, 4.0, 5.0, 1.0, 3.0, 2.0, -1.0]
        );
    }

    #[test]
    fn bitserial_matmul_types() {
        use crate::infer::infer_output_types;
        use crate::types::{ElemType, IntType, Scale, TensorType};
        let a = TensorType::new(
            ElemType::Scaled(IntType::Signed(3), Scale::Tensor(0.25)),
            vec![1, 64],
        );
        let w = TensorType::new(ElemType::Int(IntType::Signed(2)), vec![64, 8]);
        let op = Op::BitSerialMatMul { a_scale: 0.25 };
        let out = infer_output_types(&op, &[&a, &w], &[None, None]).unwrap();
        // |a| <= 4, |w| <= 2, 64 terms: within +-512.
        assert_eq!(out[0].elem, ElemType::Int(IntType::covering(-512, 512)));
        // The activations' scale must be the op's.
        let other = Op::BitSerialMatMul { a_scale: 0.5 };
        assert!(infer_output_types(&other, &[&a, &w], &[None, None]).is_err());
        let scaled_w = TensorType::new(
            ElemType::Scaled(IntType::Signed(2), Scale::Tensor(0.3)),
            vec![64, 8],
        );
        assert!(infer_output_types(&op, &[&a, &scaled_w], &[None, None]).is_err());
    }

    #[test]
    fn batchnorm_negative_gamma() {
        // Channel 0: gamma 0.5, beta 1, mean 2, var 3, eps 1 -> s = 0.25, t = 0.5.
        // Channel 1: gamma -1, beta 0, mean 2, var 0, eps 1 -> s = -1, t = 2: y = 2 - x.
        let x = t(&[1, 2, 2], &[1.0, 5.0, 1.0, 5.0]);
        let p = |a: f32, b: f32| t(&[2], &[a, b]);
        let (g, b, m, v) = (p(0.5, -1.0), p(1.0, 0.0), p(2.0, 2.0), p(3.0, 0.0));
        let y = eval1(&Op::BatchNorm { epsilon: 1.0 }, &[&x, &g, &b, &m, &v]);
        assert_eq!(y.as_f32().unwrap(), &[0.75, 1.75, 1.0, -3.0]);
    }

    #[test]
    fn batchnorm_rounds_like_onnxruntime() {
        // onnxruntime's folded steps give -9.491144 (bits 0xC117_DBBA) here, the textbook
        // (x - mean) / sqrt(var + eps) * gamma + beta gives -9.491143.
        let one = |v: f32| t(&[1], &[v]);
        let (gamma, beta, mean, var) = (
            one(-2.555665),
            one(0.41809884),
            one(-0.5677696),
            one(0.4526493),
        );
        let y = eval1(
            &Op::BatchNorm { epsilon: 1e-5 },
            &[&t(&[1, 1], &[2.040919]), &gamma, &beta, &mean, &var],
        );
        assert_eq!(y.as_f32().unwrap()[0].to_bits(), 0xC117_DBBA);
    }
}
