//! Hand-computed cases. The property tests against the interpreter live in
//! `passes/tests/threshold_exact.rs`.

use bnnc_ir::RoundingMode;

use super::*;

fn pc(values: &[f32]) -> PerChannel {
    PerChannel(values.to_vec())
}

fn bn(gamma: f32, beta: f32, mean: f32, var: f32, epsilon: f32) -> ChainStep {
    ChainStep::BatchNorm {
        gamma: pc(&[gamma]),
        beta: pc(&[beta]),
        mean: pc(&[mean]),
        var: pc(&[var]),
        epsilon,
    }
}

fn bipolar(scale: f32) -> ChainQuantizer {
    ChainQuantizer::Bipolar {
        scale: pc(&[scale]),
    }
}

fn quant(scale: f32, bits: u8, signed: bool, rounding: RoundingMode) -> ChainQuantizer {
    ChainQuantizer::Quant {
        scale: pc(&[scale]),
        zero_point: pc(&[0.0]),
        bits,
        signed,
        narrow: false,
        rounding,
    }
}

fn multithreshold(rows: &[&[f32]], out_scale: f32, out_bias: f32) -> ChainQuantizer {
    ChainQuantizer::MultiThreshold {
        thresholds: rows.iter().map(|r| r.to_vec()).collect(),
        out_scale,
        out_bias,
    }
}

/// Folds, then checks every accumulator of the range against the direct evaluation: the same
/// level and the same output.
fn fold(
    steps: &[ChainStep],
    q: &ChainQuantizer,
    lo: i64,
    hi: i64,
    channels: usize,
) -> ThresholdTable {
    let table = fold_chain(steps, q, lo, hi, channels).unwrap();
    assert_eq!(table.thresholds.len(), channels * (table.levels - 1));
    for c in 0..channels {
        let chain = ChannelChain::new(steps, q, c, channels).unwrap();
        for acc in lo..=hi {
            let level = chain.level(acc).unwrap();
            assert_eq!(table.level(c, acc), level, "channel {c}, acc {acc}");
            assert_eq!(
                table.output_at(c, acc),
                chain.output(level),
                "channel {c}, acc {acc}"
            );
        }
    }
    table
}

/// One channel's row and direction.
fn row(table: &ThresholdTable, c: usize) -> (Vec<i64>, bool) {
    (table.row(c).to_vec(), table.descending[c])
}

fn affine(out_scale: f32, out_bias: f32) -> LevelOutput {
    LevelOutput::Affine {
        out_scale: vec![out_scale],
        out_bias: vec![out_bias],
    }
}

#[test]
fn batchnorm_positive_gamma_is_ascending() {
    // inv = 1 / sqrt(3 + 1) = 0.5, s = 0.5 * 2 = 1, t = 1 - 3 * 1 = -2: y = acc - 2 >= 0.
    let t = fold(&[bn(2.0, 1.0, 3.0, 3.0, 1.0)], &bipolar(1.0), -10, 10, 1);
    assert_eq!(row(&t, 0), (vec![2], false));
    // Outputs -1 and +1: 2 * k - 1.
    assert_eq!(t.output, affine(2.0, -1.0));
    // inv = 1 / sqrt(16) = 0.25, s = 0.125, t = 0.25 - 10 * 0.125 = -1: acc / 8 >= 1.
    let t = fold(&[bn(0.5, 0.25, 10.0, 15.0, 1.0)], &bipolar(0.5), -20, 20, 1);
    assert_eq!(row(&t, 0), (vec![8], false));
    assert_eq!(t.output, affine(1.0, -0.5));
}

#[test]
fn batchnorm_negative_gamma_is_descending() {
    // s = -1, t = 1 - 3 * -1 = 4: y = 4 - acc >= 0 for acc <= 4.
    let t = fold(&[bn(-2.0, 1.0, 3.0, 3.0, 1.0)], &bipolar(1.0), -10, 10, 1);
    assert_eq!(row(&t, 0), (vec![4], true));
    assert_eq!((t.level(0, 4), t.level(0, 5)), (1, 0));
}

