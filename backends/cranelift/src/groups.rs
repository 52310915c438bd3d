//! Grouped convolutions on the ordinary channels-last words: which words of a pixel each
//! block of filters reads, and its filters' bits placed in those words.
//!
//! A grouped layer's activations stay stored as every other layer's are (all `C` channels of
//! a pixel packed into `words(C)` words, [`bnnc_runtime::packing`]), so nothing converts
//! between a depthwise layer and the pointwise one after it. A filter reads only the words
//! that hold its group's channels: its block of filters (computed together, sharing each
//! activation word loaded) reads `span` words from the block's first word, the smallest run
//! covering every group the block touches. The filter's weight bits sit at its channels'
//! positions in that run; bits of other channels are 0 in the weights, so a bit-serial AND
//! ignores them, and 0 in the filter's mask, which an XNOR kernel ANDs its XOR with.
//!
//! Blocks are the kernels' own: consecutive runs of `block` filters from filter 0, then the
//! filters past the last whole block one by one, as the output stages walk them.

use bnnc_runtime::packing::{words, WORD_BITS};

/// Where each filter of a grouped convolution reads a pixel's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupWords {
    /// Channels per group.
    pub group_channels: usize,
    /// Filters (output channels) per group.
    pub group_filters: usize,
    /// Words each filter reads per tap (and per plane), from its block's first word.
    pub span: usize,
    /// Per filter: the first word its block reads.
    pub first_word: Vec<usize>,
}

impl GroupWords {
    /// The words `m` filters in `groups` groups over `c` channels read, computed in whole
    /// blocks of `block` filters from filter 0 and then one by one (the Cranelift kernels'
    /// order). `groups` divides `c` and `m` (inference checked it).
    pub fn new(c: usize, m: usize, groups: usize, block: usize) -> GroupWords {
        let block = block.max(1);
        let whole = m / block * block;
        let units = (0..whole)
            .step_by(block)
            .map(|f| (f, block))
            .chain((whole..m).map(|f| (f, 1)));
        GroupWords::of_units(c, m, groups, units)
    }

    /// As [`GroupWords::new`], for kernels whose last block is a partial one (vector
    /// lanes past `m` computing nothing).
    pub fn in_lanes(c: usize, m: usize, groups: usize, lanes: usize) -> GroupWords {
        let lanes = lanes.max(1);
        let units = (0..m).step_by(lanes).map(|f| (f, lanes.min(m - f)));
        GroupWords::of_units(c, m, groups, units)
    }

    /// The words read by `units`, `(first filter, filters)` each, covering `0..m` once.
    fn of_units(
        c: usize,
        m: usize,
        groups: usize,
        units: impl Iterator<Item = (usize, usize)>,
    ) -> GroupWords {
        let (cg, mg) = (c / groups.max(1), m / groups.max(1));
        let units: Vec<(usize, usize)> = units.collect();
        // A unit's channels: from its first filter's group to its last filter's.
        let words_of = |(f, n): (usize, usize)| {
            let (lo, hi) = (f / mg.max(1) * cg, ((f + n - 1) / mg.max(1) + 1) * cg);
            (lo / WORD_BITS, (hi.max(1) - 1) / WORD_BITS)
        };
        let span = units
            .iter()
            .map(|&u| {
                let (lo, hi) = words_of(u);
                hi - lo + 1
            })
            .max()
            .unwrap_or(1);
        let mut first_word = vec![0; m];
        for &(f, n) in &units {
            // A run that would pass the pixel's last word starts earlier: it still covers
            // the unit's words, which end at or before the last.
            let first = words_of((f, n)).0.min(words(c).saturating_sub(span));
            first_word[f..f + n].fill(first);
        }
        GroupWords {
            group_channels: cg,
            group_filters: mg,
            span,
            first_word,
        }
    }

    /// The absolute channel of filter `f`'s group-relative channel `ch`, as a word of its
    /// run and a bit.
    fn position(&self, f: usize, ch: usize) -> (usize, usize) {
        let at = f / self.group_filters.max(1) * self.group_channels + ch;
        (at / WORD_BITS - self.first_word[f], at % WORD_BITS)
    }

    /// Filter `f`'s run of `span` words with bit `ch` of its group set where `set(ch)`.
    pub fn place(&self, f: usize, set: impl Fn(usize) -> bool) -> Vec<u64> {
        let mut run = vec![0u64; self.span];
        for ch in (0..self.group_channels).filter(|&ch| set(ch)) {
            let (word, bit) = self.position(f, ch);
            run[word] |= 1 << bit;
        }
        run
    }

    /// Filter `f`'s mask: its group's channels in its run of words.
    pub fn mask(&self, f: usize) -> Vec<u64> {
        self.place(f, |_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_end_with_a_partial_block() {
        // 12 filters in 12 groups of 8 channels: lanes 8..12 read channels 64..96, word 1.
        let g = GroupWords::in_lanes(96, 12, 12, 8);
        assert_eq!(g.span, 1);
        assert_eq!(g.first_word[8..], [1; 4]);
        assert_eq!(g.mask(9), vec![0xFF << 8]);
    }

    #[test]
    fn depthwise_blocks_read_one_word() {
        // 128 channels, one per group: a block of 8 filters reads 8 channels of one word.
        let g = GroupWords::new(128, 128, 128, 8);
        assert_eq!(g.span, 1);
        assert_eq!(g.first_word[63], 0);
        assert_eq!(g.first_word[64], 1);
        assert_eq!(g.mask(65), vec![1 << 1]);
    }

    #[test]
    fn groups_across_a_word_boundary_span_two_words() {
        // Two groups of 48 channels: group 1 holds bits 48..64 of word 0 and 0..32 of word 1.
        let g = GroupWords::new(96, 96, 2, 8);
        assert_eq!(g.span, 2);
        assert_eq!(g.first_word[48], 0);
        assert_eq!(g.mask(48), vec![!0 << 48, (1 << 32) - 1]);
        assert_eq!(g.mask(0), vec![(1 << 48) - 1, 0]);
    }

    #[test]
    fn single_filters_past_the_blocks_and_a_clamped_start() {
        // 3 groups of 40 channels and 2 filters: filters 0-3 in a block (groups 0, 1),
        // filters 4 and 5 alone (group 2, channels 80..120, word 1).
        let g = GroupWords::new(120, 6, 3, 4);
        assert_eq!(g.span, 2);
        assert_eq!(g.first_word, vec![0, 0, 0, 0, 0, 0]);
        assert_eq!(g.place(5, |ch| ch == 0), vec![0, 1 << 16]);
    }
}
