//! Bit-serial and XNOR convolutions on AMX tiles ([`PlaneConvKernel`], [`XnorConvKernel`]
//! of one group, where the CPU has AMX-INT8): each image's activations are stored once as
//! bytes, channels-last, and the convolution is a matrix product of pixels by filters whose
//! every step, one `tdpbusd` (`tdpbssd` for signed activations), multiplies a tile of 16
//! pixels' 64 channels by 16 filters' and adds 16,384 products. The popcount kernels
//! (`planes.rs`, `xnor.rs`) spend an AND or XOR, a `vpopcntq` and an add on 512 one-bit
//! products.
//!
//! The pixels of a band of output rows are read as one run of "wide" pixels, the rows at
//! the input's width: wide pixel `p` of tap `(ky, kx)` reads input pixel `p + ky * dy * w +
//! kx * dx` past the band's first row, so one tile load (a stride of one pixel) reads 16 of
//! them, and the sums at the columns past the output's are computed and never read. The
//! output stage (the thresholds the pool window's largest value reaches, levels stored as
//! planes) is `levels.rs`'s, on 16 filters of `i32` sums.
//!
//! Exact: activations and weights are the integers the bits stand for (`a_places`,
//! `w_places`, or `2b - 1` for bipolar ones), each fitting a byte, and every sum fits `i32`
//! ([`amx_plan`] checks both). The weights of padded channels and filters are zero bytes.
//! An XNOR layer's bit is its one threshold reached: its output stage is the same, with one
//! level.
//!
//! Linux lets a process use the tiles only once it has asked (`arch_prctl`): the kernel asks
//! on every call (about 60 ns; the request is idempotent and keeps the generated code free
//! of global state), and where it is refused runs the popcount kernel, compiled beside it.

use std::borrow::Cow;

use bnnc_cranelift::{KernelLevels, KernelPool, PlaneConvKernel, XnorConvKernel, XnorOutput};
use bnnc_runtime::packing::words;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Linkage;
use inkwell::values::{BasicMetadataValueEnum, FunctionValue, IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

use crate::emitter::{Built, KernelEmitter};
use crate::levels::OutputTables;

/// Channels per step: a tile row holds 64 bytes, one pixel's 64 channels.
const CHUNK: usize = 64;

/// Rows of a tile: 16 pixels (activations, sums) or 16 runs of four channels (weights).
const ROWS: usize = 16;

/// Filters per pass over a band: two tiles of 16 sums' columns.
const PAIR: usize = 32;

/// The most bytes the kernel keeps on its stack: the image's bytes and a band's sums.
const MAX_STACK_BYTES: usize = 128 * 1024;

/// What one tile product costs, in one-bit products of the planes kernel taking the same
/// time: measured on a Xeon with AMX (2,200 G byte products a second on tiles, 2x2 tiles
/// per step; 900 G one-bit products a second on 512-bit planes), 16,384 / 2,200 * 900.
const TILE_PRODUCT_COST: usize = 6_700;

/// `arch_prctl` on x86-64 Linux, its request for a permission, and the tiles' state.
const SYS_ARCH_PRCTL: i64 = 158;
const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
const XFEATURE_XTILEDATA: i64 = 18;

/// What the bytes of an activation stand for.
pub(crate) enum Activations {
    /// `sum_p places[p] * bit_p`, over bit planes.
    Places(Vec<i64>),
    /// `2b - 1` for each bit `b` of a packed channel.
    Bipolar,
}

/// A layer's weights as its popcount kernel reads them: bit planes `[filter][tap][word of
/// 64 channels][plane]`.
struct WeightPlanes<'k> {
    words: &'k [u64],
    planes: usize,
    /// Each plane's place value, or `None` for one bipolar plane (`2b - 1`).
    places: Option<&'k [i64]>,
}

impl WeightPlanes<'_> {
    /// The least and greatest weight.
    fn range(&self) -> (i64, i64) {
        self.places.map_or((-1, 1), range_of)
    }

    /// The weight of filter `f` at tap `tap` and channel `ch`, of `(channels, taps)`.
    fn at(&self, (c, taps): (usize, usize), (f, tap, ch): (usize, usize, usize)) -> i64 {
        let word = ((f * taps + tap) * words(c) + ch / CHUNK) * self.planes;
        let bit = |q: usize| ((self.words[word + q] >> (ch % CHUNK)) & 1) as i64;
        match self.places {
            None => 2 * bit(0) - 1,
            Some(places) => places.iter().enumerate().map(|(q, &p)| p * bit(q)).sum(),
        }
    }
}

