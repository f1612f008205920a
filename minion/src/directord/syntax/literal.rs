//! Python-style literals (`ast.literal_eval` for the common cases).

use serde_json::{json, Map, Value};

/// Python's `ast.literal_eval` for the common cases (strings, numbers, `True`/`False`/`None`,
/// lists, tuples, dicts), falling back to the text itself.
pub fn literal(text: &str) -> Value {
    let t = text.trim();
    let mut p = Lit {
        s: t.as_bytes(),
        i: 0,
        src: t,
    };
    match p.value() {
        Some(v) => {
            p.ws();
            if p.i == p.s.len() {
                v
            } else {
                Value::String(t.into())
            }
        }
        None => Value::String(t.into()),
    }
}

struct Lit<'a> {
    s: &'a [u8],
    i: usize,
    src: &'a str,
}

impl Lit<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<Value> {
        self.ws();
        match self.peek()? {
            b'[' => self.seq(b']'),
            b'(' => self.seq(b')'),
            b'{' => self.dict(),
            b'\'' | b'"' => self.string().map(Value::String),
            _ => self.atom(),
        }
    }

    fn seq(&mut self, close: u8) -> Option<Value> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Some(Value::Array(items));
            }
            items.push(self.value()?);
            if !self.eat(b',') {
                return self.eat(close).then_some(Value::Array(items));
            }
        }
    }

    fn dict(&mut self) -> Option<Value> {
        self.i += 1;
        let mut m = Map::new();
        loop {
            if self.eat(b'}') {
                return Some(Value::Object(m));
            }
            let k = match self.value()? {
                Value::String(s) => s,
                other => other.to_string(),
            };
            if !self.eat(b':') {
                return None;
            }
            let v = self.value()?;
            m.insert(k, v);
            if !self.eat(b',') {
                return self.eat(b'}').then_some(Value::Object(m));
            }
        }
    }

    fn string(&mut self) -> Option<String> {
        let q = self.peek()?;
        self.i += 1;
        let mut out = String::new();
        let rest = &self.src[self.i..];
        let mut it = rest.char_indices();
        while let Some((k, c)) = it.next() {
            if c as u32 == u32::from(q) {
                self.i += k + 1;
                return Some(out);
            }
            if c == '\\' {
                match it.next()?.1 {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '0' => out.push('\0'),
                    other => out.push(other),
                }
            } else {
                out.push(c);
            }
        }
        None
    }

    fn atom(&mut self) -> Option<Value> {
        let start = self.i;
        while self.i < self.s.len()
            && !matches!(self.s[self.i], b',' | b']' | b')' | b'}' | b':')
            && !self.s[self.i].is_ascii_whitespace()
        {
            self.i += 1;
        }
        let word = &self.src[start..self.i];
        match word {
            "True" => Some(Value::Bool(true)),
            "False" => Some(Value::Bool(false)),
            "None" => Some(Value::Null),
            w => {
                let w2 = w.replace('_', "");
                if let Ok(n) = w2.parse::<i64>() {
                    Some(json!(n))
                } else if w.chars().any(|c| c.is_ascii_digit()) {
                    w2.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(|f| json!(f))
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_literals() {
        assert_eq!(literal("['test']"), json!(["test"]));
        assert_eq!(literal(r#"{"a": "b"}"#), json!({"a": "b"}));
        assert_eq!(literal("1"), json!(1));
        assert_eq!(literal("1.2"), json!(1.2));
        assert_eq!(literal("True"), json!(true));
        assert_eq!(literal("argument"), json!("argument"));
        assert_eq!(literal("hello world"), json!("hello world"));
        assert_eq!(literal("'quoted text'"), json!("quoted text"));
        assert_eq!(
            literal("{'a': [1, 2.5, None]}"),
            json!({"a": [1, 2.5, null]})
        );
    }
}
