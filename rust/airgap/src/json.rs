//! Just enough JSON writing for one flat record: no parsing, no crate.

pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An object built field by field, in insertion order.
pub struct Object {
    fields: Vec<String>,
}

impl Object {
    pub fn new() -> Self {
        Object { fields: Vec::new() }
    }

    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        self.fields.push(format!("{}:{}", quote(key), quote(value)));
        self
    }

    /// `value` must already be JSON (a number, a boolean, null, an object or a list).
    pub fn raw(&mut self, key: &str, value: &str) -> &mut Self {
        self.fields.push(format!("{}:{}", quote(key), value));
        self
    }

    pub fn finish(&self) -> String {
        format!("{{{}}}", self.fields.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(quote("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        let mut obj = Object::new();
        obj.string("k", "v").raw("n", "1");
        assert_eq!(obj.finish(), "{\"k\":\"v\",\"n\":1}");
    }
}
