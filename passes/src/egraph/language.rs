//! The e-graph's language: one e-node per op application, constant or graph input.
//!
//! egg wants e-nodes that are `Eq + Ord + Hash`, while [`Op`] carries typed attributes with
//! floats and is only `PartialEq`. So an e-node holds an [`OpKey`]: the op together with a
//! canonical word encoding of it (every attribute, floats by their bits), computed once, by
//! which keys compare and hash. Bits rather than values make `-0.0` and `0.0` different ops
//! and a NaN attribute equal to itself: hash-consing must never merge two ops that compute
//! different bits.
//!
//! Constants are leaves holding their data ([`ConstRef`]); two constants with the same element
//! type, shape and element bits are the same e-node, so they share an e-class.
//!
//! Multi-result ops (TopK) are one e-node in a "tuple" class whose analysis data lists every
//! result's type; each result that is a value is a [`BnnLang::Result`] projection over that
//! class.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bnnc_ir::{ElemType, IntType, Op, RoundingMode, Scale, Tensor, TensorData};
use egg::{Id, Language};

/// An e-node of the bnnc e-graph.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BnnLang {
    /// Graph input number `0` (its position in `Graph::inputs`).
    Input(usize),
    /// A constant tensor with its element type.
    Const(ConstRef),
    /// An op applied to operand classes, in operand order.
    Op(OpKey, Vec<Id>),
    /// Result `0` of the multi-result op whose class is the child.
    Result(usize, [Id; 1]),
}

/// What egg indexes classes by: the kind of e-node (for an op, its name in the IR text), not
/// its attributes or children.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BnnDiscriminant {
    Input,
    Const,
    Op(&'static str),
    Result,
}

impl BnnLang {
    /// An op e-node.
    pub fn op(op: Op, children: Vec<Id>) -> Self {
        BnnLang::Op(OpKey::new(op), children)
    }

    /// The op of an op e-node.
    pub fn as_op(&self) -> Option<&Op> {
        match self {
            BnnLang::Op(key, _) => Some(key.op()),
            _ => None,
        }
    }
}

impl Language for BnnLang {
    type Discriminant = BnnDiscriminant;

    fn discriminant(&self) -> BnnDiscriminant {
        match self {
            BnnLang::Input(_) => BnnDiscriminant::Input,
            BnnLang::Const(_) => BnnDiscriminant::Const,
            BnnLang::Op(key, _) => BnnDiscriminant::Op(key.op().name()),
            BnnLang::Result(..) => BnnDiscriminant::Result,
        }
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (BnnLang::Input(a), BnnLang::Input(b)) => a == b,
            (BnnLang::Const(a), BnnLang::Const(b)) => a == b,
            (BnnLang::Op(a, xs), BnnLang::Op(b, ys)) => a == b && xs.len() == ys.len(),
            (BnnLang::Result(a, _), BnnLang::Result(b, _)) => a == b,
            _ => false,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            BnnLang::Input(_) | BnnLang::Const(_) => &[],
            BnnLang::Op(_, children) => children,
            BnnLang::Result(_, child) => child,
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            BnnLang::Input(_) | BnnLang::Const(_) => &mut [],
            BnnLang::Op(_, children) => children,
            BnnLang::Result(_, child) => child,
        }
    }
}

impl fmt::Display for BnnLang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BnnLang::Input(i) => write!(f, "input{i}"),
            BnnLang::Const(c) => write!(f, "const:{}{:?}", c.elem(), c.tensor().shape()),
            BnnLang::Op(key, _) => f.write_str(key.op().name()),
            BnnLang::Result(i, _) => write!(f, "result{i}"),
        }
    }
}

/// An [`Op`] with a total order and a hash: its canonical encoding as words, computed once.
#[derive(Clone)]
pub struct OpKey(Arc<OpKeyInner>);

struct OpKeyInner {
    op: Op,
    words: Box<[u64]>,
}

impl OpKey {
    /// The key of `op`.
    pub fn new(op: Op) -> Self {
        let mut words = Vec::new();
        encode_op(&op, &mut words);
        OpKey(Arc::new(OpKeyInner {
            op,
            words: words.into(),
        }))
    }

