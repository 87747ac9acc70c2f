//! A reader for the shape nearly every `POST /v1/events` body has: `{"events": [...]}` whose
//! events hold only `id`, `customer`, `metric`, `timestamp` (strings without escapes) and `value`
//! (a number, or a string without escapes). It does in one tight pass what serde_json does with
//! far more bookkeeping per field.
//!
//! Anything else — escapes, `null`, `properties`, other or repeated fields, another layout —
//! answers `None` and the body goes to serde_json, so that this reader only accepts bodies that
//! serde_json reads into exactly the same events.

use std::borrow::Cow;

use super::{RawText, Text, WireEvent};

/// Hands each event of `body` to `each` with its index and answers how many there were, or
/// `None` when the body is not of the common shape (then what `each` was given is to be
/// forgotten: the body has to be read by serde_json).
pub(super) fn parse<'a>(
    body: &'a str,
    mut each: impl FnMut(usize, WireEvent<'a>),
) -> Option<usize> {
    let mut r = Reader { s: body, i: 0 };
    r.ws();
    r.eat(b'{')?;
    r.ws();
    if r.string()? != "events" {
        return None;
    }
    r.ws();
    r.eat(b':')?;
    r.ws();
    r.eat(b'[')?;
    r.ws();
    let mut n = 0;
    if r.peek() == Some(b']') {
        r.i += 1;
    } else {
        loop {
            each(n, r.event()?);
            n += 1;
            r.ws();
            match r.peek()? {
                b',' => {
                    r.i += 1;
                    r.ws();
                }
                b']' => {
                    r.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    r.ws();
    r.eat(b'}')?;
    r.ws();
    (r.i == body.len()).then_some(n)
}

enum Field {
    Id,
    Customer,
    Metric,
    Value,
    Timestamp,
}

struct Reader<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// JSON's whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// A string without escapes or control characters (which JSON forbids), without its quotes.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let end = closing_quote(self.s.as_bytes(), start)?;
        let text = self.s.get(start..end)?;
        self.i = end + 1;
        Some(text)
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// A number as JSON defines it, as written.
    fn number(&mut self) -> Option<&'a str> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        self.s.get(start..self.i)
    }

    fn event(&mut self) -> Option<WireEvent<'a>> {
        self.eat(b'{')?;
        self.ws();
        let mut e = WireEvent {
            id: None,
            customer: None,
            metric: None,
            value: None,
            timestamp: None,
            properties: None,
        };
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Some(e);
        }
        loop {
            let field = self.field()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            let slot = match field {
                Field::Id => &mut e.id,
                Field::Customer => &mut e.customer,
                Field::Metric => &mut e.metric,
                Field::Timestamp => &mut e.timestamp,
                Field::Value if e.value.is_none() => {
                    let start = self.i;
                    let text = if self.peek() == Some(b'"') {
                        self.string()?;
                        self.s.get(start..self.i)?
                    } else {
                        self.number()?
                    };
                    e.value = Some(RawText(text));
                    if self.end_of_member()? {
                        return Some(e);
                    }
                    continue;
                }
                Field::Value => return None,
            };
            if slot.is_some() {
                return None;
            }
            *slot = Some(Text(Cow::Borrowed(self.string()?)));
            if self.end_of_member()? {
                return Some(e);
            }
        }
    }

    /// The name of a field this reader takes, written plainly (`None` for any other name).
    fn field(&mut self) -> Option<Field> {
        let rest = self.s.as_bytes().get(self.i..)?;
        let (field, len) = match rest.get(1)? {
            b'i' if rest.starts_with(b"\"id\"") => (Field::Id, 4),
            b'c' if rest.starts_with(b"\"customer\"") => (Field::Customer, 10),
            b'm' if rest.starts_with(b"\"metric\"") => (Field::Metric, 8),
            b'v' if rest.starts_with(b"\"value\"") => (Field::Value, 7),
            b't' if rest.starts_with(b"\"timestamp\"") => (Field::Timestamp, 11),
            _ => return None,
        };
        self.i += len;
        Some(field)
    }

    /// After a member: `Some(true)` at the end of the object, `Some(false)` before another one.
    fn end_of_member(&mut self) -> Option<bool> {
        self.ws();
        match self.peek()? {
            b',' => {
                self.i += 1;
                self.ws();
                Some(false)
            }
            b'}' => {
                self.i += 1;
                Some(true)
            }
            _ => None,
        }
    }
}

