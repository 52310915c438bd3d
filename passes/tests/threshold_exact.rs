//! The proof of exactness of `bnnc_passes::threshold`: on random chains (BatchNorm with
//! negative, zero and tiny statistics, Mul/Div/Add/Sub by scalars and per-channel vectors, Relu)
//! and
//! random quantizers (1-bit and multi-bit), for EVERY accumulator of a random range,
//!
//! - the chain's f32 value equals what `bnnc_ir::interp::eval` computes on the real ops, bit
//!   for bit;
//! - the table's level equals the level of the direct evaluation;
//! - the table's output equals the interpreter's quantizer output (`==`: bit for bit except
//!   the sign of a zero, which the module docs explain);
//! - where the output is affine and shared by every channel, `Op::Threshold` run by the
//!   interpreter on the table gives the same outputs as the original ops.
//!
//! A chain that does not fold must be one the interpreter cannot compute finitely.

use std::cell::Cell;

use bnnc_ir::interp::eval;
use bnnc_ir::{BinaryOp, ElemType, Op, QuantAttrs, RoundingMode, Tensor, ThresholdAttrs};
use bnnc_passes::threshold::{
    fold_chain, ChainQuantizer, ChainStep, ChannelChain, FoldError, LevelOutput, PerChannel,
    ThresholdTable,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

// ---- the chain as interpreter ops ----

/// A chain constant as an operand against `x` of shape `(1, C, N)`: a scalar, or `(1, C, 1)`.
fn operand(v: &PerChannel) -> Tensor {
    match v.0[..] {
        [one] => Tensor::scalar(one),
        _ => Tensor::f32(vec![1, v.len(), 1], v.0.clone()),
    }
}

/// A BatchNorm statistic as its `(C)` operand.
fn bn_operand(v: &PerChannel, channels: usize) -> Tensor {
    let values = match v.0[..] {
        [one] => vec![one; channels],
        _ => v.0.clone(),
    };
    Tensor::f32(vec![channels], values)
}

fn run(op: Op, inputs: &[&Tensor]) -> Result<Tensor, TestCaseError> {
    let mut out = eval(&op, inputs).map_err(|e| TestCaseError::fail(format!("interp: {e}")))?;
    Ok(out.remove(0))
}

/// One step through the interpreter.
fn interpret_step(step: &ChainStep, x: &Tensor, channels: usize) -> Result<Tensor, TestCaseError> {
    let binary = |op: BinaryOp, a: &Tensor, b: &Tensor| run(Op::Binary(op), &[a, b]);
    match step {
        ChainStep::Mul(m) => binary(BinaryOp::Mul, x, &operand(m)),
        ChainStep::Div(d) => binary(BinaryOp::Div, x, &operand(d)),
        ChainStep::Add(a) => binary(BinaryOp::Add, x, &operand(a)),
        ChainStep::Sub(s) => binary(BinaryOp::Sub, x, &operand(s)),
        ChainStep::SubFrom(s) => binary(BinaryOp::Sub, &operand(s), x),
        ChainStep::BatchNorm {
            gamma,
            beta,
            mean,
            var,
            epsilon,
        } => {
            let p = [gamma, beta, mean, var].map(|v| bn_operand(v, channels));
            run(
                Op::BatchNorm { epsilon: *epsilon },
                &[x, &p[0], &p[1], &p[2], &p[3]],
            )
        }
        ChainStep::Relu => run(Op::Relu, &[x]),
    }
}

/// The quantizer through the interpreter.
fn interpret_quantizer(q: &ChainQuantizer, x: &Tensor) -> Result<Tensor, TestCaseError> {
    match q {
        ChainQuantizer::Bipolar { scale } => run(Op::BipolarQuant, &[x, &operand(scale)]),
        ChainQuantizer::Sign => run(Op::Sign, &[x]),
        ChainQuantizer::Quant {
            scale,
            zero_point,
            bits,
            signed,
            narrow,
            rounding,
        } => {
            let attrs = QuantAttrs {
                signed: *signed,
                narrow: *narrow,
                rounding: *rounding,
            };
            let bits = Tensor::scalar(f32::from(*bits));
            run(
                Op::Quant(attrs),
                &[x, &operand(scale), &operand(zero_point), &bits],
            )
        }
        ChainQuantizer::MultiThreshold {
            thresholds,
            out_scale,
            out_bias,
        } => {
            let n = thresholds.first().map_or(0, Vec::len);
            let t = Tensor::f32(vec![thresholds.len(), n], thresholds.concat());
            run(
                Op::MultiThreshold(threshold_attrs(*out_scale, *out_bias)),
                &[x, &t],
            )
        }
    }
}

fn threshold_attrs(out_scale: f32, out_bias: f32) -> ThresholdAttrs {
    ThresholdAttrs {
        out_scale,
        out_bias,
        out_type: ElemType::F32,
        channel_axis: 1,
    }
}

/// Every accumulator of `[lo, hi]` on every channel: shape `(1, C, N)`.
fn accumulators(lo: i64, hi: i64, channels: usize) -> Tensor {
    let row: Vec<f32> = (lo..=hi).map(|a| a as f32).collect();
    let n = row.len();
    Tensor::f32(vec![1, channels, n], row.repeat(channels))
}

fn f32s(t: &Tensor) -> Result<&[f32], TestCaseError> {
    t.as_f32()
        .ok_or_else(|| TestCaseError::fail("interp gave an i64 tensor"))
}

/// Equal as the module docs promise: the same bits, or two zeros.
fn same_output(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0)
}