    /// The op.
    pub fn op(&self) -> &Op {
        &self.0.op
    }
}

impl PartialEq for OpKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.words == other.0.words
    }
}

impl Eq for OpKey {}

impl PartialOrd for OpKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OpKey {
    // The first word is the op's kind, so keys of one kind (one discriminant) are contiguous,
    // which egg's sorted e-class lookups rely on.
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.words.cmp(&other.0.words)
    }
}

impl Hash for OpKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.words.hash(state);
    }
}

impl fmt::Debug for OpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.op.fmt(f)
    }
}

/// A constant's data and element type, compared by content: element type, shape and the bits
/// of every element. A 64-bit fingerprint makes hashing and most comparisons O(1).
#[derive(Clone)]
pub struct ConstRef(Arc<ConstInner>);

struct ConstInner {
    elem: ElemType,
    tensor: Arc<Tensor>,
    /// The encoding of `elem` and the shape.
    header: Box<[u64]>,
    fingerprint: u64,
}

impl ConstRef {
    /// A constant of element type `elem`.
    pub fn new(elem: ElemType, tensor: Arc<Tensor>) -> Self {
        let mut header = Vec::new();
        encode_elem(&elem, &mut header);
        push_list(&mut header, tensor.shape());
        let mut fingerprint = Fnv::default();
        header.iter().for_each(|&w| fingerprint.write_u64(w));
        for_each_elem_bits(&tensor, |w| fingerprint.write_u64(w));
        ConstRef(Arc::new(ConstInner {
            elem,
            tensor,
            header: header.into(),
            fingerprint: fingerprint.finish(),
        }))
    }

    /// The declared element type.
    pub fn elem(&self) -> &ElemType {
        &self.0.elem
    }

    /// The data.
    pub fn tensor(&self) -> &Arc<Tensor> {
        &self.0.tensor
    }

    /// Compares the data element by element (bits), after equal headers.
    fn cmp_data(&self, other: &Self) -> Ordering {
        match (self.0.tensor.data(), other.0.tensor.data()) {
            (TensorData::F32(a), TensorData::F32(b)) => a
                .iter()
                .map(|x| x.to_bits())
                .cmp(b.iter().map(|x| x.to_bits())),
            (TensorData::I64(a), TensorData::I64(b)) => a.cmp(b),
            (TensorData::F32(_), TensorData::I64(_)) => Ordering::Less,
            (TensorData::I64(_), TensorData::F32(_)) => Ordering::Greater,
        }
    }
}

impl PartialEq for ConstRef {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ConstRef {}

impl PartialOrd for ConstRef {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ConstRef {
    fn cmp(&self, other: &Self) -> Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return Ordering::Equal;
        }
        self.0
            .fingerprint
            .cmp(&other.0.fingerprint)
            .then_with(|| self.0.header.cmp(&other.0.header))
            .then_with(|| self.cmp_data(other))
    }
}

impl Hash for ConstRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.fingerprint.hash(state);
    }
}

impl fmt::Debug for ConstRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Const({} {:?}, fp {:016x})",
            self.0.elem,
            self.0.tensor.shape(),
            self.0.fingerprint
        )
    }
}

/// 64-bit FNV-1a over words: a deterministic fingerprint (std's hasher is randomly seeded,
/// and the e-graph's order of classes should not depend on a seed).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn for_each_elem_bits(t: &Tensor, mut f: impl FnMut(u64)) {
    match t.data() {
        TensorData::F32(v) => v.iter().for_each(|x| f(u64::from(x.to_bits()))),
        // Distinct from every f32 pattern's word, so an i64 tensor never collides by design.
        TensorData::I64(v) => v.iter().for_each(|&x| f(x as u64 ^ (1 << 63))),
    }
}

// ---- canonical encoding ----
//
// Every op is its kind's number, then its attributes in declaration order: floats by bits,
// booleans as 0/1, lists as their length then their items, nested types by their own tags.
// Lengths first keep the encoding prefix-free, so distinct ops never share a word sequence.

fn push_list(out: &mut Vec<u64>, items: &[usize]) {
    out.push(items.len() as u64);
    out.extend(items.iter().map(|&x| x as u64));
}

