//! The plan's own semantics: each layer on whole frames of integers (or f32 values), as the
//! hardware computes them. Tests run it against the interpreter; the generated designs are
//! checked against the interpreter in simulation, so this is where a lowering bug shows first.

use std::collections::HashMap;

use crate::plan::{Decode, ElementOp, Encoding, LayerKind, Operand, Plan};

/// One frame of a stream: integers, or f32 values for f32 streams.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Ints(Vec<i64>),
    Floats(Vec<f32>),
}

impl Frame {
    fn ints(&self) -> Result<&[i64], String> {
        match self {
            Frame::Ints(v) => Ok(v),
            Frame::Floats(_) => Err("an f32 frame where integers were expected".into()),
        }
    }

    /// The f32 value of element `s` in `slot`.
    fn value(&self, s: usize, slot: usize, decode: &Decode) -> f32 {
        match self {
            Frame::Ints(v) => decode.value(v[s], slot),
            Frame::Floats(v) => v[s],
        }
    }
}

/// Runs `plan` on the top's input frame; returns the top's output frame.
pub fn simulate(plan: &Plan, input: &[i64]) -> Result<Frame, String> {
    let mut frames: HashMap<usize, Frame> = HashMap::new();
    frames.insert(plan.input.stream, Frame::Ints(input.to_vec()));
    for layer in &plan.layers {
        let inputs: Vec<&Frame> = layer
            .inputs
            .iter()
            .map(|s| {
                frames
                    .get(s)
                    .ok_or(format!("layer '{}' reads an unwritten stream", layer.name))
            })
            .collect::<Result<_, _>>()?;
        let out = match &layer.kind {
            LayerKind::Window(w) => {
                let x = inputs[0].ints()?;
                let g = &w.geometry;
                let mut y = Vec::with_capacity(g.out_hw[0] * g.out_hw[1] * g.taps() * g.channels);
                for oy in 0..g.out_hw[0] {
                    for ox in 0..g.out_hw[1] {
                        for ky in 0..g.kernel[0] {
                            for kx in 0..g.kernel[1] {
                                let tap = g.tap([oy, ox], [ky, kx]);
                                for c in 0..g.channels {
                                    y.push(tap.map_or(0, |[iy, ix]| {
                                        x[(iy * g.in_hw[1] + ix) * g.channels + c]
                                    }));
                                }
                            }
                        }
                    }
                }
                Frame::Ints(y)
            }
            LayerKind::Mvau(m) => {
                let x = inputs[0].ints()?;
                let mut out = Vec::with_capacity(m.pixels * m.mh);
                for p in 0..m.pixels {
                    let v = &x[p * m.mw..(p + 1) * m.mw];
                    for r in 0..m.mh {
                        let acc: i64 = v
                            .iter()
                            .zip(&m.weights[r * m.mw..(r + 1) * m.mw])
                            .map(|(a, w)| a * w)
                            .sum();
                        out.push(m.thresholds.as_ref().map_or(acc, |t| t.apply(acc, r)));
                    }
                }
                if let Some(pool) = &m.pool {
                    let mut pooled: Vec<Option<i64>> =
                        vec![None; pool.out_hw[0] * pool.out_hw[1] * m.mh];
                    for y in 0..pool.in_hw[0] {
                        for x in 0..pool.in_hw[1] {
                            let Some([py, px]) = pool.pooled(y, x) else {
                                continue;
                            };
                            for r in 0..m.mh {
                                let v = out[(y * pool.in_hw[1] + x) * m.mh + r];
                                let slot = &mut pooled[(py * pool.out_hw[1] + px) * m.mh + r];
                                *slot = Some(match *slot {
                                    None => v,
                                    Some(o) if pool.take_min[r] => o.min(v),
                                    Some(o) => o.max(v),
                                });
                            }
                        }
                    }
                    out = pooled
                        .into_iter()
                        .map(|v| v.ok_or("an empty pooling window"))
                        .collect::<Result<_, _>>()?;
                }
                Frame::Ints(out)
            }
            LayerKind::Pool(p) => {
                let x = inputs[0].ints()?;
                let g = &p.geometry;
                let mut y = Vec::new();
                for oy in 0..g.out_hw[0] {
                    for ox in 0..g.out_hw[1] {
                        for c in 0..g.channels {
                            let mut best: Option<i64> = None;
                            for ky in 0..g.kernel[0] {
                                for kx in 0..g.kernel[1] {
                                    if let Some([iy, ix]) = g.tap([oy, ox], [ky, kx]) {
                                        let v = x[(iy * g.in_hw[1] + ix) * g.channels + c];
                                        best = Some(match best {
                                            None => v,
                                            Some(b) if p.take_min[c] => b.min(v),
                                            Some(b) => b.max(v),
                                        });
                                    }
                                }
                            }
                            y.push(best.ok_or("a pooling window entirely in the padding")?);
                        }
                    }
                }
                Frame::Ints(y)
            }
            LayerKind::Threshold(t) => {
                let x = inputs[0].ints()?;
                Frame::Ints(
                    x.iter()
                        .enumerate()
                        .map(|(s, &v)| t.thresholds.apply(v, s % t.channels))
                        .collect(),
                )
            }
            LayerKind::Elementwise(e) => {
                let n = plan.streams[layer.outputs[0]].elements();
                let mut y_int = Vec::new();
                let mut y_float = Vec::new();
                for s in 0..n {
                    let slot = s % e.channels;
                    let mut results: Vec<f32> = Vec::with_capacity(e.ops.len());
                    let get = |o: &Operand, results: &[f32]| match o {
                        Operand::Input(i) => inputs[*i].value(s, slot, &e.inputs[*i].1),
                        Operand::Op(k) => results[*k],
                        Operand::Const(c) => c[slot % c.len()],
                    };
                    for op in &e.ops {
                        let v = match op {
                            ElementOp::Binary(b, p, q) => {
                                let (p, q) = (get(p, &results), get(q, &results));
                                match b {
                                    bnnc_ir::BinaryOp::Add => p + q,
                                    bnnc_ir::BinaryOp::Sub => p - q,
                                    bnnc_ir::BinaryOp::Mul => p * q,
                                    bnnc_ir::BinaryOp::Div => p / q,
                                    bnnc_ir::BinaryOp::Pow => p.powf(q),
                                    // Not lowered to hardware; IEEE minimum and maximum.
                                    bnnc_ir::BinaryOp::Min | bnnc_ir::BinaryOp::Max
                                        if p.is_nan() || q.is_nan() =>
                                    {
                                        f32::NAN
                                    }
                                    bnnc_ir::BinaryOp::Min => p.min(q),
                                    bnnc_ir::BinaryOp::Max => p.max(q),
                                }
                            }
                            ElementOp::Relu(x) => {
                                let x = get(x, &results);
                                if x > 0.0 {
                                    x
                                } else {
                                    0.0
                                }
                            }
                            ElementOp::Sign(x) => {
                                let x = get(x, &results);
                                if x > 0.0 {
                                    1.0
                                } else if x < 0.0 {
                                    -1.0
                                } else if x == 0.0 {
                                    0.0
                                } else {
                                    x
                                }
                            }
                            ElementOp::Clip(x, lo, hi) => {
                                let x = get(x, &results);
                                let x = if x < *lo { *lo } else { x };
                                if x > *hi {
                                    *hi
                                } else {
                                    x
                                }
                            }
                            ElementOp::Quant {
                                x,
                                scale,
                                zero,
                                min,
                                max,
                                bipolar,
                                rounding,
                            } => {
                                let (s, z) = (get(scale, &results), get(zero, &results));
                                let y = get(x, &results) / s + z;
                                let q = if *bipolar {
                                    if y >= 0.0 {
                                        1.0
                                    } else {
                                        -1.0
                                    }
                                } else {
                                    let y = if y > *max { *max } else { y };
                                    rounding.apply(if y < *min { *min } else { y })
                                };
                                (q - z) * s
                            }
                            ElementOp::BipolarQuant(x, scale) => {
                                (if get(x, &results) >= 0.0 { 1.0 } else { -1.0 })
                                    * get(scale, &results)
                            }
                        };
                        results.push(v);
                    }
                    let v = *results
                        .last()
                        .ok_or("an elementwise layer without operations")?;
                    if e.output == Encoding::F32 {
                        y_float.push(v);
                    } else {
                        y_int
                            .push((v / e.output_scale[slot % e.output_scale.len()]).round() as i64);
                    }
                }
                if e.output == Encoding::F32 {
                    Frame::Floats(y_float)
                } else {
                    Frame::Ints(y_int)
                }
            }
            LayerKind::Duplicate { .. } | LayerKind::Convert { .. } => inputs[0].clone(),
        };
        for &s in &layer.outputs {
            frames.insert(s, out.clone());
        }
    }
    frames
        .remove(&plan.output.stream)
        .ok_or_else(|| "no layer writes the output stream".into())
}
