//! The ops FINN's streamlining writes when it lowers a network for its hardware layers
//! (qonnx's `custom_op/general`): `XnorPopcountMatMul`, `MaxPoolNHWC`, `Im2Col`, and
//! Brevitas' `QuantAvgPool2d` as FINN exports it. Each becomes the IR ops that compute the
//! same values, as qonnx's `execute_node` defines them.

use bnnc_ir::{
    BinaryOp, ConvAttrs, ElemType, IntType, Op, PoolAttrs, QuantAttrs, RoundingMode, Scale, Tensor,
    TruncAttrs,
};

use super::window::window;
use super::{operands, to_usize, NodeResult, OnnxNode};
use crate::import::{Binding, Importer};

/// What an `Im2Col` result was taken from: the image in NCHW, the window, the channels.
#[derive(Clone, Debug)]
pub(crate) struct Windows {
    image: Binding,
    attrs: ConvAttrs,
    channels: usize,
}

impl Windows {
    fn padded(&self) -> bool {
        self.attrs.pads.iter().any(|&p| p > 0)
    }
}

/// NHWC to NCHW, and back.
const TO_NCHW: [usize; 4] = [0, 3, 1, 2];
const TO_NHWC: [usize; 4] = [0, 2, 3, 1];

/// `XnorPopcountMatMul(a, b)`: operands of {0, 1} standing for -1 and +1; the result counts
/// the products that are +1, `(a' . b' + K) / 2` with `a' = 2a - 1`. `a` must be typed
/// BINARY, as qonnx requires; `b`, a constant, must hold only 0 and 1.
pub fn xnor_popcount_matmul(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let operands = operands(cx, node, 2)?;
    let (a, b) = (operands[0], operands[1]);
    let (a_shape, b_shape) = (cx.shape(a).to_vec(), cx.shape(b).to_vec());
    let k = *a_shape.last().ok_or("operand 0 is a scalar")?;
    if b_shape.len() != 2 || b_shape[0] != k {
        return Err(
            format!("operands of shapes {a_shape:?} and {b_shape:?} do not multiply").into(),
        );
    }
    // Bits themselves, not scaled ones: `a - 1/2` then tells 0 from 1.
    if !matches!(
        cx.elem(a),
        ElemType::Int(IntType::Binary | IntType::Unsigned(1))
    ) {
        return Err(format!(
            "operand 0 is {}, not BINARY: XNOR-popcount takes bits standing for -1 and +1",
            cx.elem(a)
        )
        .into());
    }
    let weight_bits = cx
        .const_data(b)
        .ok_or("operand 1 must be a constant (the weights)")?
        .to_f32_vec();
    if let Some(bad) = weight_bits.iter().find(|&&v| v != 0.0 && v != 1.0) {
        return Err(format!("operand 1 holds {bad}; XNOR-popcount weights are 0 or 1").into());
    }
    let weights = Tensor::f32(
        b_shape,
        weight_bits.iter().map(|&v| 2.0 * v - 1.0).collect(),
    );
    let b = cx.constant(
        &format!("{}.bipolar_weights", node.name),
        weights,
        ElemType::BIPOLAR,
    );
    // a' = 2a - 1: the bit 1 is +1, 0 is -1, which a bipolar quantizer of a - 1/2 gives.
    let half = cx.scalar(&format!("{}.half", node.name), 0.5);
    let one = cx.scalar(&format!("{}.one", node.name), 1.0);
    // Unpadded windows: the XNOR convolution FINN lowered, on the image's bits (a padded
    // window's 0 bits stand for -1, which no zero-padded convolution reads). `b` holds the
    // bipolar weights already.
    let windows = windows_of(cx, a).filter(|w| !w.padded());
    let lowered = match windows {
        Some(windows) => conv_weights(cx, &windows, b)?.map(|filters| (windows, filters)),
        None => None,
    };
    let dot = match lowered {
        Some((windows, filters)) => {
            let name = format!("{}.filters", node.name);
            let filters = cx.constant(&name, filters, ElemType::BIPOLAR);
            let centered = cx.add_step(
                node,
                "centered",
                Op::Binary(BinaryOp::Sub),
                &[windows.image, half],
            )?;
            let image = cx.add_step(node, "bipolar", Op::BipolarQuant, &[centered, one])?;
            let conv = cx.add_step(node, "conv", Op::Conv(windows.attrs), &[image, filters])?;
            let perm = TO_NHWC.to_vec();
            cx.add_step(node, "dot", Op::Transpose { perm }, &[conv])?
        }
        None => {
            let centered = cx.add_step(node, "centered", Op::Binary(BinaryOp::Sub), &[a, half])?;
            let mut a = cx.add_step(node, "bipolar", Op::BipolarQuant, &[centered, one])?;
            // Lowered convolutions multiply images (N, H, W, K): as rows of K, which the XNOR
            // kernels take, and back.
            let rows = a_shape.iter().product::<usize>() / k.max(1);
            let batched = a_shape.len() != 2;
            if batched {
                let shape = vec![rows, k];
                a = cx.add_step(node, "rows", Op::Reshape { shape }, &[a])?;
            }
            let mut dot = cx.add_step(node, "dot", Op::MatMul, &[a, b])?;
            if batched {
                let mut shape = a_shape.clone();
                *shape.last_mut().expect("a_shape has an axis") = cx.shape(b)[1];
                dot = cx.add_step(node, "image", Op::Reshape { shape }, &[dot])?;
            }
            dot
        }
    };
    let k = cx.scalar(&format!("{}.k", node.name), k as f32);
    let doubled = cx.add_step(node, "plus_k", Op::Binary(BinaryOp::Add), &[dot, k])?;
    cx.add_node(node, Op::Binary(BinaryOp::Mul), &[doubled, half])
}

