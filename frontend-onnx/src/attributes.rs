//! Typed access to a node's attributes.
//!
//! Past the frontend there are no string-keyed attribute maps: the op importers read each
//! attribute here, with its type checked and its default applied, into the IR's typed
//! attributes. Errors are reasons without the node's name (the caller adds it).

use crate::proto::{AttributeProto, AttributeType, TensorProto};

/// The attributes of one node.
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    attrs: &'a [AttributeProto],
}

impl<'a> Attributes<'a> {
    /// A view of `attrs`.
    pub fn new(attrs: &'a [AttributeProto]) -> Self {
        Attributes { attrs }
    }

    /// The attribute `name`, if it is there, after checking it holds a value of type `ty`.
    fn get(&self, name: &str, ty: AttributeType) -> Result<Option<&'a AttributeProto>, String> {
        let Some(attr) = self.attrs.iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        // IR version 1 models leave `type` unset: trust the field the caller reads.
        if attr.r#type != ty as i32 && attr.r#type != AttributeType::Undefined as i32 {
            let found = AttributeType::try_from(attr.r#type)
                .map_or_else(|_| format!("type {}", attr.r#type), |t| format!("{t:?}"));
            return Err(format!("attribute `{name}` is {found}, expected {ty:?}"));
        }
        Ok(Some(attr))
    }

    /// An integer attribute.
    pub fn int(&self, name: &str) -> Result<Option<i64>, String> {
        Ok(self.get(name, AttributeType::Int)?.map(|a| a.i))
    }

    /// An integer attribute, or `default` when absent.
    pub fn int_or(&self, name: &str, default: i64) -> Result<i64, String> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    /// A flag stored as an integer 0 or 1, or `default` when absent.
    pub fn flag_or(&self, name: &str, default: bool) -> Result<bool, String> {
        match self.int(name)? {
            None => Ok(default),
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(v) => Err(format!("attribute `{name}` is {v}, expected 0 or 1")),
        }
    }

    /// A list of integers.
    pub fn ints(&self, name: &str) -> Result<Option<&'a [i64]>, String> {
        Ok(self
            .get(name, AttributeType::Ints)?
            .map(|a| a.ints.as_slice()))
    }

    /// A float attribute.
    pub fn float(&self, name: &str) -> Result<Option<f32>, String> {
        Ok(self.get(name, AttributeType::Float)?.map(|a| a.f))
    }

    /// A float attribute, or `default` when absent.
    pub fn float_or(&self, name: &str, default: f32) -> Result<f32, String> {
        Ok(self.float(name)?.unwrap_or(default))
    }

    /// A list of floats.
    pub fn floats(&self, name: &str) -> Result<Option<&'a [f32]>, String> {
        Ok(self
            .get(name, AttributeType::Floats)?
            .map(|a| a.floats.as_slice()))
    }

    /// A string attribute (UTF-8).
    pub fn string(&self, name: &str) -> Result<Option<&'a str>, String> {
        match self.get(name, AttributeType::String)? {
            None => Ok(None),
            Some(a) => std::str::from_utf8(&a.s)
                .map(Some)
                .map_err(|_| format!("attribute `{name}` is not UTF-8")),
        }
    }

    /// A string attribute, or `default` when absent.
    pub fn string_or(&self, name: &str, default: &'a str) -> Result<&'a str, String> {
        Ok(self.string(name)?.unwrap_or(default))
    }

    /// A tensor attribute.
    pub fn tensor(&self, name: &str) -> Result<Option<&'a TensorProto>, String> {
        match self.get(name, AttributeType::Tensor)? {
            None => Ok(None),
            Some(a) => {
                a.t.as_ref()
                    .map(Some)
                    .ok_or_else(|| format!("attribute `{name}` holds no tensor"))
            }
        }
    }

    /// The names of the attributes that are there.
    pub fn names(&self) -> impl Iterator<Item = &'a str> {
        self.attrs.iter().map(|a| a.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int_attr(name: &str, i: i64) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            i,
            r#type: AttributeType::Int as i32,
            ..Default::default()
        }
    }

    #[test]
    fn typed_access() {
        let attrs = [
            int_attr("group", 2),
            int_attr("flag", 3),
            AttributeProto {
                name: "pads".into(),
                ints: vec![1, 1],
                r#type: AttributeType::Ints as i32,
                ..Default::default()
            },
            AttributeProto {
                name: "legacy".into(),
                f: 0.5,
                ..Default::default()
            },
        ];
        let a = Attributes::new(&attrs);
        assert_eq!(a.int_or("group", 1), Ok(2));
        assert_eq!(a.int_or("missing", 1), Ok(1));
        assert_eq!(a.ints("pads"), Ok(Some(&[1i64, 1][..])));
        assert_eq!(a.float("legacy"), Ok(Some(0.5)));
        assert_eq!(
            a.float("group"),
            Err("attribute `group` is Int, expected Float".into())
        );
        assert!(a.flag_or("flag", false).is_err());
        assert_eq!(a.names().count(), 4);
    }
}
