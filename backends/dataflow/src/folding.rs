//! Folding: how much of each layer runs in parallel.
//!
//! A matrix-vector unit computes PE output channels at once, each taking SIMD inputs per
//! cycle (`MH % PE == 0`, `MW % SIMD == 0`, and `C % SIMD == 0` behind a window generator,
//! which then moves SIMD channels per beat too); the other layers move `lanes` elements per
//! beat (`channels % lanes == 0`). A layer's cycles per frame fall as its parallelism grows,
//! and its resources grow.
//!
//! The automatic folding gives every layer the cheapest parallelism whose cycles per frame
//! meet a target, so that no layer is faster than the slowest must be. The target comes from
//! `--fps` at the clock, or, without one, is the fastest whose estimated resources fit the
//! part (70% of its LUTs, 80% of its block RAM and DSPs, leaving room for the shell). A folding
//! file sets layers by name (`bnnc inspect` names them); the layers it leaves out are folded
//! to match the slowest layer it sets.
//!
//! Between a producer whose beats are not its reader's, a converter regroups the elements.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::estimate::{cost, mvau_cost, window_cost, Cost};
use crate::part::Part;
use crate::plan::{Layer, LayerKind, Mvau, Plan, Stream, Window};
use crate::PlanError;

/// Parallelism of one layer, as a folding file gives it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fold {
    pub pe: Option<usize>,
    pub simd: Option<usize>,
    pub lanes: Option<usize>,
}

/// A folding file: layer name to parallelism.
pub type Folding = BTreeMap<String, Fold>;

/// What decides the folding.
#[derive(Clone, Debug)]
pub enum FoldingGoal {
    /// Every layer at most this many cycles per frame.
    Cycles(u64),
    /// As fast as fits the part.
    FitPart(Part),
}

/// Reads a folding file: `{"Conv_1": {"PE": 4, "SIMD": 16}, "MaxPool_0": {"lanes": 2}}`
/// (keys case-insensitive).
pub fn parse_folding(text: &str) -> Result<Folding, PlanError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| PlanError::Options(format!("not JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| PlanError::Options("expected an object of layer names".into()))?;
    let mut folding = Folding::new();
    for (layer, v) in object {
        let fields = v.as_object().ok_or_else(|| {
            PlanError::Options(format!(
                "layer '{layer}': expected an object like {{\"PE\": 4}}"
            ))
        })?;
        let mut fold = Fold::default();
        for (key, n) in fields {
            // Figures `bnnc build` writes beside them for the reader.
            if matches!(key.to_ascii_lowercase().as_str(), "cycles" | "kind") {
                continue;
            }
            let n = n.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                PlanError::Options(format!("layer '{layer}': {key} must be a positive integer"))
            })? as usize;
            match key.to_ascii_lowercase().as_str() {
                "pe" => fold.pe = Some(n),
                "simd" => fold.simd = Some(n),
                "lanes" => fold.lanes = Some(n),
                _ => {
                    return Err(PlanError::Options(format!(
                        "layer '{layer}': unknown key '{key}' (PE, SIMD, lanes)"
                    )))
                }
            }
        }
        folding.insert(layer.clone(), fold);
    }
    Ok(folding)
}

/// The plan's folding as a file `parse_folding` reads back (with each layer's kind and cycles
/// for the reader).
pub fn folding_json(plan: &Plan) -> Value {
    let mut out = serde_json::Map::new();
    for layer in &plan.layers {
        let cycles = cost(plan, layer).cycles;
        let entry = match &layer.kind {
            LayerKind::Mvau(m) => {
                json!({"kind": layer.kind.name(), "PE": m.pe, "SIMD": m.simd, "cycles": cycles})
            }
            LayerKind::Pool(p) => json!({"kind": "pool", "lanes": p.lanes, "cycles": cycles}),
            LayerKind::Threshold(t) => {
                json!({"kind": "threshold", "lanes": t.lanes, "cycles": cycles})
            }
            LayerKind::Elementwise(e) => {
                json!({"kind": "elementwise", "lanes": e.lanes, "cycles": cycles})
            }
            _ => continue,
        };
        out.insert(layer.name.clone(), entry);
    }
    Value::Object(out)
}

