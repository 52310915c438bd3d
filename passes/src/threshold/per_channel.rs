//! Constants as per-channel vectors along axis 1, the chain's channel axis.

use bnnc_ir::Tensor;

use super::PerChannel;

/// The shape of a constant of `channels` values that broadcasts along axis 1 of a value of
/// rank `rank` (numpy aligns shapes right): `(C, 1, ...)`, or `(C)` for a matrix.
pub fn channel_shape(channels: usize, rank: usize) -> Vec<usize> {
    let mut shape = vec![channels];
    shape.resize(rank.saturating_sub(1).max(1), 1);
    shape
}

/// The values of constant `t` for each channel of a tensor of shape `x`: one value when `t`
/// has one element, else the values along axis 1 of `x` when that is the only axis along
/// which `t` (right-aligned against `x`, as numpy broadcasts) varies.
pub fn per_channel(t: &Tensor, x: &[usize], what: &str) -> Result<PerChannel, String> {
    let values = t.to_f32_vec();
    if values.len() == 1 {
        return Ok(PerChannel(values));
    }
    let shape = t.shape();
    if x.len() < 2 || shape.len() > x.len() {
        return Err(format!(
            "{what} of shape {shape:?} is not per channel for a value of shape {x:?}"
        ));
    }
    let offset = x.len() - shape.len();
    let varies_only_on_channels = shape
        .iter()
        .enumerate()
        .all(|(i, &d)| d == 1 || (offset + i == 1 && d == x[1]));
    if !varies_only_on_channels {
        return Err(format!(
            "{what} of shape {shape:?} varies along other axes than the channels (axis 1) of \
             {x:?}"
        ));
    }
    // One axis varies, so row-major order is channel order.
    Ok(PerChannel(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_vectors() {
        let c = |shape: &[usize]| Tensor::f32(shape.to_vec(), vec![0.5; shape.iter().product()]);
        assert_eq!(per_channel(&c(&[1]), &[1, 4], "s").unwrap().len(), 1);
        assert_eq!(per_channel(&c(&[4]), &[1, 4], "s").unwrap().len(), 4);
        assert_eq!(
            per_channel(&c(&[4, 1, 1]), &[1, 4, 3, 3], "s")
                .unwrap()
                .len(),
            4
        );
        assert_eq!(
            per_channel(&c(&[1, 4, 1]), &[1, 4, 1], "s").unwrap().len(),
            4
        );
        assert!(per_channel(&c(&[3]), &[1, 4, 3, 3], "s").is_err());
        assert!(per_channel(&c(&[4]), &[1, 4, 3, 3], "s").is_err());
    }
}