#[test]
fn zero_multipliers_give_constant_channels() {
    // gamma = 0: y = acc * 0 + beta.
    let t = fold(&[bn(0.0, 0.5, 3.0, 3.0, 1.0)], &bipolar(1.0), -10, 10, 1);
    assert_eq!(row(&t, 0), (vec![-10], false));
    let t = fold(&[bn(0.0, -0.5, 3.0, 3.0, 1.0)], &bipolar(1.0), -10, 10, 1);
    assert_eq!(row(&t, 0), (vec![11], false));
    // gamma = -0: s = -0, and y = +-0 everywhere, which BipolarQuant takes as >= 0.
    let t = fold(&[bn(-0.0, 0.0, 3.0, 3.0, 1.0)], &bipolar(1.0), -10, 10, 1);
    assert_eq!(row(&t, 0), (vec![-10], false));
    // Mul by -0 before Sign: always level 1 (Sign(+-0) = 0), never level 2.
    let t = fold(
        &[ChainStep::Mul(pc(&[-0.0]))],
        &ChainQuantizer::Sign,
        -10,
        10,
        1,
    );
    assert_eq!(row(&t, 0), (vec![-10, 11], false));
    assert_eq!(t.output_at(0, 7), 0.0);
}

#[test]
fn sign_has_a_level_for_exactly_zero() {
    // acc - 3: -1 below 3, 0 at 3, +1 above.
    let sub3 = [ChainStep::Sub(pc(&[3.0]))];
    let t = fold(&sub3, &ChainQuantizer::Sign, -10, 10, 1);
    assert_eq!(row(&t, 0), (vec![3, 4], false));
    assert_eq!(t.output, affine(1.0, -1.0));
    // acc / 2 - 1.25 is never 0: level 1 is skipped, both thresholds at 3.
    let steps = [ChainStep::Mul(pc(&[0.5])), ChainStep::Add(pc(&[-1.25]))];
    let t = fold(&steps, &ChainQuantizer::Sign, -10, 10, 1);
    assert_eq!(row(&t, 0), (vec![3, 3], false));
    // 3 - acc: level >= 1 for acc <= 3, level 2 for acc <= 2.
    let t = fold(
        &[ChainStep::SubFrom(pc(&[3.0]))],
        &ChainQuantizer::Sign,
        -10,
        10,
        1,
    );
    assert_eq!(row(&t, 0), (vec![3, 2], true));
}

#[test]
fn two_bit_quant_has_three_thresholds() {
    // y = acc / 2 rounded half to even into [-2, 1]: -1.5 -> -2 (level 0), -1 -> -1 (1),
    // -0.5 -> -0 (2), 0.5 -> 0 (2), 1 -> 1 (3).
    let q = quant(1.0, 2, true, RoundingMode::HalfEven);
    let t = fold(&[ChainStep::Mul(pc(&[0.5]))], &q, -10, 10, 1);
    assert_eq!(row(&t, 0), (vec![-2, -1, 2], false));
    assert_eq!(t.output, affine(1.0, -2.0));
    // Unsigned, scale 0.5, floor: y = 2 * acc clamped to [0, 3]; acc = 1 jumps to level 2.
    let q = quant(0.5, 2, false, RoundingMode::Floor);
    let t = fold(&[], &q, -4, 4, 1);
    assert_eq!(row(&t, 0), (vec![1, 1, 2], false));
    assert_eq!(t.output, affine(0.5, 0.0));
    // A negative Quant scale divides by it: descending.
    let q = quant(-1.0, 2, true, RoundingMode::HalfEven);
    let t = fold(&[], &q, -4, 4, 1);
    assert_eq!(row(&t, 0), (vec![1, 0, -1], true));
}

#[test]
fn quant_scale_not_a_power_of_two_lists_its_outputs() {
    // (q + 128) * 0.1 and 0.1 * k - 12.8 round apart for some k.
    let q = quant(0.1, 8, true, RoundingMode::HalfEven);
    let t = fold(&[ChainStep::Mul(pc(&[0.01]))], &q, -2000, 2000, 1);
    let LevelOutput::Values { values } = &t.output else {
        panic!("expected a table of values, got {:?}", t.output);
    };
    assert_eq!(values.len(), 256);
    assert_eq!(values[0], -128.0 * 0.1);
}

