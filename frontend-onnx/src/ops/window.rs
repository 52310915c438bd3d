//! The sliding window of Conv and the pools: strides, dilations and padding, with `auto_pad`
//! resolved to explicit pads against the input's static spatial extents.

use bnnc_ir::window::span;

use super::to_usize;
use crate::attributes::Attributes;

/// Strides, dilations and explicit pads (begins of every spatial axis, then ends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads: Vec<usize>,
}

/// Reads the window of a node with kernel `kernel` over spatial extents `input`.
pub fn window(attrs: &Attributes, kernel: &[usize], input: &[usize]) -> Result<Window, String> {
    let spatial = kernel.len();
    if input.len() != spatial {
        return Err(format!(
            "a {spatial}-d kernel over an input with {} spatial axes",
            input.len()
        ));
    }
    let strides = positive_list(attrs, "strides", spatial)?;
    let dilations = positive_list(attrs, "dilations", spatial)?;
    let pads = match attrs.string_or("auto_pad", "NOTSET")? {
        "NOTSET" => match attrs.ints("pads")? {
            None => vec![0; 2 * spatial],
            Some(p) if p.len() == 2 * spatial => p
                .iter()
                .map(|&v| to_usize(v, "a pad"))
                .collect::<Result<_, _>>()?,
            Some(p) => return Err(format!("{} pads for {spatial} spatial axes", p.len())),
        },
        "VALID" => vec![0; 2 * spatial],
        mode @ ("SAME_UPPER" | "SAME_LOWER") => {
            same_pads(kernel, input, &strides, &dilations, mode == "SAME_UPPER")?
        }
        other => return Err(format!("unknown auto_pad `{other}`")),
    };
    Ok(Window {
        strides,
        dilations,
        pads,
    })
}

/// An attribute of one positive integer per spatial axis, all 1 when absent.
fn positive_list(attrs: &Attributes, name: &str, spatial: usize) -> Result<Vec<usize>, String> {
    match attrs.ints(name)? {
        None => Ok(vec![1; spatial]),
        Some(v) if v.len() == spatial && v.iter().all(|&x| x >= 1) => {
            v.iter().map(|&x| to_usize(x, name)).collect()
        }
        Some(v) => Err(format!(
            "attribute `{name}` is {v:?}, expected {spatial} positive integers"
        )),
    }
}

/// `SAME_*` padding: the output has `ceil(input / stride)` positions, and the padding it needs
/// is split evenly, the odd cell going at the end (`SAME_UPPER`) or the beginning.
fn same_pads(
    kernel: &[usize],
    input: &[usize],
    strides: &[usize],
    dilations: &[usize],
    upper: bool,
) -> Result<Vec<usize>, String> {
    let spatial = kernel.len();
    let mut pads = vec![0; 2 * spatial];
    for axis in 0..spatial {
        let overflow = || "the window is too large".to_string();
        let out = input[axis].div_ceil(strides[axis]);
        if kernel[axis] == 0 {
            return Err("a kernel extent of 0".into());
        }
        let extent = span(kernel[axis], dilations[axis]).ok_or_else(overflow)?;
        let needed = out
            .saturating_sub(1)
            .checked_mul(strides[axis])
            .and_then(|n| n.checked_add(extent))
            .ok_or_else(overflow)?;
        let total = needed.saturating_sub(input[axis]);
        let (small, large) = (total / 2, total - total / 2);
        (pads[axis], pads[axis + spatial]) = if upper {
            (small, large)
        } else {
            (large, small)
        };
    }
    Ok(pads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding() {
        // 5 wide, kernel 3, stride 2: 3 outputs need 7 cells, so 2 pads split 1 / 1.
        assert_eq!(same_pads(&[3], &[5], &[2], &[1], true).unwrap(), vec![1, 1]);
        // 4 wide, kernel 3, stride 2: 2 outputs need 5 cells, 1 pad at the end (upper) or begin.
        assert_eq!(same_pads(&[3], &[4], &[2], &[1], true).unwrap(), vec![0, 1]);
        assert_eq!(
            same_pads(&[3], &[4], &[2], &[1], false).unwrap(),
            vec![1, 0]
        );
        // Dilation 2 makes a 3-tap kernel span 5 cells.
        assert_eq!(
            same_pads(&[3, 1], &[8, 8], &[1, 1], &[2, 1], true).unwrap(),
            vec![2, 0, 2, 0]
        );
        assert!(same_pads(&[0], &[4], &[1], &[1], true).is_err());
    }
}