/// A convolution the tiles can compute: a [`PlaneConvKernel`] or an [`XnorConvKernel`] of
/// one group, read through the integers its bits stand for.
pub(crate) struct TileLayer<'k> {
    symbol: &'k str,
    input: (usize, usize, usize, usize),
    filters: (usize, usize, usize),
    output: (usize, usize),
    strides: (usize, usize),
    dilations: (usize, usize),
    pool: Option<KernelPool>,
    levels: Cow<'k, KernelLevels>,
    activations: Activations,
    weights: WeightPlanes<'k>,
}

impl<'k> TileLayer<'k> {
    /// A bit-serial convolution, or `None` for a grouped or padded one.
    pub fn of_planes(k: &'k PlaneConvKernel) -> Option<TileLayer<'k>> {
        (k.groups == 1 && k.pads == (0, 0)).then(|| TileLayer {
            symbol: &k.symbol,
            input: k.input,
            filters: k.filters,
            output: k.output,
            strides: k.strides,
            dilations: k.dilations,
            pool: k.pool,
            levels: Cow::Borrowed(&k.levels),
            activations: Activations::Places(k.a_places.clone()),
            weights: WeightPlanes {
                words: &k.weights,
                planes: k.w_places.len(),
                places: (!k.bipolar_weights).then_some(&k.w_places[..]),
            },
        })
    }

    /// An XNOR convolution writing bits, or `None` for a grouped or padded one, or one whose
    /// pool takes a partial window (which the XNOR kernel ORs in, and the tiles' bands do
    /// not compute).
    pub fn of_xnor(k: &'k XnorConvKernel) -> Option<TileLayer<'k>> {
        let whole_windows = k
            .pool
            .is_none_or(|p| (p.pooled.0 * p.window.0, p.pooled.1 * p.window.1) == k.output);
        let XnorOutput::Bits { sign, bound } = &k.writes else {
            return None;
        };
        (k.groups == 1 && whole_windows && k.pads == (0, 0)).then(|| TileLayer {
            symbol: &k.symbol,
            input: k.input,
            filters: k.filters,
            output: k.output,
            strides: k.strides,
            dilations: k.dilations,
            pool: k.pool,
            // A bit is one threshold reached: levels 0 and 1 in one plane.
            levels: Cow::Owned(KernelLevels {
                sign: sign.clone(),
                bounds: bound.clone(),
                thresholds: 1,
                alpha: 1,
                beta: 0,
                planes: 1,
            }),
            activations: Activations::Bipolar,
            weights: WeightPlanes {
                words: &k.weights,
                planes: 1,
                places: None,
            },
        })
    }

    /// One-bit products the popcount kernel counts per product of integers.
    fn bit_products(&self) -> usize {
        let activation_planes = match &self.activations {
            Activations::Places(places) => places.len(),
            Activations::Bipolar => 1,
        };
        activation_planes * self.weights.planes
    }
}

/// How the tiles compute one [`TileLayer`].
pub(crate) struct AmxPlan {
    /// Whether the activations are signed bytes (`tdpbssd`) rather than unsigned.
    signed_activations: bool,
    /// Output rows per band: a multiple of the pool's window rows.
    band_rows: usize,
    bands: usize,
    /// The rows of the computed output (all of them, or the pool's).
    used: (usize, usize),
    /// The band's wide pixels: `(band_rows - 1) * w + used.1`.
    wide: usize,
    /// Pixels per activation tile: 16, or fewer when a band has fewer.
    tile_rows: usize,
    /// The first wide pixel of each activation tile, two to a step where there are two.
    tiles: Vec<(usize, Option<usize>)>,
}

/// The value range of integers `sum_i places[i] * bit_i`.
fn range_of(places: &[i64]) -> (i64, i64) {
    let lo = places.iter().filter(|&&p| p < 0).sum();
    let hi = places.iter().filter(|&&p| p > 0).sum();
    (lo, hi)
}

/// How the tiles compute `k`, or `None` where they cannot (a stride, values past a byte,
/// sums past `i32`, more stack than [`MAX_STACK_BYTES`]) or would be slower than the
/// popcount kernel by [`TILE_PRODUCT_COST`] (a layer of few pixels fills few tile rows).
pub(crate) fn amx_plan(k: &TileLayer) -> Option<AmxPlan> {
    let (batch, c, h, w) = k.input;
    let (m, kh, kw) = k.filters;
    let (oh, ow) = k.output;
    let (dy, dx) = k.dilations;
    if k.strides != (1, 1) || oh + (kh - 1) * dy > h || ow + (kw - 1) * dx > w {
        return None;
    }
    let (alo, ahi) = match &k.activations {
        Activations::Places(places) => range_of(places),
        Activations::Bipolar => (-1, 1),
    };
    let signed_activations = alo < 0;
    let fits_activations = if signed_activations {
        alo >= -128 && ahi <= 127
    } else {
        ahi <= 255
    };
    let (wlo, whi) = k.weights.range();
    let largest = alo.abs().max(ahi) * wlo.abs().max(whi);
    let taps = kh * kw;
    if !fits_activations || wlo < -128 || whi > 127 || largest * (taps * c) as i64 > i32::MAX as i64
    {
        return None;
    }
    let (ph, used) = match k.pool {
        Some(p) => (
            p.window.0,
            (p.pooled.0 * p.window.0, p.pooled.1 * p.window.1),
        ),
        None => (1, k.output),
    };
    if used.0 == 0 || used.1 == 0 || used.0 > oh || used.1 > ow {
        return None;
    }
    // Bands of whole pool rows, of at least two tiles' pixels where the output has them.
    let mut band_rows = ph;
    while band_rows + ph <= used.0 && (band_rows - 1) * w + used.1 < 2 * ROWS {
        band_rows += ph;
    }
    let bands = used.0.div_ceil(band_rows);
    let wide = (band_rows - 1) * w + used.1;
    let tile_rows = wide.min(ROWS);
    // The last tile ends at the band's last pixel, overlapping the one before.
    let starts: Vec<usize> = (0..wide.div_ceil(tile_rows))
        .map(|i| (i * tile_rows).min(wide - tile_rows))
        .collect();
    let tiles: Vec<(usize, Option<usize>)> = starts
        .chunks(2)
        .map(|pair| (pair[0], pair.get(1).copied()))
        .collect();
    let stack = h * w * words(c) * CHUNK + wide * PAIR * 4;
    if stack > MAX_STACK_BYTES {
        return None;
    }
    let products: usize = tiles
        .iter()
        .map(|t| if t.1.is_some() { 4 } else { 2 })
        .sum();
    let tile_products = batch * bands * m.div_ceil(PAIR) * products * taps * words(c);
    let plane_products = batch * used.0 * used.1 * m * taps * c * k.bit_products();
    (tile_products * TILE_PRODUCT_COST < plane_products).then_some(AmxPlan {
        signed_activations,
        band_rows,
        bands,
        used,
        wide,
        tile_rows,
        tiles,
    })
}

/// The tile registers: two of activations, two of weights, four of sums (activation tile
/// `i` by weight tile `j` in `SUMS + 2 * i + j`).
const ACTIVATIONS: u8 = 0;
const WEIGHTS: u8 = 2;
const SUMS: u8 = 4;

/// `k`'s weights as the weight tiles read them: `[16 filters][tap][chunk of 64 channels]`
/// tiles of 16 rows, each row four channels of the 16 filters (`[filter][channel]`).
fn tile_weights(k: &TileLayer) -> Vec<i64> {
    let (_, c, _, _) = k.input;
    let (m, kh, kw) = k.filters;
    let (nw, taps) = (words(c), kh * kw);
    let mut wt = vec![0i64; m.div_ceil(PAIR) * 2 * taps * nw * ROWS * CHUNK];
    for f in 0..m {
        for tap in 0..taps {
            for ch in 0..c {
                let tile = ((f / ROWS) * taps + tap) * nw + ch / CHUNK;
                let (run, j) = (ch % CHUNK / 4, ch % 4);
                wt[(tile * ROWS + run) * CHUNK + (f % ROWS) * 4 + j] =
                    k.weights.at((c, taps), (f, tap, ch));
            }
        }
    }
    wt
}

/// The tile configuration `ldtilecfg` reads (palette 1): bytes per row at `16 + 2 * tile`,
/// rows at `48 + tile`.
fn tile_config(plan: &AmxPlan) -> Vec<i64> {
    let mut config = vec![0i64; 64];
    config[0] = 1;
    for tile in 0..8u8 {
        let rows = if (WEIGHTS..SUMS).contains(&tile) {
            ROWS
        } else {
            plan.tile_rows
        };
        config[16 + 2 * usize::from(tile)] = CHUNK as i64;
        config[48 + usize::from(tile)] = rows as i64;
    }
    config
}

/// One tile kernel being built: its plan, tables, stack buffers and the AMX intrinsics.
struct TileConv<'a, 'ctx, 'm> {
    e: &'a KernelEmitter<'ctx, 'm>,
    k: &'a TileLayer<'a>,
    plan: &'a AmxPlan,
    function: FunctionValue<'ctx>,
    /// The image's bytes, a band's sums `[wide pixel][32 filters]`.
    image: PointerValue<'ctx>,
    sums: PointerValue<'ctx>,
    /// [`tile_weights`], and each tap's pixel offset past the wide pixel.
    weights: PointerValue<'ctx>,
    offsets: PointerValue<'ctx>,
    tables: OutputTables<'ctx>,
}

impl<'ctx> KernelEmitter<'ctx, '_> {
    /// Adds layer `k`, computed as `plan` says, to the module, and its popcount kernel,
    /// which `popcount` adds under the name it is given: a private kernel of the same
    /// signature, which the tile kernel runs where the tiles are refused.
    pub fn amx_conv(
        &self,
        k: &TileLayer,
        plan: &AmxPlan,
        popcount: impl FnOnce(String) -> Built<()>,
    ) -> Built<()> {
        let symbol = format!("{}.popcount", k.symbol);
        popcount(symbol.clone())?;
        let fallback = self.private(&symbol);
        let (batch, c, h, w) = k.input;
        let m = k.filters.0;
        let (dy, dx) = k.dilations;
        let offsets: Vec<i64> = (0..k.filters.1 * k.filters.2)
            .map(|t| ((t / k.filters.2) * dy * w + (t % k.filters.2) * dx) as i64)
            .collect();
        let name = &k.symbol;
        let (i8t, i32t, i64t) = (
            self.context.i8_type(),
            self.context.i32_type(),
            self.context.i64_type(),
        );
        let weights = self.table(&format!("{name}.weights"), i8t, &tile_weights(k));
        let offsets = self.table(&format!("{name}.offsets"), i64t, &offsets);
        let config = self.table(&format!("{name}.tiles"), i8t, &tile_config(plan));
        let slots = m.div_ceil(PAIR) * PAIR;
        let tables = self.output_tables(name, &k.levels, (m, slots), (i32t, ROWS));

        let (function, x, out) = self.kernel_function(name);
        self.request_tiles(function, fallback, (x, out))?;
        let b = &self.builder;
        let image_bytes = h * w * words(c) * CHUNK;
        let image = b.build_array_alloca(i8t, self.i64(image_bytes as i64), "image")?;
        let sums = b.build_array_alloca(i32t, self.i64((plan.wide * PAIR) as i64), "sums")?;
        for alloca in [image, sums] {
            alloca
                .as_instruction()
                .expect("an alloca")
                .set_alignment(64)
                .expect("valid alignment");
        }
        self.amx("llvm.x86.ldtilecfg", &[config.into()])?;
        let conv = TileConv {
            e: self,
            k,
            plan,
            function,
            image,
            sums,
            weights,
            offsets,
            tables,
        };
        self.counted(function, batch, &mut |n| {
            self.activation_bytes(function, (x, n, h * w), image, k)?;
            self.counted(function, plan.bands, &mut |band| conv.band(n, band, out))
        })?;
        self.amx("llvm.x86.tilerelease", &[])?;
        b.build_return(None)?;
        Ok(())
    }