#[test]
fn multithreshold_passes_through() {
    // Float thresholds on an integer: acc >= -1.5 from -1, acc >= 2.5 from 3.
    let q = multithreshold(&[&[-1.5, 0.0, 2.5]], 2.0, -3.0);
    let t = fold(&[], &q, -10, 10, 1);
    assert_eq!(row(&t, 0), (vec![-1, 0, 3], false));
    assert_eq!(t.output, affine(2.0, -3.0));
    // One row per channel, in any order (the count does not care).
    let q = multithreshold(&[&[0.0, 1.0], &[5.0, -5.0]], 1.0, 0.0);
    let t = fold(&[], &q, -10, 10, 2);
    assert_eq!(row(&t, 0), (vec![0, 1], false));
    assert_eq!(row(&t, 1), (vec![-5, 5], false));
}

#[test]
fn levels_outside_the_range_are_always_or_never() {
    let q = multithreshold(&[&[0.0, 100.0]], 1.0, 0.0);
    let t = fold(&[], &q, -5, 5, 1);
    assert_eq!(row(&t, 0), (vec![0, 6], false));
    let t = fold(&[ChainStep::SubFrom(pc(&[0.0]))], &q, -5, 5, 1);
    assert_eq!(row(&t, 0), (vec![0, -6], true));
    let q = multithreshold(&[&[-100.0, 0.0]], 1.0, 0.0);
    let t = fold(&[], &q, -5, 5, 1);
    assert_eq!(row(&t, 0), (vec![-5, 0], false));
    let t = fold(&[ChainStep::SubFrom(pc(&[0.0]))], &q, -5, 5, 1);
    assert_eq!(row(&t, 0), (vec![5, 0], true));
    // Ranges as wide as ACC_LIMIT keep their sentinels in i64.
    let t = fold_chain(&[], &q, -ACC_LIMIT, ACC_LIMIT, 1).unwrap();
    assert_eq!(t.row(0), [-100, 0]);
    let t = fold_chain(
        &[ChainStep::Mul(pc(&[0.0]))],
        &bipolar(1.0),
        0,
        ACC_LIMIT,
        1,
    )
    .unwrap();
    assert_eq!(t.row(0), [0]);
    let t = fold_chain(
        &[ChainStep::Add(pc(&[-1e30]))],
        &bipolar(1.0),
        0,
        ACC_LIMIT,
        1,
    )
    .unwrap();
    assert_eq!(t.row(0), [ACC_LIMIT + 1]);
}

#[test]
fn per_channel_directions() {
    // Three channels: gamma 2, -2 and 0 (s = 1, -1, 0), beta 1, mean 3.
    let step = ChainStep::BatchNorm {
        gamma: pc(&[2.0, -2.0, 0.0]),
        beta: pc(&[1.0]),
        mean: pc(&[3.0]),
        var: pc(&[3.0]),
        epsilon: 1.0,
    };
    let q = ChainQuantizer::Bipolar {
        scale: pc(&[1.0, 0.5, 0.25]),
    };
    let t = fold(&[step], &q, -10, 10, 3);
    assert_eq!(t.thresholds, vec![2, 4, -10]);
    assert_eq!(t.descending, vec![false, true, false]);
    assert_eq!(
        t.output,
        LevelOutput::Affine {
            out_scale: vec![2.0, 1.0, 0.5],
            out_bias: vec![-1.0, -0.5, -0.25],
        }
    );
}

#[test]
fn tiny_constants_fold_exactly() {
    // var = 0 and eps = 1e-30: inv ~ 1e15, s ~ +-1e-15, t = 0.
    let t = fold(
        &[bn(1e-30, 0.0, 0.0, 0.0, 1e-30)],
        &bipolar(1.0),
        -50,
        50,
        1,
    );
    assert_eq!(row(&t, 0), (vec![0], false));
    // acc * -1e-15 + 0 is +0 at acc = 0 (>= 0), negative above.
    let t = fold(
        &[bn(-1e-30, 0.0, 0.0, 0.0, 1e-30)],
        &bipolar(1.0),
        -50,
        50,
        1,
    );
    assert_eq!(row(&t, 0), (vec![0], true));
    // A tiny shift moves the boundary by one accumulator.
    let t = fold(
        &[bn(1e-30, -1e-45, 0.0, 0.0, 1e-30)],
        &bipolar(1.0),
        -50,
        50,
        1,
    );
    assert_eq!(row(&t, 0), (vec![1], false));
    let steps = [
        ChainStep::Mul(pc(&[1e-30])),
        ChainStep::Div(pc(&[-1e-30])),
        bn(0.7, 0.1, 0.2, 0.9, 1e-5),
        ChainStep::Mul(pc(&[0.3])),
    ];
    fold(
        &steps,
        &quant(0.25, 3, false, RoundingMode::HalfUp),
        -300,
        300,
        1,
    );
}

