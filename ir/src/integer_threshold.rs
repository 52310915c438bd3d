//! Integer thresholds of monotone predicates: where a float computation on an integer
//! accumulator (`acc as f32 * scale >= t`, as the interpreter evaluates it) starts, or stops,
//! holding. Passes use it to move thresholds onto integers, backends to put them in hardware.

/// The integer threshold of a monotone predicate over `[lo, hi]`: the smallest integer
/// reaching it when ascending (`hi + 1` if none does), the largest when descending (`lo - 1`
/// if none does). Found by binary search, evaluating the predicate (the f32 product the
/// interpreter computes) rather than trusting `t / s`.
pub fn integer_threshold(reached: impl Fn(i64) -> bool, lo: i64, hi: i64, descending: bool) -> i64 {
    if descending {
        // reached on a prefix [lo, T].
        if !reached(lo) {
            return lo - 1;
        }
        let (mut a, mut b) = (lo, hi);
        while a < b {
            let m = a + (b - a + 1) / 2;
            if reached(m) {
                a = m;
            } else {
                b = m - 1;
            }
        }
        a
    } else {
        // reached on a suffix [T, hi].
        if !reached(hi) {
            return hi + 1;
        }
        let (mut a, mut b) = (lo, hi);
        while a < b {
            let m = a + (b - a) / 2;
            if reached(m) {
                b = m;
            } else {
                a = m + 1;
            }
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::integer_threshold;

    #[test]
    fn thresholds_of_a_negative_scale() {
        // n * -0.1 >= -0.25 holds for n <= 2: descending at 2.
        let reached = |n: i64| n as f32 * -0.1 >= -0.25;
        assert_eq!(integer_threshold(reached, -9, 9, true), 2);
        // Never, always.
        assert_eq!(integer_threshold(|_| false, -9, 9, false), 10);
        assert_eq!(integer_threshold(|_| true, -9, 9, false), -9);
        assert_eq!(integer_threshold(|_| false, -9, 9, true), -10);
        // Ascending: n * 0.1 >= 0.3 first holds at n = 3 (3 * 0.1f32 rounds to 0.3f32).
        assert_eq!(
            integer_threshold(|n| n as f32 * 0.1 >= 0.3, -9, 9, false),
            3
        );
    }
}
