//! The parser of the text form: the inverse of [`super::print_graph_full`].
//!
//! It reads what the printer writes, and a little more for hand-written graphs: a node's
//! `; name` may be left out (the node is then named after its first result). Result types are
//! written, as the printer writes them, and must be the types inference gives: a graph whose
//! text says one thing and whose ops compute another is an error, not a silent fix. The graph
//! is verified before it is returned.
//!
//! Nodes are stored in the reverse of the text's order. [`Graph::topo_order`] (a depth-first
//! search from each node in storage order) then gives back the text's order exactly, so a
//! printed graph parses to one that prints the same, independent nodes included.

use std::collections::HashMap;

use crate::graph::{Graph, ValueId};
use crate::op::{
    BinaryOp, CompareOp, ConvAttrs, GemmAttrs, Op, PoolAttrs, QuantAttrs, RoundingMode,
    ThresholdAttrs, TruncAttrs,
};
use crate::tensor::Tensor;
use crate::types::{ElemType, IntType, Scale, TensorType};

/// What is wrong in the text, and where: line and column count from 1, columns in characters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses the text form of a graph (as [`super::print_graph_full`] writes it) and verifies the
/// graph. A constant summarized by [`super::print_graph`] (`.. N values, fnv ..`) or a
/// per-channel scale written as its count (`[4]@1`) is an error: its data is not in the text.
pub fn parse_graph(text: &str) -> Result<Graph, ParseError> {
    let mut p = Parser {
        src: text,
        pos: 0,
        end: text.len(),
        graph: Graph::new(""),
        names: HashMap::new(),
    };
    p.graph_text()?;
    Ok(p.graph)
}

type Parse<T> = Result<T, ParseError>;

struct Parser<'a> {
    src: &'a str,
    /// Byte offset of the next character.
    pos: usize,
    /// Where this parser stops: the end of the text, or of one attribute's value.
    end: usize,
    graph: Graph,
    /// The value each name refers to: a name defined again refers to the later definition
    /// from there on, as in the printed order.
    names: HashMap<String, ValueId>,
}

/// The characters of a name that needs no quotes (as the printer decides).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