fn f32_word(x: f32) -> u64 {
    u64::from(x.to_bits())
}

fn encode_int(t: IntType, out: &mut Vec<u64>) {
    let (tag, bits) = match t {
        IntType::Bipolar => (0, 1),
        IntType::Binary => (1, 1),
        IntType::Signed(b) => (2, b),
        IntType::Unsigned(b) => (3, b),
    };
    out.extend([tag, u64::from(bits)]);
}

fn encode_elem(e: &ElemType, out: &mut Vec<u64>) {
    match e {
        ElemType::F32 => out.push(0),
        ElemType::Int(t) => {
            out.push(1);
            encode_int(*t, out);
        }
        ElemType::Scaled(t, scale) => {
            out.push(2);
            encode_int(*t, out);
            match scale {
                Scale::Tensor(s) => out.extend([0, f32_word(*s)]),
                Scale::Channel { axis, values } => {
                    out.extend([1, *axis as u64, values.len() as u64]);
                    out.extend(values.iter().map(|&v| f32_word(v)));
                }
            }
        }
    }
}

fn rounding_word(r: RoundingMode) -> u64 {
    match r {
        RoundingMode::HalfEven => 0,
        RoundingMode::Ceil => 1,
        RoundingMode::Floor => 2,
        RoundingMode::Up => 3,
        RoundingMode::Down => 4,
        RoundingMode::HalfUp => 5,
        RoundingMode::HalfDown => 6,
    }
}

fn encode_pool(p: &bnnc_ir::PoolAttrs, out: &mut Vec<u64>) {
    push_list(out, &p.kernel);
    push_list(out, &p.strides);
    push_list(out, &p.dilations);
    push_list(out, &p.pads);
    out.extend([u64::from(p.ceil_mode), u64::from(p.count_include_pad)]);
}