/// `MaxPoolNHWC`: ONNX's MaxPool (kernel_shape, pads, strides, ceil_mode) on an NHWC image:
/// the image to NCHW, the pool, and back.
pub fn max_pool_nhwc(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let x = operands(cx, node, 1)?[0];
    let shape = cx.shape(x).to_vec();
    let [_, h, w, _] = shape[..] else {
        return Err(format!("input of shape {shape:?}; MaxPoolNHWC takes (N, H, W, C)").into());
    };
    let kernel = positive_ints(node, "kernel_shape")?;
    if kernel.len() != 2 {
        return Err(format!("kernel_shape {kernel:?}; MaxPoolNHWC is 2-D").into());
    }
    let window = window(&node.attrs, &kernel, &[h, w])?;
    let attrs = PoolAttrs {
        kernel,
        strides: window.strides,
        dilations: window.dilations,
        pads: window.pads,
        ceil_mode: node.attrs.flag_or("ceil_mode", false)?,
        count_include_pad: false,
    };
    let nchw = nchw(cx, node, x)?;
    let pooled = cx.add_step(node, "pool", Op::MaxPool(attrs), &[nchw])?;
    cx.add_node(
        node,
        Op::Transpose {
            perm: TO_NHWC.to_vec(),
        },
        &[pooled],
    )
}