impl Parser<'_> {
    // ---- positions and errors ----

    fn error_at<T>(&self, pos: usize, message: impl Into<String>) -> Parse<T> {
        let before = &self.src[..pos];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Err(ParseError {
            line,
            column: before[line_start..].chars().count() + 1,
            message: message.into(),
        })
    }

    fn error<T>(&self, message: impl Into<String>) -> Parse<T> {
        self.error_at(self.pos, message)
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..self.end]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Skips spaces and tabs (not line breaks).
    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r')) {
            self.pos += 1;
        }
    }

    /// Skips all white space, line breaks included.
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// Whether the text goes on with `s` (after spaces); consumes it if so.
    fn eat(&mut self, s: &str) -> bool {
        self.skip_spaces();
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, s: &str, what: &str) -> Parse<()> {
        if self.eat(s) {
            Ok(())
        } else {
            let found = self.found();
            self.error(format!("expected {what} `{s}`, found {found}"))
        }
    }

    /// The next token, for messages.
    fn found(&self) -> String {
        let rest = self.rest();
        match rest.chars().next() {
            None => "the end of the text".into(),
            Some('\n') => "the end of the line".into(),
            Some(_) => {
                let token: String = rest
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .take(20)
                    .collect();
                format!("`{token}`")
            }
        }
    }

    // ---- tokens ----

    /// A bare word (`[A-Za-z0-9_.]+`).
    fn word(&mut self) -> &str {
        self.skip_spaces();
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        &self.src[start..self.pos]
    }

    /// A name: a bare word or a quoted string as Rust's `{:?}` writes it.
    fn name(&mut self, what: &str) -> Parse<String> {
        self.skip_spaces();
        if self.peek() == Some('"') {
            return self.quoted();
        }
        let start = self.pos;
        let w = self.word().to_string();
        if w.is_empty() {
            let found = self.found();
            return self.error_at(start, format!("expected {what}, found {found}"));
        }
        Ok(w)
    }

    /// A string in Rust's escaped form (the printer writes names with `{:?}`).
    fn quoted(&mut self) -> Parse<String> {
        let start = self.pos;
        self.bump(); // the opening quote
        let mut s = String::new();
        loop {
            match self.bump() {
                None | Some('\n') => return self.error_at(start, "unterminated quoted name"),
                Some('"') => return Ok(s),
                Some('\\') => {
                    let at = self.pos;
                    let c = match self.bump() {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('0') => '\0',
                        Some(c @ ('\\' | '"' | '\'')) => c,
                        Some('u') => {
                            self.expect("{", "a unicode escape's")?;
                            let hex_start = self.pos;
                            while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                                self.pos += 1;
                            }
                            let hex = &self.src[hex_start..self.pos];
                            let c = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32);
                            self.expect("}", "a unicode escape's")?;
                            match c {
                                Some(c) => c,
                                None => return self.error_at(at, "invalid unicode escape"),
                            }
                        }
                        _ => return self.error_at(at, "unknown escape in a quoted name"),
                    };
                    s.push(c);
                }
                Some(c) => s.push(c),
            }
        }
    }

    /// `%name`.
    fn value_name(&mut self) -> Parse<String> {
        self.expect("%", "a value, starting with")?;
        self.name("a value name")
    }

    /// A value defined earlier.
    fn value_ref(&mut self) -> Parse<ValueId> {
        self.skip_spaces();
        let start = self.pos;
        let name = self.value_name()?;
        match self.names.get(&name) {
            Some(&v) => Ok(v),
            None => self.error_at(start, format!("`%{name}` is not defined before this use")),
        }
    }

    /// An unsigned integer.
    fn usize(&mut self, what: &str) -> Parse<usize> {
        self.skip_spaces();
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        match self.src[start..self.pos].parse() {
            Ok(n) => Ok(n),
            Err(_) => {
                let found = self.found();
                self.error_at(
                    start,
                    format!("expected {what} (an integer), found {found}"),
                )
            }
        }
    }

    /// A number token: an optional sign, then digits, `.`, exponents, or `inf` / `NaN`.
    /// Returns its text; `is_float` is whether it is written as a float (the printer writes
    /// f32 with `{:?}`, which always has a `.`, an exponent, `inf` or `NaN`).
    fn number_token(&mut self) -> Parse<(usize, &str)> {
        self.skip_spaces();
        let start = self.pos;
        if matches!(self.peek(), Some('-' | '+')) {
            self.pos += 1;
        }
        let body = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.')
            || (matches!(self.peek(), Some('-' | '+'))
                && matches!(self.src[..self.pos].chars().last(), Some('e' | 'E')))
        {
            self.bump();
        }
        if self.pos == body {
            let found = self.found();
            return self.error_at(start, format!("expected a number, found {found}"));
        }
        Ok((start, &self.src[start..self.pos]))
    }

    fn f32(&mut self) -> Parse<f32> {
        let (start, token) = self.number_token()?;
        match token.parse::<f32>() {
            Ok(x) => Ok(x),
            Err(_) => {
                let token = token.to_string();
                self.error_at(start, format!("`{token}` is not a number"))
            }
        }
    }

    /// `[a,b,c]` of unsigned integers.
    fn usize_list(&mut self, what: &str) -> Parse<Vec<usize>> {
        self.expect("[", what)?;
        let mut v = Vec::new();
        if self.eat("]") {
            return Ok(v);
        }
        loop {
            v.push(self.usize(what)?);
            if self.eat("]") {
                return Ok(v);
            }
            self.expect(",", "`,` or `]` in")?;
        }
    }

    // ---- types ----

    fn int_type(&mut self) -> Parse<IntType> {
        self.skip_spaces();
        let start = self.pos;
        let w = self.word().to_string();
        let bits = |s: &str| s.parse::<u8>().ok().filter(|b| (2..=64).contains(b));
        let t = match w.as_str() {
            "bipolar" => Some(IntType::Bipolar),
            "binary" => Some(IntType::Binary),
            _ => match w.split_at_checked(1) {
                Some(("i", b)) => bits(b).map(IntType::Signed),
                Some(("u", b)) => bits(b).map(IntType::Unsigned),
                _ => None,
            },
        };
        match t {
            Some(t) => Ok(t),
            None => self.error_at(
                start,
                format!("`{w}` is not an integer type (bipolar, binary, iN or uN, N in 2..=64)"),
            ),
        }
    }

    /// `f32`, an integer type, or an integer type times a scale: `i8*0.5`,
    /// `i8*[0.5, 0.25]@1`.
    fn elem_type(&mut self) -> Parse<ElemType> {
        self.skip_spaces();
        if self.rest().starts_with("f32") && !self.rest()[3..].starts_with(is_name_char) {
            self.pos += 3;
            return Ok(ElemType::F32);
        }
        let int = self.int_type()?;
        if !self.rest().starts_with('*') {
            return Ok(ElemType::Int(int));
        }
        self.pos += 1;
        if !self.rest().starts_with('[') {
            return Ok(ElemType::Scaled(int, Scale::Tensor(self.f32()?)));
        }
        let list_start = self.pos;
        self.pos += 1;
        let mut values = Vec::new();
        let mut all_integers = true;
        if !self.eat("]") {
            loop {
                let (start, token) = self.number_token()?;
                all_integers &= token.bytes().all(|b| b.is_ascii_digit());
                let token = token.to_string();
                match token.parse::<f32>() {
                    Ok(x) => values.push(x),
                    Err(_) => return self.error_at(start, format!("`{token}` is not a number")),
                }
                if self.eat("]") {
                    break;
                }
                self.expect(",", "`,` or `]` in a per-channel scale:")?;
            }
        }
        // The summary writes the count alone (`[4]@1`); the full form writes every scale as a
        // float, with a `.`.
        if values.len() == 1 && all_integers {
            return self.error_at(
                list_start,
                "a per-channel scale written as its count (summarized): the text must hold \
                 every scale (print it with print_graph_full)",
            );
        }
        self.expect("@", "a per-channel scale's axis after")?;
        let axis = self.usize("the scale's axis")?;
        Ok(ElemType::Scaled(
            int,
            Scale::Channel {
                axis,
                values: values.into(),
            },
        ))
    }

    fn tensor_type(&mut self) -> Parse<TensorType> {
        let elem = self.elem_type()?;
        let shape = self.usize_list("a shape")?;
        Ok(TensorType::new(elem, shape))
    }

    // ---- the graph ----

    fn graph_text(&mut self) -> Parse<()> {
        self.skip_ws();
        let start = self.pos;
        if self.word() != "graph" {
            return self.error_at(start, "expected `graph`");
        }
        self.graph.name = self.name("the graph's name")?;
        self.expect("(", "the inputs'")?;
        if !self.eat(")") {
            loop {
                self.skip_spaces();
                let at = self.pos;
                let name = self.value_name()?;
                self.expect(":", "the input's type after")?;
                let ty = self.tensor_type()?;
                self.define(at, &name)?;
                let v = self.graph.add_input(name.clone(), ty);
                self.names.insert(name, v);
                if self.eat(")") {
                    break;
                }
                self.expect(",", "`,` or `)` after an input:")?;
            }
        }
        self.expect("{", "the graph's body")?;
        loop {
            self.skip_ws();
            if self.rest().starts_with("return") {
                self.pos += "return".len();
                break;
            }
            if self.peek().is_none() {
                return self.error("the graph ends without `return`");
            }
            self.statement()?;
        }
        let mut outputs = Vec::new();
        self.skip_spaces();
        if self.peek() == Some('%') {
            loop {
                outputs.push(self.value_ref()?);
                if !self.eat(",") {
                    break;
                }
            }
        }
        self.graph.set_outputs(outputs);
        self.skip_ws();
        self.expect("}", "the graph's end")?;
        let end = self.pos;
        self.skip_ws();
        if self.peek().is_some() {
            let found = self.found();
            return self.error(format!("expected the end of the text, found {found}"));
        }
        let mut order: Vec<_> = self.graph.node_ids().collect();
        order.reverse();
        self.graph.reorder_nodes(&order);
        if let Err(e) = crate::verify::verify(&self.graph) {
            return self.error_at(end, format!("the graph does not verify: {e}"));
        }
        Ok(())
    }

    /// Rejects a name defined twice in a way later uses could not tell apart: two inputs or
    /// constants (all of them precede the nodes in the text).
    fn define(&self, at: usize, name: &str) -> Parse<()> {
        match self.names.get(name) {
            Some(_) => self.error_at(at, format!("`%{name}` is defined twice")),
            None => Ok(()),
        }
    }

    /// `%a: T = const DATA` or `%a: T, %b: T = [fused] op %x, %y {attrs}  ; name`.
    fn statement(&mut self) -> Parse<()> {
        let mut results = Vec::new();
        loop {
            self.skip_spaces();
            let at = self.pos;
            let name = self.value_name()?;
            self.expect(":", "a type after")?;
            self.skip_spaces();
            let type_at = self.pos;
            let ty = self.tensor_type()?;
            results.push((at, name, type_at, ty));
            if !self.eat(",") {
                break;
            }
        }
        self.expect("=", "`=` after the results:")?;
        self.skip_spaces();
        let op_at = self.pos;
        let mut op_name = self.word().to_string();
        if op_name == "const" {
            if results.len() != 1 {
                return self.error_at(op_at, "a constant has one result");
            }
            let (at, name, _, ty) = results.remove(0);
            self.define(at, &name)?;
            let data = self.const_data(&name, &ty)?;
            let v = match self.graph.add_const(name.clone(), Some(ty.elem), data) {
                Ok(v) => v,
                Err(e) => return self.error_at(at, e.to_string()),
            };
            self.names.insert(name, v);
            return self.end_of_line();
        }
        let fused = op_name == "fused";
        if fused {
            self.skip_spaces();
            op_name = self.word().to_string();
        }
        if op_name.is_empty() {
            let found = self.found();
            return self.error(format!("expected an op, found {found}"));
        }
        let mut operands = Vec::new();
        self.skip_spaces();
        if self.peek() == Some('%') {
            loop {
                operands.push(self.value_ref()?);
                if !self.eat(",") {
                    break;
                }
            }
        }
        let attrs = self.attrs()?;
        let op = self.op(op_at, &op_name, attrs, &operands)?;
        self.skip_spaces();
        let node_name = if self.eat(";") {
            if self.rest().starts_with(' ') {
                self.pos += 1;
            }
            if self.peek() == Some('"') {
                self.quoted()?
            } else {
                let line = self.rest().split('\n').next().unwrap_or("");
                let line = line.strip_suffix('\r').unwrap_or(line).to_string();
                self.pos += line.len();
                line
            }
        } else {
            results[0].1.clone()
        };
        let names: Vec<String> = results.iter().map(|r| r.1.clone()).collect();
        let outputs = match self.graph.add_node(node_name, op, &operands, names) {
            Ok(outputs) => outputs,
            Err(e) => return self.error_at(op_at, e.to_string()),
        };
        for ((_, name, type_at, written), &v) in results.into_iter().zip(&outputs) {
            let inferred = &self.graph.value(v).ty;
            if *inferred != written {
                let inferred = super::TypeText(inferred, super::Detail::Full).to_string();
                let written = super::TypeText(&written, super::Detail::Full).to_string();
                return self.error_at(
                    type_at,
                    format!("`%{name}` is written {written}, but its op gives {inferred}"),
                );
            }
            self.names.insert(name, v);
        }
        if fused {
            let n = self.graph.producer(outputs[0]).expect("a node's result");
            self.graph.set_fused(n, true);
        }
        self.end_of_line()
    }

    fn end_of_line(&mut self) -> Parse<()> {
        self.skip_spaces();
        match self.peek() {
            None | Some('\n') => Ok(()),
            Some(_) => {
                let found = self.found();
                self.error(format!("expected the end of the line, found {found}"))
            }
        }
    }

    /// A constant's elements, `[a, b, ..]` (a bare element for shape `[]`). Elements written
    /// as floats make an f32 tensor, as integers an i64 one (the printer writes f32 with a
    /// `.`); an empty constant is i64 when typed `i64`, else f32.
    fn const_data(&mut self, name: &str, ty: &TensorType) -> Parse<Tensor> {
        self.skip_spaces();
        let start = self.pos;
        let mut tokens: Vec<(usize, String)> = Vec::new();
        if ty.shape.is_empty() && self.peek() != Some('[') {
            let (at, t) = self.number_token()?;
            tokens.push((at, t.to_string()));
        } else {
            self.expect("[", "a constant's data")?;
            if !self.eat("]") {
                loop {
                    self.skip_spaces();
                    if self.rest().starts_with("..") {
                        return self.error(format!(
                            "constant `%{name}` is summarized: the text must hold every \
                             element (print it with print_graph_full)"
                        ));
                    }
                    let (at, t) = self.number_token()?;
                    tokens.push((at, t.to_string()));
                    if self.eat("]") {
                        break;
                    }
                    self.expect(",", "`,` or `]` in a constant:")?;
                }
            }
        }
        if tokens.len() != ty.numel() {
            return self.error_at(
                start,
                format!(
                    "constant `%{name}` has {} elements, its type {} holds {}",
                    tokens.len(),
                    super::TypeText(ty, super::Detail::Full),
                    ty.numel()
                ),
            );
        }
        let is_int = |t: &str| {
            let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        };
        let ints = tokens.iter().filter(|(_, t)| is_int(t)).count();
        let as_i64 = if tokens.is_empty() {
            ty.elem == ElemType::I64
        } else if ints == tokens.len() {
            true
        } else if ints == 0 {
            false
        } else {
            let (at, t) = tokens.iter().find(|(_, t)| is_int(t)).expect("counted");
            return self.error_at(
                *at,
                format!(
                    "`{t}` is an integer in a constant of floats: write it `{t}.0` (integers \
                     make an i64 constant)"
                ),
            );
        };
        let shape = ty.shape.clone();
        if as_i64 {
            let mut v = Vec::with_capacity(tokens.len());
            for (at, t) in &tokens {
                match t.parse::<i64>() {
                    Ok(x) => v.push(x),
                    Err(_) => return self.error_at(*at, format!("`{t}` is not an i64")),
                }
            }
            Ok(Tensor::i64(shape, v))
        } else {
            let mut v = Vec::with_capacity(tokens.len());
            for (at, t) in &tokens {
                match t.parse::<f32>() {
                    Ok(x) => v.push(x),
                    Err(_) => return self.error_at(*at, format!("`{t}` is not a number")),
                }
            }
            Ok(Tensor::f32(shape, v))
        }
    }

    /// `{key=value, flag, ...}`: each key with the byte range of its value (empty for a flag).
    fn attrs(&mut self) -> Parse<Attrs> {
        let mut attrs = Attrs::default();
        if !self.eat("{") {
            return Ok(attrs);
        }
        if self.eat("}") {
            return Ok(attrs);
        }
        loop {
            self.skip_spaces();
            let key_at = self.pos;
            let key = self.word().to_string();
            if key.is_empty() {
                let found = self.found();
                return self.error(format!("expected an attribute, found {found}"));
            }
            if attrs.items.iter().any(|a| a.key == key) {
                return self.error_at(key_at, format!("attribute `{key}` is given twice"));
            }
            let value = if self.eat("=") {
                self.skip_spaces();
                let start = self.pos;
                // The value runs to the `,` or `}` outside brackets.
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        None | Some('\n') => {
                            return self.error_at(key_at, "attributes end without `}`")
                        }
                        Some('[') => depth += 1,
                        Some(']') => depth = depth.saturating_sub(1),
                        Some(',' | '}') if depth == 0 => break,
                        _ => {}
                    }
                    self.bump();
                }
                Some((start, self.pos))
            } else {
                None
            };
            attrs.items.push(Attr {
                key,
                key_at,
                value,
                used: false,
            });
            if self.eat("}") {
                return Ok(attrs);
            }
            self.expect(",", "`,` or `}` in the attributes:")?;
        }
    }

    /// Parses `key`'s value with `f`, which must read all of it.
    fn attr_value<T>(
        &mut self,
        attrs: &mut Attrs,
        key: &str,
        op_at: usize,
        f: impl FnOnce(&mut Self) -> Parse<T>,
    ) -> Parse<T> {
        let Some(a) = attrs.items.iter_mut().find(|a| a.key == key) else {
            return self.error_at(op_at, format!("missing attribute `{key}`"));
        };
        a.used = true;
        let Some((start, end)) = a.value else {
            let at = a.key_at;
            return self.error_at(at, format!("attribute `{key}` needs a value (`{key}=..`)"));
        };
        let (pos, limit) = (self.pos, self.end);
        self.pos = start;
        self.end = end;
        let result = f(self).and_then(|v| {
            self.skip_spaces();
            if self.pos != self.end {
                let found = self.found();
                self.error(format!("unexpected {found} in attribute `{key}`"))
            } else {
                Ok(v)
            }
        });
        self.pos = pos;
        self.end = limit;
        result
    }

    /// Builds the op `name` from its attributes; every attribute must be one it has.
    fn op(
        &mut self,
        op_at: usize,
        name: &str,
        mut attrs: Attrs,
        operands: &[ValueId],
    ) -> Parse<Op> {
        let a = &mut attrs;
        let usize_attr =
            |p: &mut Self, a: &mut Attrs, key: &str| p.attr_value(a, key, op_at, |p| p.usize(key));
        let f32_attr =
            |p: &mut Self, a: &mut Attrs, key: &str| p.attr_value(a, key, op_at, Self::f32);
        let list_attr = |p: &mut Self, a: &mut Attrs, key: &str| {
            p.attr_value(a, key, op_at, |p| p.usize_list(key))
        };
        let rounding = |p: &mut Self, a: &mut Attrs| {
            p.attr_value(a, "rounding", op_at, |p| {
                let at = p.pos;
                let w = p.word().to_string();
                match ROUNDING_MODES.iter().find(|m| m.name() == w) {
                    Some(&m) => Ok(m),
                    None => p.error_at(at, format!("`{w}` is not a rounding mode")),
                }
            })
        };
        let conv = |p: &mut Self, a: &mut Attrs, group: bool| -> Parse<ConvAttrs> {
            Ok(ConvAttrs {
                kernel: list_attr(p, a, "kernel")?,
                strides: list_attr(p, a, "strides")?,
                pads: list_attr(p, a, "pads")?,
                dilations: list_attr(p, a, "dilations")?,
                // The bit-serial convolution prints its group only when it has several.
                group: if group || a.has("group") {
                    usize_attr(p, a, "group")?
                } else {
                    1
                },
            })
        };
        let pool = |p: &mut Self, a: &mut Attrs, avg: bool| -> Parse<PoolAttrs> {
            Ok(PoolAttrs {
                kernel: list_attr(p, a, "kernel")?,
                strides: list_attr(p, a, "strides")?,
                pads: list_attr(p, a, "pads")?,
                dilations: list_attr(p, a, "dilations")?,
                ceil_mode: a.flag("ceil_mode"),
                count_include_pad: avg && a.flag("count_include_pad"),
            })
        };
        let threshold = |p: &mut Self, a: &mut Attrs| -> Parse<ThresholdAttrs> {
            Ok(ThresholdAttrs {
                out_type: p.attr_value(a, "out", op_at, Self::elem_type)?,
                out_scale: f32_attr(p, a, "out_scale")?,
                out_bias: f32_attr(p, a, "out_bias")?,
                channel_axis: usize_attr(p, a, "channel_axis")?,
            })
        };
        let op = match name {
            "quant" => Op::Quant(QuantAttrs {
                signed: a.flag("signed"),
                narrow: a.flag("narrow"),
                rounding: rounding(self, a)?,
            }),
            "bipolar_quant" => Op::BipolarQuant,
            "trunc" => Op::Trunc(TruncAttrs {
                rounding: rounding(self, a)?,
                signed: a.flag("signed"),
                narrow: a.flag("narrow"),
                v2: a.flag("v2"),
            }),
            "multithreshold" => Op::MultiThreshold(threshold(self, a)?),
            "threshold" => Op::Threshold(threshold(self, a)?),
            "quantize_linear" => Op::QuantizeLinear {
                axis: usize_attr(self, a, "axis")?,
                out: self.attr_value(a, "out", op_at, Self::int_type)?,
            },
            "dequantize_linear" => Op::DequantizeLinear {
                axis: usize_attr(self, a, "axis")?,
            },
            "clip" => Op::Clip {
                min: f32_attr(self, a, "min")?,
                max: f32_attr(self, a, "max")?,
            },
            "conv" => Op::Conv(conv(self, a, true)?),
            "xnor_conv" => Op::XnorConv(conv(self, a, true)?),
            "gemm" => Op::Gemm(GemmAttrs {
                alpha: f32_attr(self, a, "alpha")?,
                beta: f32_attr(self, a, "beta")?,
                trans_a: a.flag("trans_a"),
                trans_b: a.flag("trans_b"),
            }),
            "matmul" => Op::MatMul,
            "batchnorm" => Op::BatchNorm {
                epsilon: f32_attr(self, a, "epsilon")?,
            },
            "maxpool" => Op::MaxPool(pool(self, a, false)?),
            "avgpool" => Op::AveragePool(pool(self, a, true)?),
            "global_avgpool" => Op::GlobalAveragePool,
            "reduce_mean" => Op::ReduceMean {
                axes: list_attr(self, a, "axes")?,
                keep_dims: a.flag("keep_dims"),
            },
            "relu" => Op::Relu,
            "sign" => Op::Sign,
            "abs" => Op::Abs,
            "round" => Op::Round,
            "reshape" => Op::Reshape {
                shape: list_attr(self, a, "shape")?,
            },
            "transpose" => Op::Transpose {
                perm: list_attr(self, a, "perm")?,
            },
            "pad" => Op::Pad {
                pads: list_attr(self, a, "pads")?,
                value: f32_attr(self, a, "value")?,
            },
            "concat" => Op::Concat {
                axis: usize_attr(self, a, "axis")?,
            },
            "softmax" => Op::Softmax {
                axis: usize_attr(self, a, "axis")?,
                coerce_2d: a.flag("coerce_2d"),
            },
            "topk" => Op::TopK {
                k: usize_attr(self, a, "k")?,
                axis: usize_attr(self, a, "axis")?,
                largest: a.flag("largest"),
                sorted: a.flag("sorted"),
            },
            "xnor_matmul" => Op::XnorMatMul,
            "bitserial_matmul" => Op::BitSerialMatMul {
                a_scale: f32_attr(self, a, "a_scale")?,
            },
            "bitserial_conv" => Op::BitSerialConv {
                attrs: conv(self, a, false)?,
                a_scale: f32_attr(self, a, "a_scale")?,
            },
            "minmaxpool" => {
                let attrs = pool(self, a, false)?;
                let channels = list_attr(self, a, "min_channels")?;
                // The text lists the min channels; the flags run over the input's channels.
                let count = operands
                    .first()
                    .and_then(|&x| self.graph.value(x).ty.shape.get(1).copied())
                    .unwrap_or(0);
                if let Some(&c) = channels.iter().find(|&&c| c >= count) {
                    return self.error_at(
                        op_at,
                        format!("min channel {c} of an input with {count} channels"),
                    );
                }
                let min = (0..count).map(|c| channels.contains(&c)).collect();
                Op::MinMaxPool { attrs, min }
            }
            _ => match (
                BINARY_OPS.iter().find(|b| b.name() == name),
                CompareOp::ALL.iter().find(|c| c.name() == name),
            ) {
                (Some(&b), _) => Op::Binary(b),
                (None, Some(&c)) => Op::Compare(c),
                (None, None) => return self.error_at(op_at, format!("unknown op `{name}`")),
            },
        };
        if let Some(extra) = attrs.items.iter().find(|a| !a.used) {
            return self.error_at(
                extra.key_at,
                format!("`{name}` has no attribute `{}`", extra.key),
            );
        }
        Ok(op)
    }
}