// ---- one case ----

#[derive(Clone, Debug)]
struct Case {
    steps: Vec<ChainStep>,
    quantizer: ChainQuantizer,
    lo: i64,
    hi: i64,
    channels: usize,
}

/// Checks one case; `Ok(true)` if it folded, `Ok(false)` if it was (rightly) refused.
fn check(case: &Case) -> Result<bool, TestCaseError> {
    let Case {
        steps,
        quantizer,
        lo,
        hi,
        channels,
    } = case;
    let (lo, hi, channels) = (*lo, *hi, *channels);
    let x = accumulators(lo, hi, channels);
    let mut value = x.clone();
    // Where some step computed a non-finite value: a Relu turns NaN into +0, so the final
    // value alone does not show it.
    let mut non_finite = vec![false; x.len()];
    for step in steps {
        value = interpret_step(step, &value, channels)?;
        for (seen, v) in non_finite.iter_mut().zip(f32s(&value)?) {
            *seen |= !v.is_finite();
        }
    }
    let want = interpret_quantizer(quantizer, &value)?;
    let (value, want) = (f32s(&value)?, f32s(&want)?);
    let n = (hi - lo + 1) as usize;
    let table = match fold_chain(steps, quantizer, lo, hi, channels) {
        Ok(table) => table,
        Err(e) => {
            let seen: Vec<f32> = value
                .iter()
                .zip(&non_finite)
                .map(|(&v, &nf)| if nf { f32::NAN } else { v })
                .collect();
            refusal_is_justified(&e, case, &seen)?;
            return Ok(false);
        }
    };
    prop_assert_eq!(table.channels, channels);
    prop_assert_eq!(table.thresholds.len(), channels * (table.levels - 1));
    for c in 0..channels {
        let chain = ChannelChain::new(steps, quantizer, c, channels)
            .map_err(|e| TestCaseError::fail(format!("folded, yet the chain fails: {e}")))?;
        check_row(&table, c, lo, hi)?;
        for (i, acc) in (lo..=hi).enumerate() {
            let at = c * n + i;
            let v = chain.value(acc);
            prop_assert!(
                v.to_bits() == value[at].to_bits(),
                "channel {c}, acc {acc}: chain {v:e} vs interp {:e}",
                value[at]
            );
            let level = chain.level(acc);
            prop_assert_eq!(
                Some(table.level(c, acc)),
                level,
                "channel {}, acc {}",
                c,
                acc
            );
            let got = table.output_at(c, acc);
            prop_assert!(
                same_output(got, want[at]),
                "channel {c}, acc {acc}: table {got:e} vs interp {:e}",
                want[at]
            );
        }
    }
    check_threshold_op(&table, &x, want)?;
    Ok(true)
}