fn encode_op(op: &Op, out: &mut Vec<u64>) {
    use bnnc_ir::{BinaryOp, CompareOp};
    let b = |x: bool| u64::from(x);
    match op {
        Op::Quant(q) => out.extend([0, b(q.signed), b(q.narrow), rounding_word(q.rounding)]),
        Op::BipolarQuant => out.push(1),
        Op::Trunc(t) => out.extend([
            2,
            rounding_word(t.rounding),
            b(t.signed),
            b(t.narrow),
            b(t.v2),
        ]),
        Op::MultiThreshold(t) | Op::Threshold(t) => {
            let tag = if matches!(op, Op::MultiThreshold(_)) {
                3
            } else {
                4
            };
            out.extend([
                tag,
                f32_word(t.out_scale),
                f32_word(t.out_bias),
                t.channel_axis as u64,
            ]);
            encode_elem(&t.out_type, out);
        }
        Op::QuantizeLinear { axis, out: int } => {
            out.extend([5, *axis as u64]);
            encode_int(*int, out);
        }
        Op::DequantizeLinear { axis } => out.extend([6, *axis as u64]),
        Op::Clip { min, max } => out.extend([7, f32_word(*min), f32_word(*max)]),
        Op::Conv(c) | Op::XnorConv(c) => {
            out.push(if matches!(op, Op::Conv(_)) { 8 } else { 9 });
            push_list(out, &c.kernel);
            push_list(out, &c.strides);
            push_list(out, &c.dilations);
            push_list(out, &c.pads);
            out.push(c.group as u64);
        }
        Op::Gemm(g) => out.extend([
            10,
            f32_word(g.alpha),
            f32_word(g.beta),
            b(g.trans_a),
            b(g.trans_b),
        ]),
        Op::MatMul => out.push(11),
        Op::BatchNorm { epsilon } => out.extend([12, f32_word(*epsilon)]),
        Op::MaxPool(p) | Op::AveragePool(p) => {
            out.push(if matches!(op, Op::MaxPool(_)) { 13 } else { 14 });
            encode_pool(p, out);
        }
        Op::GlobalAveragePool => out.push(15),
        Op::ReduceMean { axes, keep_dims } => {
            out.push(16);
            push_list(out, axes);
            out.push(b(*keep_dims));
        }
        Op::Binary(kind) => {
            let k = match kind {
                BinaryOp::Add => 0,
                BinaryOp::Sub => 1,
                BinaryOp::Mul => 2,
                BinaryOp::Div => 3,
                BinaryOp::Pow => 4,
                BinaryOp::Min => 5,
                BinaryOp::Max => 6,
            };
            out.extend([17, k]);
        }
        Op::Abs => out.push(30),
        Op::Round => out.push(31),
        Op::Compare(c) => {
            let k = match c {
                CompareOp::Less => 0,
                CompareOp::LessOrEqual => 1,
                CompareOp::Greater => 2,
                CompareOp::GreaterOrEqual => 3,
                CompareOp::Equal => 4,
            };
            out.extend([32, k]);
        }
        Op::Relu => out.push(18),
        Op::Sign => out.push(19),
        Op::Reshape { shape } => {
            out.push(20);
            push_list(out, shape);
        }
        Op::Transpose { perm } => {
            out.push(21);
            push_list(out, perm);
        }
        Op::Pad { pads, value } => {
            out.push(22);
            push_list(out, pads);
            out.push(f32_word(*value));
        }
        Op::Concat { axis } => out.extend([23, *axis as u64]),
        Op::Softmax { axis, coerce_2d } => out.extend([24, *axis as u64, b(*coerce_2d)]),
        Op::TopK {
            k,
            axis,
            largest,
            sorted,
        } => out.extend([25, *k as u64, *axis as u64, b(*largest), b(*sorted)]),
        Op::XnorMatMul => out.push(26),
        Op::BitSerialMatMul { a_scale } => out.extend([27, f32_word(*a_scale)]),
        Op::BitSerialConv { attrs: c, a_scale } => {
            out.push(29);
            push_list(out, &c.kernel);
            push_list(out, &c.strides);
            push_list(out, &c.dilations);
            push_list(out, &c.pads);
            out.push(f32_word(*a_scale));
        }
        Op::MinMaxPool { attrs: p, min } => {
            out.push(28);
            encode_pool(p, out);
            out.extend(min.iter().map(|&m| b(m)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bnnc_ir::BinaryOp;

    #[test]
    fn op_keys_compare_floats_by_bits() {
        let clip = |min: f32| OpKey::new(Op::Clip { min, max: 1.0 });
        assert_eq!(clip(0.0), clip(0.0));
        assert_ne!(clip(0.0), clip(-0.0));
        assert_eq!(clip(f32::NAN), clip(f32::NAN));
        assert_ne!(
            OpKey::new(Op::Binary(BinaryOp::Add)),
            OpKey::new(Op::Binary(BinaryOp::Sub))
        );
    }

    #[test]
    fn equal_constants_are_one_enode() {
        let t = |v: f32| Arc::new(Tensor::f32(vec![2], vec![v, 1.0]));
        let a = BnnLang::Const(ConstRef::new(ElemType::F32, t(0.5)));
        let b = BnnLang::Const(ConstRef::new(ElemType::F32, t(0.5)));
        let c = BnnLang::Const(ConstRef::new(ElemType::F32, t(-0.5)));
        let d = BnnLang::Const(ConstRef::new(ElemType::BIPOLAR, t(1.0)));
        let e = BnnLang::Const(ConstRef::new(ElemType::F32, t(1.0)));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // The same data under another element type is another constant.
        assert_ne!(d, e);
    }

    #[test]
    fn ops_of_one_kind_sort_together() {
        // egg finds the nodes of one discriminant in a sorted class as one run.
        let id = Id::from(0);
        let mut nodes = [
            BnnLang::op(Op::Reshape { shape: vec![4] }, vec![id]),
            BnnLang::op(Op::Relu, vec![id]),
            BnnLang::op(Op::Reshape { shape: vec![2, 2] }, vec![id]),
            BnnLang::op(Op::Sign, vec![id]),
        ];
        nodes.sort();
        let kinds: Vec<_> = nodes.iter().map(|n| n.discriminant()).collect();
        let reshape = BnnDiscriminant::Op("reshape");
        let first = kinds.iter().position(|k| *k == reshape).unwrap();
        assert_eq!(kinds[first + 1], reshape);
    }
}