    /// Asks Linux for the tiles (`arch_prctl`); where refused, calls `fallback` and returns.
    /// Leaves the builder where the tiles may be used.
    fn request_tiles(
        &self,
        function: FunctionValue<'ctx>,
        fallback: FunctionValue<'ctx>,
        (x, out): (PointerValue<'ctx>, PointerValue<'ctx>),
    ) -> Built<()> {
        let b = &self.builder;
        let i64t = self.context.i64_type();
        let syscall = self.module.get_function("syscall").unwrap_or_else(|| {
            let ty = i64t.fn_type(&[i64t.into()], true);
            self.module
                .add_function("syscall", ty, Some(Linkage::External))
        });
        let args =
            [SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA].map(|v| self.i64(v).into());
        let refused = b
            .build_call(syscall, &args, "refused")?
            .try_as_basic_value()
            .left()
            .expect("syscall returns a value")
            .into_int_value();
        let granted = b.build_int_compare(IntPredicate::EQ, refused, self.i64(0), "")?;
        let tiles = self.context.append_basic_block(function, "tiles");
        let planes = self.context.append_basic_block(function, "planes");
        b.build_conditional_branch(granted, tiles, planes)?;
        b.position_at_end(planes);
        b.build_call(fallback, &[x.into(), out.into()], "")?;
        b.build_return(None)?;
        b.position_at_end(tiles);
        Ok(())
    }