/// The widest beat (or weight word) in bits: ap_int's limit in Vitis is 4096, and a converter
/// holds two beats.
pub const MAX_BEAT_BITS: usize = 2048;

/// The divisors of `n`, ascending.
fn divisors(n: usize) -> Vec<usize> {
    (1..=n.max(1))
        .filter(|d| n.max(1).is_multiple_of(*d))
        .collect()
}

/// The window generator feeding layer `i`, if any.
fn window_of(layers: &[Layer], i: usize) -> Option<usize> {
    let input = *layers[i].inputs.first()?;
    layers
        .iter()
        .position(|l| matches!(l.kind, LayerKind::Window(_)) && l.outputs.contains(&input))
}

/// The parallelism chosen for one layer: `(PE, SIMD)` or `(lanes, lanes)`.
type Choice = (usize, usize);

/// Cycles and cost of layer `i` (with its window generator) at `choice`, without changing it.
fn cost_at(plan: &Plan, i: usize, (a, b): Choice) -> Cost {
    let layer = &plan.layers[i];
    match &layer.kind {
        LayerKind::Mvau(m) => {
            let mut c = mvau_cost(m, a, b);
            if let Some(w) = window_of(&plan.layers, i) {
                if let LayerKind::Window(win) = &plan.layers[w].kind {
                    let wc = window_cost(win, b);
                    c.cycles = c.cycles.max(wc.cycles);
                    c.luts += wc.luts;
                    c.bram18 += wc.bram18;
                }
            }
            c
        }
        kind => {
            let mut kind = kind.clone();
            set_layer_lanes(&mut kind, a);
            let trial = Layer {
                kind,
                ..layer.clone()
            };
            cost(plan, &trial)
        }
    }
}

/// The choices a layer may take, with the constraints.
fn candidates(plan: &Plan, i: usize) -> Vec<Choice> {
    match &plan.layers[i].kind {
        LayerKind::Mvau(m) => {
            let channels = window_of(&plan.layers, i).and_then(|w| match &plan.layers[w].kind {
                LayerKind::Window(win) => Some(win.geometry.channels),
                _ => None,
            });
            let in_bits = m.input.bits().max(m.weight.bits()) as usize;
            let simds: Vec<usize> = divisors(m.mw)
                .into_iter()
                .filter(|s| channels.is_none_or(|c| c % s == 0) && s * in_bits <= MAX_BEAT_BITS)
                .collect();
            let out_bits = m.output().bits() as usize;
            divisors(m.mh)
                .into_iter()
                .filter(|pe| pe * out_bits <= MAX_BEAT_BITS)
                .flat_map(|pe| simds.iter().map(move |&simd| (pe, simd)))
                .collect()
        }
        kind => {
            let bits = plan.streams[plan.layers[i].outputs[0]].encoding.bits() as usize;
            lanes_extent(kind).map_or_else(Vec::new, |c| {
                divisors(c)
                    .into_iter()
                    .filter(|l| l * bits <= MAX_BEAT_BITS)
                    .map(|l| (l, l))
                    .collect()
            })
        }
    }
}

/// For every foldable layer the file does not set: its cheapest choice meeting `target`
/// (the fastest where none does).
fn choose(plan: &Plan, target: u64, fixed: &Folding) -> Vec<Option<Choice>> {
    let mut choices: Vec<Option<Choice>> = vec![None; plan.layers.len()];
    for i in 0..plan.layers.len() {
        if fixed.contains_key(&plan.layers[i].name) {
            continue;
        }
        // The converter a choice needs in front (its producer's beats are decided).
        let feeding = feeding_lanes(plan, &choices, fixed, i);
        let elements = plan.layers[i]
            .inputs
            .first()
            .map_or(0, |&s| plan.streams[s].elements() as u64);
        let mut best: Option<(bool, u64, u64, Choice)> = None;
        for choice in candidates(plan, i) {
            let mut c = cost_at(plan, i, choice);
            if let Some(have) = feeding.filter(|&h| h != choice.1) {
                c.cycles = c.cycles.max(
                    elements
                        .div_ceil(have as u64)
                        .max(elements.div_ceil(choice.1 as u64))
                        + 1,
                );
            }
            let meets = c.cycles <= target;
            // Meeting the target, then fewest LUTs; else fewest cycles.
            let key = if meets {
                (c.luts, c.cycles)
            } else {
                (c.cycles, c.luts)
            };
            let better = match best {
                None => true,
                Some((m, k1, k2, _)) => (meets && !m) || (meets == m && key < (k1, k2)),
            };
            if better {
                best = Some((meets, key.0, key.1, choice));
            }
        }
        choices[i] = best.map(|b| b.3);
    }
    choices
}