/// Row shape: sorted in the direction, thresholds within the range or its sentinels.
fn check_row(table: &ThresholdTable, c: usize, lo: i64, hi: i64) -> Result<(), TestCaseError> {
    let row = table.row(c);
    let sorted = if table.descending[c] {
        row.windows(2).all(|w| w[0] >= w[1])
    } else {
        row.windows(2).all(|w| w[0] <= w[1])
    };
    prop_assert!(sorted, "channel {c}: row {row:?} out of order");
    prop_assert!(
        row.iter().all(|&t| (lo - 1..=hi + 1).contains(&t)),
        "channel {c}: row {row:?} beyond [{lo} - 1, {hi} + 1]"
    );
    Ok(())
}

/// `Op::Threshold` through the interpreter, where its scalar out_scale / out_bias can carry
/// the table's outputs.
fn check_threshold_op(
    table: &ThresholdTable,
    x: &Tensor,
    want: &[f32],
) -> Result<(), TestCaseError> {
    let Some(([out_scale], [out_bias])) = table.output.affine() else {
        return Ok(());
    };
    if table.levels < 2 {
        return Ok(());
    }
    let t = Tensor::i64(
        vec![table.channels, table.levels - 1],
        table.thresholds.clone(),
    );
    let directions: Vec<f32> = table
        .descending
        .iter()
        .map(|&d| if d { -1.0 } else { 1.0 })
        .collect();
    let d = Tensor::f32(vec![table.channels], directions);
    let got = run(
        Op::Threshold(threshold_attrs(*out_scale, *out_bias)),
        &[x, &t, &d],
    )?;
    for (i, (&g, &w)) in f32s(&got)?.iter().zip(want).enumerate() {
        prop_assert!(
            same_output(g, w),
            "element {i}: Op::Threshold {g:e} vs the ops {w:e}"
        );
    }
    Ok(())
}

/// A refusal must point at something the interpreter cannot compute finitely.
fn refusal_is_justified(e: &FoldError, case: &Case, value: &[f32]) -> Result<(), TestCaseError> {
    match e {
        // A non-finite BatchNorm scale or shift makes every value non-finite; the chain
        // computes NaN at an end of the range.
        FoldError::NonFinite { .. } | FoldError::NotMonotone { .. } => {
            prop_assert!(
                value.iter().any(|v| !v.is_finite()),
                "refused ({e}), yet the interpreter computes finite values"
            );
        }
        FoldError::ZeroDivisor { .. } => {
            let zero = |v: &PerChannel| v.0.contains(&0.0);
            let divides_by_zero = case
                .steps
                .iter()
                .any(|s| matches!(s, ChainStep::Div(d) if zero(d)))
                || matches!(&case.quantizer, ChainQuantizer::Quant { scale, .. } if zero(scale));
            prop_assert!(divides_by_zero, "refused ({e}) without a zero divisor");
        }
        _ => prop_assert!(false, "unexpected refusal: {e}"),
    }
    Ok(())
}

// ---- strategies ----

/// Constants: ordinary values, and the ones that break closed forms (zeros of both signs,
/// tiny and huge magnitudes, values that are not dyadic).
fn constant() -> BoxedStrategy<f32> {
    prop_oneof![
        4 => -4.0f32..4.0,
        2 => prop::sample::select(vec![
            0.0f32, -0.0, 1e-30, -1e-30, 1e-45, -1e-45, 1.0, -1.0, 0.5, -2.0, 0.1, -0.3, 1e30,
            3.0, 1e-3,
        ]),
        1 => -1e4f32..1e4,
        1 => -1e-20f32..1e-20,
    ]
    .boxed()
}

/// A scalar, or one value per channel.
fn per_channel(channels: usize, value: BoxedStrategy<f32>) -> impl Strategy<Value = PerChannel> {
    prop_oneof![
        value.clone().prop_map(PerChannel::scalar),
        prop::collection::vec(value, channels).prop_map(PerChannel),
    ]
}

