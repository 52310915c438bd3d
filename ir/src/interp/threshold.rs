//! FINN MultiThreshold and the lowered integer Threshold: `out_scale * #{i : x >= T[c, i]} +
//! out_bias`, with `c` the index along the channel axis. The Threshold op may carry a third
//! operand, a direction per channel: -1 counts `x <= T[c, i]` instead (a channel whose folded
//! float chain was decreasing).

use super::{f32_result, floats, numel};
use crate::op::ThresholdAttrs;
use crate::tensor::Tensor;

/// Counts the thresholds each element reaches. The count is exact in f32 (at most 2^24
/// thresholds matter in practice), then scaled and biased in f32.
pub(super) fn multithreshold(
    attrs: &ThresholdAttrs,
    x: &[&Tensor],
    out: &[usize],
) -> Result<Tensor, String> {
    let data = floats(x[0]);
    let thresholds = floats(x[1]);
    let shape = x[0].shape();
    let axis = attrs.channel_axis;
    let channels = *shape
        .get(axis)
        .ok_or_else(|| format!("channel axis {axis} out of range"))?;
    let &[rows, n] = x[1].shape() else {
        return Err(format!(
            "thresholds have shape {:?}, expected (C, N)",
            x[1].shape()
        ));
    };
    if rows != 1 && rows != channels {
        return Err(format!("{rows} threshold rows for {channels} channels"));
    }
    let descending: Vec<bool> = match x.get(2) {
        None => vec![false; channels],
        Some(d) if d.len() == channels => floats(d).iter().map(|&s| s < 0.0).collect(),
        Some(d) => return Err(format!("{} directions for {channels} channels", d.len())),
    };
    let inner = numel(&shape[axis + 1..]);
    let y = data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let channel = (i / inner) % channels;
            let row = if rows == 1 { 0 } else { channel };
            let row = &thresholds[row * n..(row + 1) * n];
            let reached = if descending[channel] {
                row.iter().filter(|&&t| v <= t).count()
            } else {
                row.iter().filter(|&&t| v >= t).count()
            };
            attrs.out_scale * reached as f32 + attrs.out_bias
        })
        .collect();
    f32_result(out, y)
}

#[cfg(test)]
mod tests {
    use crate::interp::eval;
    use crate::op::{Op, ThresholdAttrs};
    use crate::tensor::Tensor;
    use crate::types::{ElemType, IntType};

    fn attrs(out_scale: f32, out_bias: f32, channel_axis: usize) -> ThresholdAttrs {
        ThresholdAttrs {
            out_scale,
            out_bias,
            out_type: ElemType::Int(IntType::Signed(2)),
            channel_axis,
        }
    }

    #[test]
    fn per_channel_thresholds_nchw() {
        // x (1, 2, 2): channel 0 thresholds [0, 1], channel 1 thresholds [-1, 5].
        let x = Tensor::f32(vec![1, 2, 2], vec![0.0, 1.0, -1.0, 4.9]);
        let t = Tensor::f32(vec![2, 2], vec![0.0, 1.0, -1.0, 5.0]);
        let out = eval(&Op::MultiThreshold(attrs(1.0, 0.0, 1)), &[&x, &t]).unwrap();
        // `>=`: 0 reaches 0 (1), 1 reaches both (2), -1 reaches -1 (1), 4.9 reaches -1 only (1).
        assert_eq!(out[0].as_f32().unwrap(), &[1.0, 2.0, 1.0, 1.0]);
    }

    #[test]
    fn shared_thresholds_scale_and_bias() {
        // Bipolar output: out = 2 * count - 1, one threshold at 0 for every channel.
        let x = Tensor::f32(vec![1, 3], vec![-0.5, 0.0, 7.0]);
        let t = Tensor::f32(vec![1, 1], vec![0.0]);
        let out = eval(&Op::MultiThreshold(attrs(2.0, -1.0, 1)), &[&x, &t]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[-1.0, 1.0, 1.0]);
    }

    #[test]
    fn channels_last_integer_threshold() {
        // NHWC-style (1, 2, 2) with the channels on axis 2; i64 thresholds on an accumulator.
        let acc = Tensor::f32(vec![1, 2, 2], vec![3.0, 3.0, -4.0, 0.0]);
        let t = Tensor::i64(vec![2, 3], vec![-2, 0, 2, 1, 3, 5]);
        let out = eval(&Op::Threshold(attrs(1.0, 0.0, 2)), &[&acc, &t]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[3.0, 2.0, 0.0, 0.0]);
    }

    #[test]
    fn descending_channels_count_from_above() {
        // Channel 0 ascending (acc >= 2), channel 1 descending (acc <= 2).
        let acc = Tensor::f32(vec![1, 2, 3], vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        let t = Tensor::f32(vec![2, 1], vec![2.0, 2.0]);
        let d = Tensor::f32(vec![2], vec![1.0, -1.0]);
        let out = eval(&Op::Threshold(attrs(2.0, -1.0, 1)), &[&acc, &t, &d]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[-1.0, 1.0, 1.0, 1.0, 1.0, -1.0]);
    }

    #[test]
    fn bad_thresholds_are_errors() {
        let x = Tensor::f32(vec![1, 3], vec![0.0; 3]);
        let t = Tensor::f32(vec![2, 1], vec![0.0; 2]);
        assert!(eval(&Op::MultiThreshold(attrs(1.0, 0.0, 1)), &[&x, &t]).is_err());
    }
}