/// The beats layer `i` will be fed at (for a matrix-vector unit behind a window generator,
/// the window's input), as chosen so far: `None` for the top's input, which takes any.
fn feeding_lanes(
    plan: &Plan,
    choices: &[Option<Choice>],
    fixed: &Folding,
    i: usize,
) -> Option<usize> {
    let reader = window_of(&plan.layers, i).unwrap_or(i);
    let mut stream = *plan.layers[reader].inputs.first()?;
    loop {
        let p = plan
            .layers
            .iter()
            .position(|l| l.outputs.contains(&stream))?;
        let layer = &plan.layers[p];
        let chosen = if fixed.contains_key(&layer.name) {
            None
        } else {
            choices[p]
        };
        return Some(match &layer.kind {
            LayerKind::Duplicate { .. } => {
                stream = layer.inputs[0];
                continue;
            }
            LayerKind::Mvau(m) => chosen.map_or(m.pe, |c| c.0),
            kind => chosen.map_or(kind.output_lanes(), |c| c.0),
        });
    }
}

/// Sets the choices on the plan's layers (and window generators).
fn apply(plan: &mut Plan, choices: &[Option<Choice>]) {
    for (i, choice) in choices.iter().enumerate() {
        let Some((a, b)) = *choice else {
            continue;
        };
        let window = window_of(&plan.layers, i);
        match &mut plan.layers[i].kind {
            LayerKind::Mvau(m) => {
                m.pe = a;
                m.simd = b;
                if let Some(w) = window {
                    if let LayerKind::Window(win) = &mut plan.layers[w].kind {
                        win.simd = b;
                    }
                }
            }
            kind => set_layer_lanes(kind, a),
        }
    }
}

/// The smallest target whose folding fits the part, by bisection between full parallelism
/// and none.
fn fitting_target(plan: &Plan, part: &Part) -> u64 {
    let total = |choices: &[Option<Choice>]| {
        let mut sum = Cost::default();
        for (i, layer) in plan.layers.iter().enumerate() {
            let c = match choices[i] {
                Some(choice) => cost_at(plan, i, choice),
                None if matches!(layer.kind, LayerKind::Window(_)) => Cost::default(),
                None => cost(plan, layer),
            };
            sum.luts += c.luts;
            sum.bram18 += c.bram18;
            sum.dsps += c.dsps;
            sum.cycles = sum.cycles.max(c.cycles);
        }
        sum
    };
    let fits = |target: u64| {
        let c = total(&choose(plan, target, &Folding::new()));
        c.luts * 10 <= part.luts * 7
            && c.bram18 * 10 <= part.bram18 * 8
            && c.dsps * 10 <= part.dsps * 8
    };
    let slowest = total(&choose(plan, u64::MAX, &Folding::new()))
        .cycles
        .max(1);
    if !fits(slowest) {
        return slowest;
    }
    let (mut lo, mut hi) = (1u64, slowest);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    hi
}

