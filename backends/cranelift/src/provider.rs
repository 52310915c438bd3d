//! The interface to kernels compiled by another code generator (the LLVM backend): what the
//! Cranelift backend offers (fused XNOR, bit-serial and `i16` first-layer convolutions, with
//! their shapes, weights and output stages) and the trait that takes or declines each. It
//! sits below the schedule and the kernels, which build these descriptions.

/// An XNOR convolution (2-D, any group; a 1-D one of one group is offered as the 2-D one of
/// height 1, whose taps and pixels lie in the same order) and what it writes
/// ([`XnorOutput`]), for a kernel provider outside Cranelift. The kernel is
/// `void symbol(const uint64_t *x, void *out)`: `x` the input's packed bits (`batch` images
/// of `h * w` pixels of `words(c)` words, channels-last). With `groups > 1`, filter `j`
/// sums over its group's `c / groups` channels only ([`crate::GroupWords`] says which words
/// of a pixel hold them). Taps in the padding contribute 0: a window's dot product is over
/// the taps inside the image.
#[derive(Clone, Debug)]
pub struct XnorConvKernel {
    pub symbol: String,
    /// `(batch, c, h, w)` of the input.
    pub input: (usize, usize, usize, usize),
    /// `(m, kh, kw)` of the filters.
    pub filters: (usize, usize, usize),
    /// `(oh, ow)`: the output positions the kernel computes (all of them, unless it pools).
    pub output: (usize, usize),
    pub strides: (usize, usize),
    pub dilations: (usize, usize),
    /// Groups of channels (1: every filter reads every channel).
    pub groups: usize,
    /// The filters' packed words, `(M, taps, words(C / groups))` ([`bnnc_ir::packing`]):
    /// each filter's run holds its group's channels from bit 0.
    pub weights: Vec<u64>,
    /// Zero padding `(top, left)` (the bottom and right follow from `output`).
    pub pads: (usize, usize),
    pub writes: XnorOutput,
    /// A MaxPool on the kernel's bits, when the kernel runs one.
    pub pool: Option<KernelPool>,
}

/// What an XNOR kernel writes to `out`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XnorOutput {
    /// Packed bits: `batch * oh * ow` pixels of `words(m)` words, bit `j` of a pixel set
    /// where `sign[j] * dot_j >= bound[j]`, the bits past `m` zero.
    Bits { sign: Vec<i64>, bound: Vec<i64> },
    /// The dot products as `i32`, `(batch, m, oh, ow)` row-major: an unfused layer's
    /// accumulators.
    Sums,
}

/// A MaxPool an XNOR kernel runs on its output bits: the bits of computed pixel `(y, x)` are
/// ORed into pixel `(y / window.0, x / window.1)` of an image of extent `pooled`, whose words
/// the kernel zeroes first. The kernel's `output` is then the positions it computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelPool {
    pub window: (usize, usize),
    pub pooled: (usize, usize),
}