    /// Function `symbol`, just added, made private: a kernel only another kernel calls.
    fn private(&self, symbol: &str) -> FunctionValue<'ctx> {
        let f = self
            .module
            .get_function(symbol)
            .expect("the kernel was just added");
        f.set_linkage(Linkage::Private);
        f
    }

    /// A call of AMX intrinsic `name`.
    fn amx(&self, name: &str, args: &[BasicMetadataValueEnum<'ctx>]) -> Built<()> {
        let f = Intrinsic::find(name)
            .expect("an AMX intrinsic")
            .get_declaration(self.module, &[])
            .expect("its declaration");
        self.builder.build_call(f, args, "")?;
        Ok(())
    }

    /// Tile register `t`, as an intrinsic's immediate.
    fn tile(&self, t: u8) -> BasicMetadataValueEnum<'ctx> {
        self.context.i8_type().const_int(u64::from(t), false).into()
    }

    /// The address `at` bytes past `base`.
    fn byte_at(&self, base: PointerValue<'ctx>, at: IntValue<'ctx>) -> Built<PointerValue<'ctx>> {
        // SAFETY (of the generated code): every tile lies inside its buffer (see `amx_plan`:
        // the last band's last tap reads the image's last pixel).
        unsafe {
            self.builder
                .build_in_bounds_gep(self.context.i8_type(), base, &[at], "")
        }
    }

    /// Stores image `n` of `x` (`pixels` pixels, each the words of every bit plane in turn,
    /// or the packed bits of bipolar activations) as bytes at `image`, 64 to a word of a
    /// plane: channel `ch`'s byte is the integer its bits stand for ([`Activations`]).
    fn activation_bytes(
        &self,
        function: FunctionValue<'ctx>,
        (x, n, pixels): (PointerValue<'ctx>, IntValue<'ctx>, usize),
        image: PointerValue<'ctx>,
        k: &TileLayer,
    ) -> Built<()> {
        let b = &self.builder;
        let nw = words(k.input.1);
        let planes = match &k.activations {
            Activations::Places(places) => places.len(),
            Activations::Bipolar => 1,
        };
        let cp = nw * CHUNK;
        let i8t = self.context.i8_type();
        let v64 = i8t.vec_type(CHUNK as u32);
        let mask_ty = self.context.bool_type().vec_type(CHUNK as u32);
        let first = b.build_int_mul(n, self.i64((pixels * planes * nw) as i64), "")?;
        self.counted(function, pixels, &mut |i| {
            let words_at = b.build_int_mul(i, self.i64((planes * nw) as i64), "")?;
            let words_at = b.build_int_add(first, words_at, "")?;
            for word in 0..nw {
                let bits_of = |p: usize| -> Built<VectorValue<'ctx>> {
                    let at = b.build_int_add(words_at, self.i64((p * nw + word) as i64), "")?;
                    let bits = self.load_i64(x, at)?;
                    Ok(b.build_bit_cast(bits, mask_ty, "")?.into_vector_value())
                };
                let bytes = match &k.activations {
                    Activations::Places(places) => {
                        let mut bytes = v64.const_zero();
                        for (p, &place) in places.iter().enumerate() {
                            let placed = b
                                .build_select(
                                    bits_of(p)?,
                                    self.const_splat(v64, place),
                                    v64.const_zero(),
                                    "",
                                )?
                                .into_vector_value();
                            bytes = b.build_int_add(bytes, placed, "bytes")?;
                        }
                        bytes
                    }
                    // Past the channels, -1: the weights there are 0.
                    Activations::Bipolar => {
                        let (one, minus_one) =
                            (self.const_splat(v64, 1), self.const_splat(v64, -1));
                        b.build_select(bits_of(0)?, one, minus_one, "")?
                            .into_vector_value()
                    }
                };
                let at = b.build_int_mul(i, self.i64(cp as i64), "")?;
                let at = b.build_int_add(at, self.i64((word * CHUNK) as i64), "")?;
                // SAFETY (of the generated code): pixel `i`'s bytes inside the image.
                let dst = unsafe { b.build_in_bounds_gep(i8t, image, &[at], "")? };
                b.build_store(dst, bytes)?;
            }
            Ok(())
        })
    }
}