fn variance() -> BoxedStrategy<f32> {
    prop_oneof![
        4 => 0.0f32..10.0,
        2 => prop::sample::select(vec![0.0f32, -0.0, 1e-30, 1e-45, 1.0]),
        1 => 0.0f32..1e7,
        1 => -1.0f32..0.0,
    ]
    .boxed()
}

fn epsilon() -> BoxedStrategy<f32> {
    prop_oneof![
        prop::sample::select(vec![1e-5f32, 1e-3, 0.0, 1e-30, 1e-45, 1.0]),
        0.0f32..1.0,
    ]
    .boxed()
}

fn batchnorm(channels: usize) -> impl Strategy<Value = ChainStep> {
    (
        per_channel(channels, constant()),
        per_channel(channels, constant()),
        per_channel(channels, constant()),
        per_channel(channels, variance()),
        epsilon(),
    )
        .prop_map(|(gamma, beta, mean, var, epsilon)| ChainStep::BatchNorm {
            gamma,
            beta,
            mean,
            var,
            epsilon,
        })
}

/// Any step with any constants.
fn step(channels: usize) -> impl Strategy<Value = ChainStep> {
    let c = move || per_channel(channels, constant());
    prop_oneof![
        c().prop_map(ChainStep::Mul),
        c().prop_map(ChainStep::Div),
        c().prop_map(ChainStep::Add),
        c().prop_map(ChainStep::Sub),
        c().prop_map(ChainStep::SubFrom),
        batchnorm(channels),
        Just(ChainStep::Relu),
    ]
}

/// A BatchNorm whose statistics fit the range, as a trained one's do (so its boundaries fall
/// inside the range), after a scale multiply.
fn trained_batchnorm(channels: usize, k: f32) -> impl Strategy<Value = Vec<ChainStep>> {
    let alpha = prop_oneof![0.01f32..4.0, -4.0f32..-0.01];
    (alpha, 0.0f32..=1.0, 0.0f32..=1.0).prop_flat_map(move |(alpha, spread, var_frac)| {
        let reach = (alpha.abs() * k).max(1.0);
        let gamma = prop_oneof![4 => -3.0f32..3.0, 1 => Just(0.0f32), 1 => Just(1e-30f32)].boxed();
        let var = (reach * var_frac).powi(2);
        (
            per_channel(channels, gamma),
            per_channel(channels, (-2.0f32..2.0).boxed()),
            per_channel(channels, (-reach * spread..=reach * spread).boxed()),
            per_channel(channels, (var * 0.5..=var.max(f32::MIN_POSITIVE)).boxed()),
            epsilon(),
        )
            .prop_map(move |(gamma, beta, mean, var, epsilon)| {
                vec![
                    ChainStep::Mul(PerChannel::scalar(alpha)),
                    ChainStep::BatchNorm {
                        gamma,
                        beta,
                        mean,
                        var,
                        epsilon,
                    },
                ]
            })
    })
}

fn rounding() -> impl Strategy<Value = RoundingMode> {
    prop::sample::select(vec![
        RoundingMode::HalfEven,
        RoundingMode::Ceil,
        RoundingMode::Floor,
        RoundingMode::Up,
        RoundingMode::Down,
        RoundingMode::HalfUp,
        RoundingMode::HalfDown,
    ])
}

fn quant_scale() -> BoxedStrategy<f32> {
    prop_oneof![
        prop::sample::select(vec![
            1.0f32, 0.5, 0.25, 2.0, -1.0, 0.125, 0.1, 0.3, 1e-30, 0.0
        ]),
        0.01f32..2.0,
    ]
    .boxed()
}

