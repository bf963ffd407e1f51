//! A one-pass check that accepts the plain JSON objects nearly every detail
//! is, without serde: no allocation, no recursion.
//!
//! It answers "certainly valid" or "not sure". Certainly valid means: one
//! JSON object (RFC 8259) and nothing after it but whitespace, nested at
//! most [`MAX_DEPTH`] levels, whose numbers cannot overflow an f64 and whose
//! strings hold no `\u` escape of a UTF-16 surrogate. Everything else
//! (invalid JSON, but also valid JSON this check will not vouch for: a
//! surrogate pair escape, a number such as `1e400`) is "not sure", and the
//! caller decides with the full decode, which also words the error. So this
//! check need only never accept what the full decode refuses; the unit
//! tests and the `detail_json` fuzz target hold it to that.

/// Deepest nesting accepted (the detail rule's limit).
pub const MAX_DEPTH: u32 = super::limits::MAX_DETAIL_DEPTH as u32;

/// Whether `text` is certainly one valid JSON object (see the module docs).
pub fn is_plain_json_object(text: &str) -> bool {
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
    };
    p.ws();
    if p.peek() != Some(b'{') {
        return false;
    }
    // Bit `d` tells whether the container at depth `d` is an object.
    let mut objects: u128 = 0;
    let mut depth: u32 = 0;
    loop {
        // At the start of a value.
        p.ws();
        match p.peek() {
            Some(open @ (b'{' | b'[')) => {
                p.i += 1;
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
                let object = open == b'{';
                if object {
                    objects |= 1 << depth;
                } else {
                    objects &= !(1 << depth);
                }
                p.ws();
                let close = if object { b'}' } else { b']' };
                if p.peek() == Some(close) {
                    p.i += 1;
                    depth -= 1;
                } else if object {
                    if !p.key() {
                        return false;
                    }
                    continue;
                } else {
                    continue;
                }
            }
            Some(b'"') => {
                if !p.string() {
                    return false;
                }
            }
            Some(b't') => {
                if !p.literal(b"true") {
                    return false;
                }
            }
            Some(b'f') => {
                if !p.literal(b"false") {
                    return false;
                }
            }
            Some(b'n') => {
                if !p.literal(b"null") {
                    return false;
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                if !p.number() {
                    return false;
                }
            }
            _ => return false,
        }
        // After a value: close containers or move to the next member.
        loop {
            p.ws();
            if depth == 0 {
                return p.i == p.b.len();
            }
            let object = objects & (1 << depth) != 0;
            match p.next() {
                Some(b',') => {
                    if object && !p.key() {
                        return false;
                    }
                    break;
                }
                Some(b'}') if object => depth -= 1,
                Some(b']') if !object => depth -= 1,
                _ => return false,
            }
        }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A member's key and its colon.
    fn key(&mut self) -> bool {
        self.ws();
        if self.peek() != Some(b'"') || !self.string() {
            return false;
        }
        self.ws();
        self.next() == Some(b':')
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    /// A string, from its opening quote. The text is UTF-8 already (a
    /// `&str`); what is checked is the JSON: escapes, and no raw control
    /// characters.
    fn string(&mut self) -> bool {
        self.i += 1;
        loop {
            match self.next() {
                None => return false,
                Some(b'"') => return true,
                Some(b'\\') => match self.next() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                    Some(b'u') => {
                        let Some(hex) = self.b.get(self.i..self.i + 4) else {
                            return false;
                        };
                        let Some(unit) = hex.iter().try_fold(0u32, |acc, &h| {
                            char::from(h).to_digit(16).map(|d| acc * 16 + d)
                        }) else {
                            return false;
                        };
                        // Surrogates (pairs included) are left to the full decode.
                        if (0xD800..=0xDFFF).contains(&unit) {
                            return false;
                        }
                        self.i += 4;
                    }
                    _ => return false,
                },
                Some(0x00..=0x1F) => return false,
                Some(_) => {}
            }
        }
    }

    /// A number, accepted only when it cannot overflow an f64: at most 300
    /// integer digits plus a positive exponent (f64 reaches about 1.8e308).
    fn number(&mut self) -> bool {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.digits(),
            _ => return false,
        }
        let int_digits = self.i - int_start;
        if self.peek() == Some(b'.') {
            self.i += 1;
            let start = self.i;
            self.digits();
            if self.i == start {
                return false;
            }
        }
        let mut exponent: usize = 0;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            let negative = match self.peek() {
                Some(b'-') => {
                    self.i += 1;
                    true
                }
                Some(b'+') => {
                    self.i += 1;
                    false
                }
                _ => false,
            };
            let start = self.i;
            self.digits();
            let digits = &self.b[start..self.i];
            if digits.is_empty() || digits.len() > 4 {
                return false;
            }
            if !negative {
                exponent = digits
                    .iter()
                    .fold(0, |acc, d| acc * 10 + usize::from(d - b'0'));
            }
        }
        int_digits + exponent <= 300
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the full decode says: one JSON object serde_json accepts.
    fn serde_object(text: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.is_object())
    }

    #[test]
    fn plain_objects_are_vouched_for() {
        for text in [
            "{}",
            " \t\r\n{ } \n",
            r#"{"a":1}"#,
            r#"{"invoice":"in_1","amount_due":125000,"paid":true,"lines":[{"id":"x","amount":-1.5e3,"q":2},{}],"n":null,"f":false}"#,
            r#"{"s":"esc \" \\ \/ \b \f \n \r \t \u00e9 \u0041","e":"","u":"h\u00e9llo wörld ✓"}"#,
            r#"{"a":[[],[[]],{"b":{"c":[1,2,3]}}],"z":0,"y":-0,"x":0.5,"w":1E+2,"v":1e-400}"#,
            &format!("{{\"big\":{}}}", "9".repeat(300)),
        ] {
            assert!(is_plain_json_object(text), "{text}");
            assert!(serde_object(text), "{text}");
        }
    }

    #[test]
    fn never_vouches_for_what_the_full_decode_refuses() {
        let deep_ok = format!(
            "{}{}",
            "{\"a\":".repeat(127),
            "1".to_string() + &"}".repeat(127)
        );
        let too_deep = format!("{}1{}", "[".repeat(127), "]".repeat(127));
        let too_deep = format!("{{\"a\":{too_deep}}}");
        assert!(is_plain_json_object(&deep_ok));
        assert!(!is_plain_json_object(&too_deep), "128 levels");
        for text in [
            "",
            "[]",
            "1",
            "\"s\"",
            "{",
            "}",
            "{} {}",
            "{}x",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{,"a":1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{a:1}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":+1}"#,
            r#"{"a":-}"#,
            r#"{"a":1e400}"#,
            r#"{"a":1e99999}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":True}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\uZZZZ"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud83d\ude00"}"#,
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"nul\u{0}\"}",
            r#"{"a":"open}"#,
            "{\"a\":1}\u{a0}",
            r#"{"a":[}"#,
            r#"{"a":{]}"#,
        ] {
            assert!(
                !is_plain_json_object(text) || serde_object(text),
                "vouched for {text:?}, which serde_json refuses"
            );
        }
        // Valid, but left to the full decode: a surrogate pair, a number
        // this check cannot bound.
        assert!(!is_plain_json_object(r#"{"a":"\ud83d\ude00"}"#));
        assert!(!is_plain_json_object(&format!(
            "{{\"a\":{}}}",
            "9".repeat(301)
        )));
    }

    proptest::proptest! {
        /// Random text over JSON's alphabet: never vouched for unless serde accepts.
        #[test]
        fn agrees_with_serde_on_random_text(text in r#"[{}\[\]":,0-9eE+\-. tfnrulasx\\]{0,40}"#) {
            proptest::prop_assert!(!is_plain_json_object(&text) || serde_object(&text));
        }
    }
}