const ROUNDING_MODES: [RoundingMode; 7] = [
    RoundingMode::HalfEven,
    RoundingMode::Ceil,
    RoundingMode::Floor,
    RoundingMode::Up,
    RoundingMode::Down,
    RoundingMode::HalfUp,
    RoundingMode::HalfDown,
];

const BINARY_OPS: [BinaryOp; 7] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Pow,
    BinaryOp::Min,
    BinaryOp::Max,
];

/// A node's attributes as written, each marked once an op takes it.
#[derive(Default)]
struct Attrs {
    items: Vec<Attr>,
}

struct Attr {
    key: String,
    key_at: usize,
    /// The byte range of the value; `None` for a bare flag.
    value: Option<(usize, usize)>,
    used: bool,
}

impl Attrs {
    /// Whether attribute `key` is written (with or without a value).
    fn has(&self, key: &str) -> bool {
        self.items.iter().any(|a| a.key == key)
    }

    /// Whether the bare flag `key` is present.
    fn flag(&mut self, key: &str) -> bool {
        match self.items.iter_mut().find(|a| a.key == key) {
            Some(a) if a.value.is_none() => {
                a.used = true;
                true
            }
            // A flag with a value stays unused and is reported as not an attribute of the op.
            _ => false,
        }
    }
}