fn quantizer(channels: usize) -> impl Strategy<Value = ChainQuantizer> {
    let mt_rows = prop_oneof![Just(1usize), Just(channels)];
    prop_oneof![
        2 => per_channel(channels, quant_scale()).prop_map(|scale| ChainQuantizer::Bipolar { scale }),
        1 => Just(ChainQuantizer::Sign),
        3 => (
            per_channel(channels, quant_scale()),
            per_channel(
                channels,
                prop::sample::select(vec![0.0f32, 0.0, 0.0, 1.0, -1.0, 0.5]).boxed(),
            ),
            1u8..=8,
            any::<bool>(),
            any::<bool>(),
            rounding(),
        )
            .prop_map(|(scale, zero_point, bits, signed, narrow, rounding)| {
                ChainQuantizer::Quant {
                    scale,
                    zero_point,
                    bits,
                    signed,
                    narrow,
                    rounding,
                }
            }),
        1 => (mt_rows, 0usize..=8, prop::sample::select(vec![1.0f32, 2.0, 0.5, -1.0, 0.3]), -2.0f32..2.0)
            .prop_flat_map(|(rows, n, out_scale, out_bias)| {
                let row = prop::collection::vec(-6.0f32..6.0, n);
                prop::collection::vec(row, rows).prop_map(move |thresholds| {
                    ChainQuantizer::MultiThreshold {
                        thresholds,
                        out_scale,
                        out_bias,
                    }
                })
            }),
    ]
}

fn range() -> impl Strategy<Value = (i64, i64)> {
    prop_oneof![
        (0i64..=3000).prop_map(|k| (-k, k)),
        (-3000i64..=3000, 0i64..=3000).prop_map(|(lo, len)| (lo, lo + len)),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=4, range()).prop_flat_map(|(channels, (lo, hi))| {
        let k = lo.abs().max(hi.abs()) as f32;
        let steps = prop_oneof![
            // A trained layer: scale, BatchNorm, sometimes a further step.
            3 => (trained_batchnorm(channels, k), prop::collection::vec(step(channels), 0..=1))
                .prop_map(|(mut steps, more)| {
                    steps.extend(more);
                    steps
                }),
            // Anything.
            2 => prop::collection::vec(step(channels), 0..=4),
        ];
        (steps, quantizer(channels)).prop_map(move |(steps, quantizer)| Case {
            steps,
            quantizer,
            lo,
            hi,
            channels,
        })
    })
}

proptest! {
    #![proptest_config(Config::with_cases(256))]

    #[test]
    fn thresholds_equal_the_interpreter_for_every_accumulator(case in case()) {
        check(&case)?;
    }

    /// The quantizers alone on arbitrary floats and on the values where rounding modes differ
    /// (`ys` are halves and quarters of the Quant's integer grid, times its scale): the
    /// level's output equals the interpreter's.
    #[test]
    fn quantizers_agree_with_the_interpreter(
        q in quantizer(1),
        ys in prop::collection::vec(
            prop_oneof![
                -300.0f32..300.0,
                (-40i32..=40).prop_map(|i| i as f32 / 4.0),
                (-1200i32..1200).prop_map(|i| i as f32 / 4.0),
                Just(0.49999997f32),
                Just(-0.49999997f32),
            ],
            1..64,
        ),
    ) {
        let chain = match ChannelChain::new(&[], &q, 0, 1) {
            Ok(chain) => chain,
            // Only a zero Quant scale is refused here.
            Err(FoldError::ZeroDivisor { .. }) => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
        };
        let xs: Vec<f32> = match &q {
            ChainQuantizer::Quant { scale, .. } => ys.iter().map(|y| y * scale.0[0]).collect(),
            _ => ys,
        };
        let x = Tensor::f32(vec![1, 1, xs.len()], xs.clone());
        let want = interpret_quantizer(&q, &x)?;
        for (&x, &w) in xs.iter().zip(f32s(&want)?) {
            let level = chain.level_of_value(x);
            prop_assert!(level.is_some_and(|l| l < chain.levels()), "x {x}: level {level:?}");
            let got = level.map(|l| chain.output(l)).unwrap_or(f32::NAN);
            prop_assert!(same_output(got, w), "x {x}: level {level:?} gives {got:e}, interp {w:e}");
        }
    }
}