#[test]
fn rounding_is_not_trusted_to_a_closed_form() {
    // acc * 0.1 - 0.3 >= 0: in f32, 3 * 0.1 rounds up to exactly 0.3f.
    let steps = [ChainStep::Mul(pc(&[0.1])), ChainStep::Sub(pc(&[0.3]))];
    let t = fold(&steps, &bipolar(1.0), -100, 100, 1);
    assert_eq!(row(&t, 0), (vec![3], false));
    // The textbook BatchNorm order would differ in the last bit; the fold follows the
    // interpreter's through the exhaustive check in `fold`.
    for mode in [
        RoundingMode::HalfEven,
        RoundingMode::Ceil,
        RoundingMode::Floor,
        RoundingMode::Up,
        RoundingMode::Down,
        RoundingMode::HalfUp,
        RoundingMode::HalfDown,
    ] {
        let q = quant(1.0, 4, true, mode);
        fold(&[bn(0.7, 0.1, 0.2, 0.9, 1e-5)], &q, -40, 40, 1);
        fold(&[bn(-0.7, 0.1, 0.2, 0.9, 1e-5)], &q, -40, 40, 1);
    }
}

#[test]
fn bad_chains_are_errors() {
    let b = bipolar(1.0);
    let err = |steps: &[ChainStep], q: &ChainQuantizer| fold_chain(steps, q, -5, 5, 3).unwrap_err();
    assert!(matches!(
        err(&[ChainStep::Mul(pc(&[f32::NAN]))], &b),
        FoldError::NonFinite { channel: 0, .. }
    ));
    assert!(matches!(
        err(&[ChainStep::Add(pc(&[1.0, 2.0, f32::INFINITY]))], &b),
        FoldError::NonFinite { channel: 2, .. }
    ));
    assert!(matches!(
        err(&[ChainStep::Div(pc(&[1.0, -0.0, 1.0]))], &b),
        FoldError::ZeroDivisor { channel: 1, .. }
    ));
    assert!(matches!(
        err(&[], &quant(0.0, 2, true, RoundingMode::Floor)),
        FoldError::ZeroDivisor { channel: 0, .. }
    ));
    // var + eps < 0 and var + eps = 0 both leave a non-finite BatchNorm scale.
    let e = err(&[bn(1.0, 0.0, 0.0, -1.0, 0.5)], &b);
    assert!(matches!(e, FoldError::NonFinite { .. }), "{e}");
    assert!(e.to_string().contains("step 0 (batchnorm) scale"), "{e}");
    assert!(matches!(
        err(&[bn(1.0, 0.0, 0.0, 0.0, 0.0)], &b),
        FoldError::NonFinite { .. }
    ));
    assert!(matches!(
        err(&[ChainStep::Mul(pc(&[1.0, 2.0]))], &b),
        FoldError::ChannelCount {
            len: 2,
            channels: 3,
            ..
        }
    ));
    assert!(matches!(
        err(
            &[],
            &multithreshold(&[&[0.0], &[0.0, 1.0], &[0.0]], 1.0, 0.0)
        ),
        FoldError::Quantizer { .. }
    ));
    assert!(matches!(
        err(&[], &quant(1.0, 17, true, RoundingMode::Floor)),
        FoldError::Quantizer { .. }
    ));
    // acc * 1e30 * 1e30 overflows to infinity, and infinity * 0 is NaN.
    let overflow = [
        ChainStep::Mul(pc(&[1e30])),
        ChainStep::Mul(pc(&[1e30])),
        ChainStep::Mul(pc(&[0.0])),
    ];
    assert!(matches!(
        err(&overflow, &b),
        FoldError::NotMonotone { channel: 0, .. }
    ));
    // Without the zero, the infinities are a fine monotone chain.
    fold(&overflow[..2], &b, -5, 5, 1);
    assert!(matches!(
        fold_chain(&[], &b, 5, 4, 1),
        Err(FoldError::Range { .. })
    ));
    assert!(matches!(
        fold_chain(&[], &b, i64::MIN, 0, 1),
        Err(FoldError::Range { .. })
    ));
    assert!(matches!(
        ChannelChain::new(&[], &b, 3, 3),
        Err(FoldError::NoSuchChannel { .. })
    ));
}