/// Checks a requested fold of a matrix-vector unit (and its window generator).
fn check_mvau(
    layer: &Layer,
    m: &Mvau,
    window: Option<&Window>,
    pe: usize,
    simd: usize,
) -> Result<(), PlanError> {
    let fail = |reason: String| {
        Err(PlanError::Folding {
            layer: layer.name.clone(),
            reason,
        })
    };
    if !m.mh.is_multiple_of(pe) {
        return fail(format!(
            "PE {pe} does not divide MH {} (its output channels)",
            m.mh
        ));
    }
    let in_bits = m.input.bits().max(m.weight.bits()) as usize;
    if simd * in_bits > MAX_BEAT_BITS || pe * m.output().bits() as usize > MAX_BEAT_BITS {
        return fail(format!(
            "PE {pe} and SIMD {simd} make words wider than {MAX_BEAT_BITS} bits"
        ));
    }
    if !m.mw.is_multiple_of(simd) {
        return fail(format!(
            "SIMD {simd} does not divide MW {} (its inputs per output)",
            m.mw
        ));
    }
    if let Some(w) = window {
        if w.geometry.channels % simd != 0 {
            return fail(format!(
                "SIMD {simd} does not divide its input's {} channels (the window generator moves SIMD channels per beat)",
                w.geometry.channels
            ));
        }
    }
    Ok(())
}