/// Accumulator ranges as wide as i32 (beyond 2^24, where `acc as f32` rounds) cannot be
/// checked exhaustively; instead, each threshold must be exactly where the level changes.
fn check_wide(case: &Case, samples: &[i64]) -> Result<(), TestCaseError> {
    let Ok(table) = fold_chain(
        &case.steps,
        &case.quantizer,
        case.lo,
        case.hi,
        case.channels,
    ) else {
        return Ok(());
    };
    for c in 0..case.channels {
        let chain = ChannelChain::new(&case.steps, &case.quantizer, c, case.channels)
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
        check_row(&table, c, case.lo, case.hi)?;
        let level = |acc: i64| chain.level(acc).unwrap_or(usize::MAX);
        let in_range = |acc: i64| (case.lo..=case.hi).contains(&acc);
        for (i, &t) in table.row(c).iter().enumerate() {
            let k = i + 1;
            // Level k at the threshold, below it on its outer side.
            let outside = if table.descending[c] { t + 1 } else { t - 1 };
            if in_range(t) {
                prop_assert!(
                    level(t) >= k,
                    "channel {c}: level {} at T_{k} = {t}",
                    level(t)
                );
            }
            if in_range(outside) {
                prop_assert!(
                    level(outside) < k,
                    "channel {c}: level {} beside T_{k} = {t}",
                    level(outside)
                );
            }
        }
        for &s in samples {
            let acc = case.lo + s.rem_euclid(case.hi - case.lo + 1);
            prop_assert_eq!(
                table.level(c, acc),
                level(acc),
                "channel {}, acc {}",
                c,
                acc
            );
        }
        for acc in [case.lo, case.hi] {
            prop_assert_eq!(
                table.level(c, acc),
                level(acc),
                "channel {}, acc {}",
                c,
                acc
            );
        }
    }
    Ok(())
}

fn wide_case() -> impl Strategy<Value = Case> {
    let bound = i64::from(i32::MAX);
    let range = prop_oneof![
        (0..=bound).prop_map(|k| (-k, k)),
        (-bound..=bound, 0..=bound).prop_map(|(lo, len)| (lo, lo + len)),
    ];
    (1usize..=3, range).prop_flat_map(|(channels, (lo, hi))| {
        let k = lo.abs().max(hi.abs()) as f32;
        let steps = prop_oneof![
            3 => trained_batchnorm(channels, k),
            1 => prop::collection::vec(step(channels), 0..=3),
        ];
        (steps, quantizer(channels)).prop_map(move |(steps, quantizer)| Case {
            steps,
            quantizer,
            lo,
            hi,
            channels,
        })
    })
}

proptest! {
    #![proptest_config(Config::with_cases(128))]

    #[test]
    fn thresholds_are_exact_on_i32_wide_ranges(
        case in wide_case(),
        samples in prop::collection::vec(any::<i64>(), 64),
    ) {
        check_wide(&case, &samples)?;
    }
}

/// The property test above must not pass by refusing: most random cases fold.
#[test]
fn most_random_cases_fold() {
    let folded = Cell::new(0u32);
    let refused = Cell::new(0u32);
    let mut runner = TestRunner::new(Config::with_cases(128));
    runner
        .run(&case(), |case| {
            if check(&case)? {
                folded.set(folded.get() + 1);
            } else {
                refused.set(refused.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    let (folded, refused) = (folded.get(), refused.get());
    assert!(
        folded >= 4 * refused,
        "{folded} cases folded, {refused} refused"
    );
}

/// Multi-level outputs that are not affine still reproduce the interpreter, and outputs that
/// are affine do so through `Op::Threshold`.
#[test]
fn outputs_reach_the_interpreter_both_ways() {
    let q = |scale: f32| ChainQuantizer::Quant {
        scale: PerChannel(vec![scale, 0.25]),
        zero_point: PerChannel::scalar(0.0),
        bits: 4,
        signed: true,
        narrow: false,
        rounding: RoundingMode::HalfEven,
    };
    let steps = vec![ChainStep::Mul(PerChannel::scalar(0.01))];
    for scale in [0.1f32, 0.5] {
        let case = Case {
            steps: steps.clone(),
            quantizer: q(scale),
            lo: -1000,
            hi: 1000,
            channels: 2,
        };
        assert!(check(&case).unwrap());
        let table = fold_chain(&steps, &q(scale), -1000, 1000, 2).unwrap();
        let affine = matches!(table.output, LevelOutput::Affine { .. });
        assert_eq!(affine, scale == 0.5, "scale {scale}: {:?}", table.output);
    }
}