impl<'ctx> TileConv<'_, 'ctx, '_> {
    /// Band `band` of image `n`: for each pair of 16-filter blocks, the sums of the band's
    /// wide pixels, then its pooled pixels' levels.
    fn band(&self, n: IntValue<'ctx>, band: IntValue<'ctx>, out: PointerValue<'ctx>) -> Built<()> {
        let (e, plan) = (self.e, self.plan);
        let b = &e.builder;
        let w = self.k.input.3;
        let ph = self.k.pool.map_or(1, |p| p.window.0);
        let (out_h, out_w) = self.k.pool.map_or(self.k.output, |p| p.pooled);
        let out_words = self.k.levels.planes * words(self.k.filters.0);
        // The band's first output row; the last band ends at the last used row.
        let first = b.build_int_mul(band, e.i64(plan.band_rows as i64), "")?;
        let last = e.i64((plan.used.0 - plan.band_rows) as i64);
        let below = b.build_int_compare(IntPredicate::ULT, first, last, "")?;
        let oy0 = b.build_select(below, first, last, "oy0")?.into_int_value();
        let py0 = b.build_int_unsigned_div(oy0, e.i64(ph as i64), "py0")?;
        // The band's output words, zeroed: the blocks store 16 bits at a time.
        let opix = e.pixel_index(n, (py0, e.i64(0)), (out_h, out_w))?;
        let ofirst = b.build_int_mul(opix, e.i64(out_words as i64), "")?;
        let len = plan.band_rows / ph * out_w * out_words * 8;
        let i8t = e.context.i8_type();
        b.build_memset(
            e.gep_i64(out, ofirst)?,
            8,
            i8t.const_zero(),
            e.i64(len as i64),
        )?;
        let row0 = b.build_int_mul(oy0, e.i64(w as i64), "row0")?;
        let pairs = self.k.filters.0.div_ceil(PAIR);
        e.counted(self.function, pairs, &mut |pair| {
            for &(s0, s1) in &plan.tiles {
                self.sums_of(row0, pair, [Some(s0), s1])?;
            }
            e.counted(self.function, plan.band_rows / ph, &mut |r| {
                e.counted(self.function, out_w, &mut |px| {
                    let py = b.build_int_add(py0, r, "py")?;
                    let opix = e.pixel_index(n, (py, px), (out_h, out_w))?;
                    let ofirst = b.build_int_mul(opix, e.i64(out_words as i64), "")?;
                    self.levels_of(pair, (r, px), (out, ofirst))
                })
            })
        })
    }