/// Folds every layer of `plan` for `goal`, with the layers `fixed` sets as given.
pub(crate) fn fold(plan: &mut Plan, goal: &FoldingGoal, fixed: &Folding) -> Result<(), PlanError> {
    for name in fixed.keys() {
        let foldable = plan.layer(name).is_some_and(|l| {
            matches!(l.kind, LayerKind::Mvau(_)) || lanes_extent(&l.kind).is_some()
        });
        if !foldable {
            return Err(PlanError::Options(format!(
                "no layer '{name}' to fold (the layers are: {})",
                plan.layers
                    .iter()
                    .filter(
                        |l| matches!(l.kind, LayerKind::Mvau(_)) || lanes_extent(&l.kind).is_some()
                    )
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    apply_fixed(plan, fixed)?;
    let target = match goal {
        FoldingGoal::Cycles(t) if fixed.is_empty() => *t,
        FoldingGoal::Cycles(t) => (*t).max(slowest_fixed(plan, fixed)),
        FoldingGoal::FitPart(_) if !fixed.is_empty() => slowest_fixed(plan, fixed),
        FoldingGoal::FitPart(part) => fitting_target(plan, part),
    };
    let choices = choose(plan, target, fixed);
    apply(plan, &choices);
    set_lanes(plan);
    insert_converters(plan);
    Ok(())
}

/// The most cycles of a layer the folding file sets.
fn slowest_fixed(plan: &Plan, fixed: &Folding) -> u64 {
    plan.layers
        .iter()
        .enumerate()
        .filter(|(_, l)| fixed.contains_key(&l.name))
        .map(|(i, l)| match &l.kind {
            LayerKind::Mvau(m) => cost_at(plan, i, (m.pe, m.simd)).cycles,
            _ => cost(plan, l).cycles,
        })
        .max()
        .unwrap_or(1)
}

/// Applies the folding file, checking each constraint.
fn apply_fixed(plan: &mut Plan, fixed: &Folding) -> Result<(), PlanError> {
    let mut choices = vec![None; plan.layers.len()];
    for (i, layer) in plan.layers.iter().enumerate() {
        let Some(fold) = fixed.get(&layer.name) else {
            continue;
        };
        let wrong = |what: &str| PlanError::Folding {
            layer: layer.name.clone(),
            reason: format!("{what} does not apply to a {} layer", layer.kind.name()),
        };
        match &layer.kind {
            LayerKind::Mvau(m) => {
                if fold.lanes.is_some() {
                    return Err(wrong("lanes"));
                }
                let window = window_of(&plan.layers, i).and_then(|w| match &plan.layers[w].kind {
                    LayerKind::Window(win) => Some(win),
                    _ => None,
                });
                let (pe, simd) = (fold.pe.unwrap_or(m.pe), fold.simd.unwrap_or(m.simd));
                check_mvau(layer, m, window, pe, simd)?;
                choices[i] = Some((pe, simd));
            }
            kind => {
                if fold.pe.is_some() || fold.simd.is_some() {
                    return Err(wrong("PE or SIMD"));
                }
                let channels = lanes_extent(kind).ok_or_else(|| wrong("lanes"))?;
                let lanes = fold.lanes.unwrap_or(1);
                if channels % lanes != 0 {
                    return Err(PlanError::Folding {
                        layer: layer.name.clone(),
                        reason: format!("lanes {lanes} do not divide its {channels} channels"),
                    });
                }
                let bits = plan.streams[layer.outputs[0]].encoding.bits() as usize;
                if lanes * bits > MAX_BEAT_BITS {
                    return Err(PlanError::Folding {
                        layer: layer.name.clone(),
                        reason: format!("{lanes} lanes make beats wider than {MAX_BEAT_BITS} bits"),
                    });
                }
                choices[i] = Some((lanes, lanes));
            }
        }
    }
    apply(plan, &choices);
    Ok(())
}

/// Channels whose divisors a layer's lanes may be (`None`: no lanes to choose).
fn lanes_extent(kind: &LayerKind) -> Option<usize> {
    match kind {
        LayerKind::Pool(p) => Some(p.geometry.channels),
        LayerKind::Threshold(t) => Some(t.channels),
        LayerKind::Elementwise(e) => Some(e.channels),
        _ => None,
    }
}

fn set_layer_lanes(kind: &mut LayerKind, lanes: usize) {
    match kind {
        LayerKind::Pool(p) => p.lanes = lanes,
        LayerKind::Threshold(t) => t.lanes = lanes,
        LayerKind::Elementwise(e) => e.lanes = lanes,
        _ => {}
    }
}

impl LayerKind {
    /// Elements per beat the layer reads.
    pub fn input_lanes(&self) -> usize {
        match self {
            LayerKind::Mvau(m) => m.simd,
            LayerKind::Window(w) => w.simd,
            LayerKind::Pool(p) => p.lanes,
            LayerKind::Threshold(t) => t.lanes,
            LayerKind::Elementwise(e) => e.lanes,
            LayerKind::Duplicate { lanes } => *lanes,
            LayerKind::Convert { from, .. } => *from,
        }
    }

    /// Elements per beat the layer writes.
    pub fn output_lanes(&self) -> usize {
        match self {
            LayerKind::Mvau(m) => m.pe,
            LayerKind::Convert { to, .. } => *to,
            other => other.input_lanes(),
        }
    }
}

/// Sets every stream's lanes from its producer (the input port's from its reader); a
/// duplicate moves its input's beats as they are.
fn set_lanes(plan: &mut Plan) {
    let input = plan.input.stream;
    let reader_lanes = |plan: &Plan, s: usize| {
        plan.layers
            .iter()
            .find(|l| l.inputs.contains(&s))
            .map(|l| l.kind.input_lanes())
    };
    for i in 0..plan.layers.len() {
        if let LayerKind::Duplicate { .. } = plan.layers[i].kind {
            let s = plan.layers[i].inputs[0];
            let lanes = if s == input {
                let first_copy = plan.layers[i].outputs[0];
                reader_lanes(plan, first_copy).unwrap_or(1)
            } else {
                plan.streams[s].lanes
            };
            plan.layers[i].kind = LayerKind::Duplicate { lanes };
        }
        let lanes = plan.layers[i].kind.output_lanes();
        for &s in &plan.layers[i].outputs.clone() {
            plan.streams[s].lanes = lanes;
        }
    }
    plan.streams[input].lanes = reader_lanes(plan, input).unwrap_or(1);
}

/// Puts a converter wherever a stream's beats are not what its reader takes.
fn insert_converters(plan: &mut Plan) {
    let mut i = 0;
    while i < plan.layers.len() {
        let want = plan.layers[i].kind.input_lanes();
        for k in 0..plan.layers[i].inputs.len() {
            let s = plan.layers[i].inputs[k];
            let have = plan.streams[s].lanes;
            if have == want {
                continue;
            }
            let converted = Stream {
                name: format!("{}.{want}", plan.streams[s].name),
                lanes: want,
                ..plan.streams[s].clone()
            };
            plan.streams.push(converted);
            let out = plan.streams.len() - 1;
            plan.layers[i].inputs[k] = out;
            let name = format!("{}.convert{k}", plan.layers[i].name);
            plan.layers.insert(
                i,
                Layer {
                    name,
                    nodes: Vec::new(),
                    kind: LayerKind::Convert {
                        from: have,
                        to: want,
                    },
                    inputs: vec![s],
                    outputs: vec![out],
                },
            );
            i += 1;
        }
        i += 1;
    }
}