/// `QuantAvgPool2d` (Brevitas' quantized average pool): each window's sum of integers,
/// shifted right by the bits its accumulator has beyond `obits`: as qonnx computes it, the
/// average pool times `kernel^2`, rounded (half to even), then floored after dividing by
/// `2^shift` (QONNX `Trunc` v1 with scale 1). NCHW, or NHWC between transposes.
pub fn quant_avg_pool_2d(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let x = operands(cx, node, 1)?[0];
    let int = |name: &str| -> NodeResult<usize> {
        let v = node
            .attrs
            .int(name)?
            .ok_or_else(|| format!("attribute `{name}` is missing"))?;
        Ok(to_usize(v, name)?)
    };
    let (kernel, stride, ibits, obits) =
        (int("kernel")?, int("stride")?, int("ibits")?, int("obits")?);
    if kernel == 0 || stride == 0 || !(1..=24).contains(&ibits) || !(1..=32).contains(&obits) {
        return Err(format!(
            "kernel {kernel}, stride {stride}, ibits {ibits}, obits {obits}: expected a positive \
             kernel and stride, ibits in 1..=24, obits in 1..=32"
        )
        .into());
    }
    // qonnx: the bits of (2^ibits - 1) * kernel^2, less obits.
    let largest = u64::try_from(kernel)
        .ok()
        .and_then(|k| k.checked_mul(k))
        .and_then(|area| area.checked_mul((1u64 << ibits) - 1))
        .ok_or_else(|| format!("a kernel of {kernel} overflows the accumulator's width"))?;
    let shift = (64 - largest.leading_zeros() as usize).saturating_sub(obits);
    let nhwc = match node.attrs.string_or("data_layout", "NCHW")? {
        "NCHW" => false,
        "NHWC" => true,
        other => return Err(format!("data_layout `{other}`: NCHW or NHWC").into()),
    };
    let mut image = x;
    if nhwc {
        image = nchw(cx, node, image)?;
    }
    let attrs = PoolAttrs {
        kernel: vec![kernel, kernel],
        strides: vec![stride, stride],
        dilations: vec![1, 1],
        pads: vec![0; 4],
        ceil_mode: false,
        count_include_pad: false,
    };
    let avg = cx.add_step(node, "average", Op::AveragePool(attrs), &[image])?;
    let area = cx.scalar(&format!("{}.area", node.name), (kernel * kernel) as f32);
    let sums = cx.add_step(node, "sums", Op::Binary(BinaryOp::Mul), &[avg, area])?;
    let operands = [
        sums,
        cx.scalar(&format!("{}.one", node.name), 1.0),
        cx.scalar(&format!("{}.zero", node.name), 0.0),
        // Trunc v1 divides by 2^(in_bw - out_bw): the accumulator's bits, then obits.
        cx.scalar(&format!("{}.acc_bits", node.name), (obits + shift) as f32),
        cx.scalar(&format!("{}.obits", node.name), obits as f32),
    ];
    let attrs = TruncAttrs {
        rounding: RoundingMode::Floor,
        signed: true,
        narrow: false,
        v2: false,
    };
    if nhwc {
        let shifted = cx.add_step(node, "shifted", Op::Trunc(attrs), &operands)?;
        cx.add_node(
            node,
            Op::Transpose {
                perm: TO_NHWC.to_vec(),
            },
            &[shifted],
        )
    } else {
        cx.add_node(node, Op::Trunc(attrs), &operands)
    }
}