/// A fused bit-serial convolution and multi-threshold (2-D, any group, padded or not; a 1-D one
/// of one group is offered as the 2-D one of height 1), for a kernel provider outside
/// Cranelift. The kernel is `void symbol(const uint64_t *x, uint64_t *out)`: `x` the
/// input's bit planes (`batch` images of `h * w` pixels, each the
/// `words(c)` words of every activation plane in turn), `out` the output's
/// (`levels.planes` planes of `words(m)` words per pixel, the bits past `m` zero).
///
/// Channel `j`'s dot product is `sum_{p,q} a_places[p] * w_places[q] * popcount(A_p & W_q)`
/// over the window's words, or, with `bipolar_weights` (one plane `b`, `w = 2b - 1`),
/// `2 * sum_p a_places[p] * popcount(A_p & B) - sum_p a_places[p] * popcount(A_p)`. Its
/// count and level are [`KernelLevels`]'s, the count being the largest over the pool's
/// window when the kernel pools. With `groups > 1`, the sums run over filter `j`'s group's
/// channels only, and the weights are never `bipolar_weights` (grouped ±1 weights are
/// offered as the signed 2-bit integers they are).
#[derive(Clone, Debug)]
pub struct PlaneConvKernel {
    pub symbol: String,
    /// `(batch, c, h, w)` of the input.
    pub input: (usize, usize, usize, usize),
    /// The place value of each activation plane (`-2^p` for the top plane of a signed type).
    pub a_places: Vec<i64>,
    /// The place value of each weight plane.
    pub w_places: Vec<i64>,
    pub bipolar_weights: bool,
    /// `(m, kh, kw)` of the filters.
    pub filters: (usize, usize, usize),
    /// `(oh, ow)`: the output positions of the convolution (before any pool).
    pub output: (usize, usize),
    pub strides: (usize, usize),
    pub dilations: (usize, usize),
    /// Groups of channels (1: every filter reads every channel).
    pub groups: usize,
    /// Zero padding `(top, left)` (the bottom and right follow from `output`): a tap in it
    /// reads the activation 0, every plane's bits clear.
    pub pads: (usize, usize),
    /// The filters' planes, `[filter][tap][word][plane]`, `words(c / groups)` words: each
    /// filter's run holds its group's channels from bit 0.
    pub weights: Vec<u64>,
    pub levels: KernelLevels,
    /// A MaxPool over the counts, when the kernel runs one: pooled pixel `(y, x)` takes the
    /// largest count of computed pixels `(y * window.0 + i, x * window.1 + j)`.
    pub pool: Option<KernelPool>,
}

/// A kernel's output stage: per channel `j`, the count of thresholds its dot product
/// reaches, `#{t : sign[j] * dot >= bounds[j][t]}`, and the level `alpha * count + beta`,
/// whose low `planes` bits are stored as bit planes (one plane: packed bits).
#[derive(Clone, Debug)]
pub struct KernelLevels {
    pub sign: Vec<i64>,
    /// `(m, thresholds)`, row-major.
    pub bounds: Vec<i64>,
    pub thresholds: usize,
    pub alpha: i64,
    pub beta: i64,
    pub planes: usize,
}

/// A fused first layer on small integers (2-D, one group, no padding), for a kernel
/// provider outside Cranelift: `void symbol(const float *x, uint64_t *out)`, `x` the f32
/// input `(batch, c, h, w)`, NCHW, whose integers are `x / in_scale` (a power of two);
/// `out` as [`PlaneConvKernel`]'s. Channel `j`'s dot product is the integer input's
/// window against `weights[j]` (`(m, c, kh, kw)`); every partial sum fits 15 bits.
#[derive(Clone, Debug)]
pub struct Int16ConvKernel {
    pub symbol: String,
    /// `(batch, c, h, w)` of the input.
    pub input: (usize, usize, usize, usize),
    pub in_scale: f32,
    /// The least and greatest of the input's integers (its type's range).
    pub in_range: (i64, i64),
    /// `(m, kh, kw)` of the filters.
    pub filters: (usize, usize, usize),
    pub output: (usize, usize),
    pub strides: (usize, usize),
    pub dilations: (usize, usize),
    pub weights: Vec<i16>,
    pub levels: KernelLevels,
}

/// Kernels compiled by another code generator (the LLVM backend), called from the
/// Cranelift code and linked into the same library.
pub trait KernelProvider {
    /// Takes the kernel if it compiles it (its symbol must then be defined in the provider's
    /// object), or declines it.
    fn xnor_conv(&mut self, kernel: &XnorConvKernel) -> bool;

    /// As [`KernelProvider::xnor_conv`], for a bit-serial kernel.
    fn plane_conv(&mut self, _kernel: &PlaneConvKernel) -> bool {
        false
    }

    /// As [`KernelProvider::xnor_conv`], for a first layer on small integers.
    fn int16_conv(&mut self, _kernel: &Int16ConvKernel) -> bool {
        false
    }
}

/// The provider that takes nothing: everything is Cranelift's.
pub struct CraneliftOnly;

impl KernelProvider for CraneliftOnly {
    fn xnor_conv(&mut self, _: &XnorConvKernel) -> bool {
        false
    }
}
