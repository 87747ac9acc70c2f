//! Form bodies with Stripe's bracketed keys (`line_items[0][price]=…`, `metadata[k]=v`).
//!
//! Written by hand because serde_urlencoded cannot express nested keys and the shapes we send are
//! few and flat enough to spell out at each call site.

use std::collections::BTreeMap;

/// An ordered list of form fields, encoded as `application/x-www-form-urlencoded`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    /// An empty form.
    pub fn new() -> Form {
        Form::default()
    }

    /// Adds `key=value`.
    pub fn set(&mut self, key: impl Into<String>, value: impl ToString) -> &mut Form {
        self.fields.push((key.into(), value.to_string()));
        self
    }

    /// Adds `key=value` when `value` is `Some`.
    pub fn opt(&mut self, key: impl Into<String>, value: Option<impl ToString>) -> &mut Form {
        if let Some(v) = value {
            self.set(key, v);
        }
        self
    }

    /// Adds `prefix[k]=v` for every entry, e.g. `metadata[tally_plan]=pro`.
    pub fn map(&mut self, prefix: &str, entries: &BTreeMap<String, String>) -> &mut Form {
        for (k, v) in entries {
            self.set(format!("{prefix}[{k}]"), v);
        }
        self
    }

    /// Adds `key[]=v` for every value (Stripe's list syntax for GET filters and `expand[]`).
    pub fn list<S: ToString>(
        &mut self,
        key: &str,
        values: impl IntoIterator<Item = S>,
    ) -> &mut Form {
        for v in values {
            self.set(format!("{key}[]"), v);
        }
        self
    }

    /// The fields in order.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    /// Whether the form has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The urlencoded body (or query string).
    pub fn encode(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.fields {
            s.append_pair(k, v);
        }
        s.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_bracketed_keys_in_order() {
        let mut f = Form::new();
        f.set("line_items[0][price]", "price_1")
            .set("line_items[0][quantity]", 2)
            .map(
                "metadata",
                &BTreeMap::from([("tally_customer".to_string(), "c 1&2".to_string())]),
            )
            .list("lookup_keys", ["a", "b"]);
        assert_eq!(
            f.encode(),
            "line_items%5B0%5D%5Bprice%5D=price_1&line_items%5B0%5D%5Bquantity%5D=2\
             &metadata%5Btally_customer%5D=c+1%262&lookup_keys%5B%5D=a&lookup_keys%5B%5D=b"
        );
    }
}