/// `Im2Col`: every output pixel of a convolution over an NHWC image gets its window, taps
/// row-major with the channels innermost, `(N, OH, OW, KH * KW * C)`. It is the depthwise
/// convolution whose filters each pick one tap of their channel (weight 1, the rest 0), its
/// results put in that order; padding is zeros (`pad_value` 0). The picked values are the input's, so a
/// quantizer of the input's type, which changes none of them, gives them that type back.
pub fn im2col(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let x = operands(cx, node, 1)?[0];
    let shape = cx.shape(x).to_vec();
    let [1, _, _, c] = shape[..] else {
        return Err(
            format!("input of shape {shape:?}; Im2Col takes one image (1, H, W, C)").into(),
        );
    };
    let kernel = positive_ints(node, "kernel_size")?;
    let stride = positive_ints(node, "stride")?;
    let dilations = match node.attrs.ints("dilations")? {
        None => vec![1, 1],
        Some(_) => positive_ints(node, "dilations")?,
    };
    let elem = cx.elem(x);
    let pads = match node.attrs.ints("pad_amount")? {
        None => vec![0; 4],
        Some(p) => p
            .iter()
            .map(|&v| to_usize(v, "a pad"))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if kernel.len() != 2 || stride.len() != 2 || dilations.len() != 2 || pads.len() != 4 {
        return Err("kernel_size, stride and dilations take 2 values, pad_amount 4".into());
    }
    if node.attrs.int_or("pad_value", 0)? != 0 {
        return Err("a pad_value other than 0 is not supported".into());
    }
    if node.attrs.int_or("depthwise", 0)? != 0 {
        return Err("depthwise Im2Col is not supported".into());
    }
    let (kh, kw) = (kernel[0], kernel[1]);
    // Channel by channel (groups of one channel), filter `tap` of each picks that tap: the
    // picks are C * taps^2 values, not (C * taps)^2.
    let taps = kh.checked_mul(kw);
    let picks_len = taps
        .and_then(|t| t.checked_mul(t))
        .and_then(|t2| t2.checked_mul(c))
        .filter(|&n| n <= crate::MAX_ELEMENTS)
        .ok_or_else(|| {
            format!("a {kh}x{kw} kernel over {c} channels: more picks than bnnc's tensor limit")
        })?;
    let taps = kh * kw;
    let mut picks = vec![0f32; picks_len];
    for filter in 0..c * taps {
        picks[filter * taps + filter % taps] = 1.0;
    }
    let picks = cx.constant(
        &format!("{}.picks", node.name),
        Tensor::f32(vec![c * taps, 1, kh, kw], picks),
        ElemType::BINARY,
    );
    // ONNX pads are begins then ends, as pad_amount's [H_begin, W_begin, H_end, W_end].
    let attrs = ConvAttrs {
        kernel,
        strides: stride,
        dilations,
        pads,
        group: c,
    };
    let padded = attrs.pads.iter().any(|&p| p > 0);
    let nchw = nchw(cx, node, x)?;
    let lowered = Windows {
        image: nchw,
        attrs: ConvAttrs {
            group: 1,
            ..attrs.clone()
        },
        channels: c,
    };
    let mut windows = cx.add_step(node, "windows", Op::Conv(attrs), &[nchw, picks])?;
    let scale = match &elem {
        ElemType::Int(t) => Some((*t, 1.0)),
        ElemType::Scaled(t, Scale::Tensor(s)) => Some((*t, *s)),
        _ => None,
    };
    match scale {
        // Zeros at padded taps are no bipolar values: those keep the sums' type.
        Some((IntType::Bipolar, _)) if padded => {}
        Some((IntType::Bipolar, s)) => {
            let s = cx.scalar(&format!("{}.scale", node.name), s);
            windows = cx.add_step(node, "bipolar", Op::BipolarQuant, &[windows, s])?;
        }
        Some((t, s)) => {
            let attrs = QuantAttrs {
                signed: matches!(t, IntType::Signed(_)),
                narrow: false,
                rounding: RoundingMode::HalfEven,
            };
            let operands = [
                windows,
                cx.scalar(&format!("{}.scale", node.name), s),
                cx.scalar(&format!("{}.zero", node.name), 0.0),
                cx.scalar(&format!("{}.bits", node.name), f32::from(t.bits())),
            ];
            windows = cx.add_step(node, "typed", Op::Quant(attrs), &operands)?;
        }
        None => {}
    }
    // (1, C * taps, OH, OW), channels outermost, to (1, OH, OW, taps * C), channels innermost.
    let (oh, ow) = match cx.shape(windows) {
        &[_, _, oh, ow] => (oh, ow),
        other => return Err(format!("internal error: windows of shape {other:?}").into()),
    };
    let split = Op::Reshape {
        shape: vec![1, c, taps, oh, ow],
    };
    let split = cx.add_step(node, "split", split, &[windows])?;
    let order = Op::Transpose {
        perm: vec![0, 3, 4, 2, 1],
    };
    let ordered = cx.add_step(node, "ordered", order, &[split])?;
    let flat = Op::Reshape {
        shape: vec![1, oh, ow, taps * c],
    };
    cx.add_node(node, flat, &[ordered])?;
    if let Some(Binding::Value(v)) = node.output(0).and_then(|name| cx.lookup(name)) {
        cx.windows.insert(v, lowered);
    }
    Ok(())
}

/// A MatMul of `Im2Col` windows by constant weights `(KH * KW * C, M)` is the convolution
/// FINN lowered: imported as that convolution of the image (between transposes) when its
/// sums are integers, whose order does not matter. `false` where it is not, and nothing was
/// bound.
pub fn product_of_windows(
    cx: &mut Importer,
    node: &OnnxNode,
    a: Binding,
    w: Binding,
) -> NodeResult<bool> {
    let Some(windows) = windows_of(cx, a) else {
        return Ok(false);
    };
    let Some(weights) = conv_weights(cx, &windows, w)? else {
        return Ok(false);
    };
    let elem = match cx.elem(w) {
        // A per-output scale moves from axis 1 of (K, M) to axis 0 of (M, C, KH, KW).
        ElemType::Scaled(t, Scale::Channel { axis: 1, values }) => {
            ElemType::Scaled(t, Scale::Channel { axis: 0, values })
        }
        ElemType::Scaled(_, Scale::Channel { .. }) => return Ok(false),
        other => other,
    };
    let w = cx.constant(&format!("{}.filters", node.name), weights, elem);
    let conv = cx.add_step(node, "conv", Op::Conv(windows.attrs), &[windows.image, w])?;
    if cx.elem(conv) == ElemType::F32 {
        // A float product sums in MatMul's order, not a convolution's: keep the MatMul (the
        // unused convolution goes with the cleanup).
        return Ok(false);
    }
    cx.add_node(
        node,
        Op::Transpose {
            perm: TO_NHWC.to_vec(),
        },
        &[conv],
    )?;
    Ok(true)
}

/// The windows `a` holds, if it is an `Im2Col` result.
fn windows_of(cx: &Importer, a: Binding) -> Option<Windows> {
    match a {
        Binding::Value(v) => cx.windows.get(&v).cloned(),
        Binding::Const(_) => None,
    }
}

/// Constant `(KH * KW * C, M)` weights over `windows` as `(M, C, KH, KW)` filters, or `None`
/// where `w` is no such constant.
fn conv_weights(cx: &Importer, windows: &Windows, w: Binding) -> NodeResult<Option<Tensor>> {
    let (kh, kw) = (windows.attrs.kernel[0], windows.attrs.kernel[1]);
    let c = windows.channels;
    let (Some(data), &[k, m]) = (cx.const_data(w), cx.shape(w)) else {
        return Ok(None);
    };
    if k != kh * kw * c {
        return Ok(None);
    }
    let values = data.to_f32_vec();
    let mut filters = vec![0f32; m * c * kh * kw];
    for (row, chunk) in values.chunks_exact(m).enumerate() {
        // Row (tap, channel) of the lowered matrix, taps row-major, channels innermost.
        let (tap, ch) = (row / c, row % c);
        for (f, &v) in chunk.iter().enumerate() {
            filters[(f * c + ch) * kh * kw + tap] = v;
        }
    }
    Ok(Some(Tensor::f32(vec![m, c, kh, kw], filters)))
}

/// `x`, an NHWC image, in NCHW: the step every NHWC op here starts with.
fn nchw(cx: &mut Importer, node: &OnnxNode, x: Binding) -> NodeResult<Binding> {
    let perm = TO_NCHW.to_vec();
    cx.add_step(node, "nchw", Op::Transpose { perm }, &[x])
}

/// A required attribute of positive integers.
fn positive_ints(node: &OnnxNode, name: &str) -> NodeResult<Vec<usize>> {
    node.attrs
        .ints(name)?
        .ok_or_else(|| format!("attribute `{name}` is missing"))?
        .iter()
        .map(|&v| match to_usize(v, name) {
            Ok(0) => Err(format!("attribute `{name}` holds 0")),
            other => other,
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(Into::into)
}