    /// The sums of filter pair `pair` at the wide pixels of the activation tiles starting
    /// at `starts` (past the band's first row, `row0`), stored at their rows of the band's
    /// sums: per tap and chunk of 64 channels, each activation tile by both weight tiles.
    fn sums_of(
        &self,
        row0: IntValue<'ctx>,
        pair: IntValue<'ctx>,
        starts: [Option<usize>; 2],
    ) -> Built<()> {
        let e = self.e;
        let b = &e.builder;
        let (c, kh, kw) = (self.k.input.1, self.k.filters.1, self.k.filters.2);
        let (nw, taps) = (words(c), kh * kw);
        let cp = (nw * CHUNK) as i64;
        let product = if self.plan.signed_activations {
            "llvm.x86.tdpbssd"
        } else {
            "llvm.x86.tdpbusd"
        };
        let tiles: Vec<(u8, usize)> = (0u8..)
            .zip(starts)
            .filter_map(|(i, s)| Some((i, s?)))
            .collect();
        for &(i, _) in &tiles {
            for j in 0..2 {
                e.amx("llvm.x86.tilezero", &[e.tile(SUMS + 2 * i + j)])?;
            }
        }
        e.counted(self.function, taps, &mut |tap| {
            let pixel = b.build_int_add(row0, e.load_i64(self.offsets, tap)?, "")?;
            e.counted(self.function, nw, &mut |chunk| {
                let chunk_byte = b.build_int_mul(chunk, e.i64(CHUNK as i64), "")?;
                for &(i, s) in &tiles {
                    let p = b.build_int_add(pixel, e.i64(s as i64), "")?;
                    let at = b.build_int_add(b.build_int_mul(p, e.i64(cp), "")?, chunk_byte, "")?;
                    let src = e.byte_at(self.image, at)?.into();
                    e.amx(
                        "llvm.x86.tileloadd64",
                        &[e.tile(ACTIVATIONS + i), src, e.i64(cp).into()],
                    )?;
                }
                for j in 0..2u8 {
                    // Weight tile (2 * pair + j, tap, chunk).
                    let block = b.build_int_add(
                        b.build_int_mul(pair, e.i64(2), "")?,
                        e.i64(i64::from(j)),
                        "",
                    )?;
                    let t = b.build_int_mul(block, e.i64(taps as i64), "")?;
                    let t = b.build_int_add(t, tap, "")?;
                    let t =
                        b.build_int_add(b.build_int_mul(t, e.i64(nw as i64), "")?, chunk, "")?;
                    let at = b.build_int_mul(t, e.i64((ROWS * CHUNK) as i64), "")?;
                    let src = e.byte_at(self.weights, at)?.into();
                    let stride = e.i64(CHUNK as i64).into();
                    e.amx("llvm.x86.tileloadd64", &[e.tile(WEIGHTS + j), src, stride])?;
                }
                for &(i, _) in &tiles {
                    for j in 0..2 {
                        let args = [
                            e.tile(SUMS + 2 * i + j),
                            e.tile(ACTIVATIONS + i),
                            e.tile(WEIGHTS + j),
                        ];
                        e.amx(product, &args)?;
                    }
                }
                Ok(())
            })
        })?;
        // Sums [wide pixel][32 filters]: tile (i, j) at column 16 * j.
        for &(i, s) in &tiles {
            for j in 0..2 {
                let at = e.i64(((s * PAIR + usize::from(j) * ROWS) * 4) as i64);
                let dst = e.byte_at(self.sums, at)?.into();
                let stride = e.i64((PAIR * 4) as i64).into();
                e.amx(
                    "llvm.x86.tilestored64",
                    &[e.tile(SUMS + 2 * i + j), dst, stride],
                )?;
            }
        }
        Ok(())
    }