/// The position of the `"` that ends a string starting at `i`, or `None` when a `\\` or a
/// control character comes first (or nothing ends it). Eight bytes at a time.
fn closing_quote(bytes: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // High bit of each byte below `n` (exact for the lowest such byte, which is all that is used).
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().ok()?);
        let hits = below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20);
        if hits != 0 {
            let j = i + (hits.trailing_zeros() / 8) as usize;
            return (bytes.get(j) == Some(&b'"')).then_some(j);
        }
        i += 8;
    }
    loop {
        match *bytes.get(i)? {
            b'"' => return Some(i),
            b'\\' | 0..=0x1f => return None,
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serde_json reads from `body`, as comparable text.
    fn by_serde(body: &str) -> Option<Vec<String>> {
        let b: super::super::ParsedBody<'_> = serde_json::from_str(body).ok()?;
        Some(b.events?.0.iter().map(show).collect())
    }

    fn show(e: &WireEvent<'_>) -> String {
        let t = |t: &Option<Text<'_>>| t.as_ref().map(|t| t.0.to_string());
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?}",
            t(&e.id),
            t(&e.customer),
            t(&e.metric),
            e.value.as_ref().map(|v| v.0),
            t(&e.timestamp),
            e.properties
        )
    }

    #[test]
    fn reads_the_common_shape_as_serde_json_does() {
        for body in [
            r#"{"events":[{"id":"evt_1","customer":"acme","metric":"compute_hours","value":2.5,"timestamp":"2026-11-21T10:00:00Z"}]}"#,
            " \n{ \"events\" : [ { \"id\" : \"a\" , \"value\" : \"-1e3\" } , {\"metric\":\"m\",\"value\":-0.5E+2} ] }\t",
            r#"{"events":[]}"#,
            r#"{"events":[{}]}"#,
            r#"{"events":[{"id":"é ✓","value":0}]}"#,
        ] {
            let mut events = Vec::new();
            let n = parse(body, |i, e| {
                assert_eq!(i, events.len());
                events.push(show(&e));
            });
            let fast = n.map(|n| {
                assert_eq!(n, events.len());
                events
            });
            assert!(fast.is_some(), "{body}");
            assert_eq!(fast, by_serde(body), "{body}");
        }
    }

    #[test]
    fn finds_the_end_of_strings_eight_bytes_at_a_time() {
        let cases: &[(&str, Option<usize>)] = &[
            ("abc\"", Some(3)),
            ("abcdefghijkl\"x", Some(12)),
            ("abcdefgh\"", Some(8)),
            ("abcdefg\\\"", None),
            ("abcdefghij\u{1f}k\"", None),
            ("ééééééé\"", Some(14)),
            (
                "\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\"",
                Some(9),
            ),
            ("abcdefghijklmnop", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(closing_quote(s.as_bytes(), 0), *want, "{s:?}");
        }
    }

    #[test]
    fn leaves_everything_else_to_serde_json() {
        for body in [
            r#"{"events":[{"id":"a\"b"}]}"#,
            r#"{"events":[{"id":null}]}"#,
            r#"{"events":[{"id":"a","id":"b"}]}"#,
            r#"{"events":[{"value":1,"value":2}]}"#,
            r#"{"events":[{"properties":{}}]}"#,
            r#"{"events":[{"other":"x"}]}"#,
            r#"{"events":[{"id":"a",}]}"#,
            r#"{"events":[{"id":"a"},]}"#,
            r#"{"events":[{"value":01}]}"#,
            r#"{"events":[{"value":1.}]}"#,
            r#"{"events":[{"value":-}]}"#,
            r#"{"events":[{"value":1e}]}"#,
            r#"{"events":[{"value":true}]}"#,
            r#"{"events":[{"value":1x}]}"#,
            r#"{"events":[{"id":5}]}"#,
            "{\"events\":[{\"id\":\"a\u{1}\"}]}",
            r#"{"events":[{"id":"a"}],"more":1}"#,
            r#"{"events":null}"#,
            r#"{"events":[{"id":"a"}]} x"#,
            r#"{"events":[{"id":"a"}]"#,
            r#"[[{"id":"a"}]]"#,
            r#"{"events":[1]}"#,
            "",
        ] {
            assert!(parse(body, |_, _| {}).is_none(), "{body}");
        }
    }
}