    /// The output stage of pooled pixel `px` of the band's pooled row `r`, for filter pair
    /// `pair`, 16 filters at a time: the thresholds the largest value of its pool's window
    /// reaches, and their levels stored at `out` from word `first`.
    fn levels_of(
        &self,
        pair: IntValue<'ctx>,
        (r, px): (IntValue<'ctx>, IntValue<'ctx>),
        (out, first): (PointerValue<'ctx>, IntValue<'ctx>),
    ) -> Built<()> {
        let e = self.e;
        let b = &e.builder;
        let w = self.k.input.3;
        let (ph, pw) = self.k.pool.map_or((1, 1), |p| p.window);
        let v16 = e.context.i32_type().vec_type(ROWS as u32);
        // The window's first wide pixel: (r * ph) * w + px * pw.
        let row = b.build_int_mul(r, e.i64((ph * w) as i64), "")?;
        let corner = b.build_int_add(row, b.build_int_mul(px, e.i64(pw as i64), "")?, "")?;
        for half in 0..2 {
            let blk = b.build_int_mul(pair, e.i64(2), "")?;
            let blk = b.build_int_add(blk, e.i64(half as i64), "blk")?;
            // The window's largest value reaches the most thresholds (see `ascending`).
            let mut best: Option<VectorValue<'ctx>> = None;
            for (wy, wx) in (0..ph).flat_map(|wy| (0..pw).map(move |wx| (wy, wx))) {
                let p = b.build_int_add(corner, e.i64((wy * w + wx) as i64), "")?;
                let at = b.build_int_mul(p, e.i64(PAIR as i64), "")?;
                let at = b.build_int_add(at, e.i64((half * ROWS) as i64), "")?;
                let v = e.load_aligned(v16, self.sums, at)?;
                let v = e.ascending(v, &self.tables, blk)?;
                best = Some(match best {
                    None => v,
                    Some(prev) => e.larger(v, prev)?,
                });
            }
            let count = e.count_reached(best.expect("a window"), &self.tables, blk)?;
            let words = words(self.k.filters.0);
            e.store_block_levels(
                count,
                &self.tables,
                &self.k.levels,
                (out, first, words),
                blk,
            )?;
        }
        Ok(())
    }
}
