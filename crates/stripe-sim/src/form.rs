//! Stripe's form encoding: `a[b][0][c]=v` and `list[]=v` keys parsed into nested JSON, and a
//! typed reader over the result.

use crate::error::ApiError;
use crate::util::Dec;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Parses an `application/x-www-form-urlencoded` body (or query string) with bracketed keys.
pub fn parse(input: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let mut root = Map::new();
    for (k, v) in form_urlencoded::parse(input) {
        let segs = split_key(&k).ok_or_else(|| {
            ApiError::invalid(format!("Invalid parameter name: {k}"), Some(k.to_string()))
        })?;
        insert(&mut root, &segs, v.into_owned(), &k)?;
    }
    Ok(normalize_map(root))
}

fn split_key(k: &str) -> Option<Vec<String>> {
    let (head, mut rest) = match k.find('[') {
        Some(i) => (&k[..i], &k[i..]),
        None => (k, ""),
    };
    if head.is_empty() {
        return None;
    }
    let mut segs = vec![head.to_string()];
    while !rest.is_empty() {
        let close = rest.find(']')?;
        if !rest.starts_with('[') {
            return None;
        }
        segs.push(rest[1..close].to_string());
        rest = &rest[close + 1..];
    }
    Some(segs)
}

fn insert(
    map: &mut Map<String, Value>,
    segs: &[String],
    v: String,
    full: &str,
) -> Result<(), ApiError> {
    let key = if segs[0].is_empty() {
        map.len().to_string()
    } else {
        segs[0].clone()
    };
    if segs.len() == 1 {
        if map.get(&key).is_some_and(|e| e.is_object()) {
            return Err(conflict(full));
        }
        map.insert(key, Value::String(v));
        return Ok(());
    }
    let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    match entry {
        Value::Object(child) => insert(child, &segs[1..], v, full),
        _ => Err(conflict(full)),
    }
}

fn conflict(k: &str) -> ApiError {
    ApiError::invalid(
        format!("Invalid value for {k}: conflicting parameter shapes"),
        Some(k.to_string()),
    )
}

/// Objects whose keys are all integers become arrays ordered by index.
fn normalize_map(m: Map<String, Value>) -> Map<String, Value> {
    m.into_iter().map(|(k, v)| (k, normalize(v))).collect()
}

fn normalize(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            if !m.is_empty() && m.keys().all(|k| k.parse::<usize>().is_ok()) {
                let mut by_index: BTreeMap<usize, Value> = BTreeMap::new();
                for (k, v) in m {
                    if let Ok(i) = k.parse::<usize>() {
                        by_index.insert(i, normalize(v));
                    }
                }
                Value::Array(by_index.into_values().collect())
            } else {
                Value::Object(normalize_map(m))
            }
        }
        other => other,
    }
}

/// Read access to parsed parameters with Stripe's validation errors.
#[derive(Clone, Debug, Default)]
pub struct Params {
    pub map: Map<String, Value>,
    prefix: String,
}

impl Params {
    pub fn new(map: Map<String, Value>) -> Params {
        Params {
            map,
            prefix: String::new(),
        }
    }

    fn name(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}[{key}]", self.prefix)
        }
    }

    /// Refuses parameters outside `allowed` (plus `expand`), as Stripe does.
    pub fn allow(&self, allowed: &[&str]) -> Result<(), ApiError> {
        for k in self.map.keys() {
            if k != "expand" && !allowed.contains(&k.as_str()) {
                let n = self.name(k);
                return Err(ApiError::invalid(
                    format!("Received unknown parameter: {n}"),
                    Some(n),
                ));
            }
        }
        Ok(())
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn str(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => {
                let n = self.name(key);
                Err(ApiError::invalid(format!("Invalid string: {n}"), Some(n)))
            }
        }
    }

    /// A string where `""` means "unset".
    pub fn opt_str(&self, key: &str) -> Result<Option<Option<String>>, ApiError> {
        Ok(self
            .str(key)?
            .map(|s| if s.is_empty() { None } else { Some(s) }))
    }

    pub fn req_str(&self, key: &str) -> Result<String, ApiError> {
        match self.str(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(ApiError::missing_param(&self.name(key))),
        }
    }

    pub fn i64(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.str(key)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => s.parse::<i64>().map(Some).map_err(|_| {
                let n = self.name(key);
                ApiError::invalid(format!("Invalid integer: {s}"), Some(n))
            }),
        }
    }

    pub fn req_i64(&self, key: &str) -> Result<i64, ApiError> {
        self.i64(key)?
            .ok_or_else(|| ApiError::missing_param(&self.name(key)))
    }

    pub fn dec(&self, key: &str) -> Result<Option<Dec>, ApiError> {
        match self.str(key)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => Dec::parse(&s).map(Some).ok_or_else(|| {
                let n = self.name(key);
                ApiError::invalid(format!("Invalid decimal: {s}"), Some(n))
            }),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.str(key)?.as_deref() {
            None | Some("") => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(s) => {
                let n = self.name(key);
                Err(ApiError::invalid(format!("Invalid boolean: {s}"), Some(n)))
            }
        }
    }

    pub fn obj(&self, key: &str) -> Result<Option<Params>, ApiError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Params {
                map: m.clone(),
                prefix: self.name(key),
            })),
            Some(_) => {
                let n = self.name(key);
                Err(ApiError::invalid(format!("Invalid object: {n}"), Some(n)))
            }
        }
    }

    pub fn list(&self, key: &str) -> Result<Vec<Params>, ApiError> {
        match self.map.get(key) {
            None => Ok(vec![]),
            Some(Value::String(s)) if s.is_empty() => Ok(vec![]),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(m) => Ok(Params {
                        map: m.clone(),
                        prefix: format!("{}[{i}]", self.name(key)),
                    }),
                    _ => {
                        let n = format!("{}[{i}]", self.name(key));
                        Err(ApiError::invalid(format!("Invalid object: {n}"), Some(n)))
                    }
                })
                .collect(),
            Some(_) => {
                let n = self.name(key);
                Err(ApiError::invalid(format!("Invalid array: {n}"), Some(n)))
            }
        }
    }

    pub fn str_list(&self, key: &str) -> Result<Vec<String>, ApiError> {
        match self.map.get(key) {
            None => Ok(vec![]),
            Some(Value::String(s)) if s.is_empty() => Ok(vec![]),
            Some(Value::Array(a)) => Ok(a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(_) => {
                let n = self.name(key);
                Err(ApiError::invalid(format!("Invalid array: {n}"), Some(n)))
            }
        }
    }

    /// `metadata[k]=v` updates; an empty value deletes the key; `metadata=` clears all.
    pub fn apply_metadata(&self, meta: &mut BTreeMap<String, String>) -> Result<(), ApiError> {
        match self.map.get("metadata") {
            None => Ok(()),
            Some(Value::String(s)) if s.is_empty() => {
                meta.clear();
                Ok(())
            }
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match v {
                        Value::String(s) if s.is_empty() => {
                            meta.remove(k);
                        }
                        Value::String(s) => {
                            meta.insert(k.clone(), s.clone());
                        }
                        _ => {
                            return Err(ApiError::invalid(
                                format!("Invalid metadata value for key {k}"),
                                Some(format!("metadata[{k}]")),
                            ))
                        }
                    }
                }
                if meta.len() > 50 {
                    return Err(ApiError::invalid(
                        "Metadata can have at most 50 keys.",
                        Some("metadata".into()),
                    ));
                }
                Ok(())
            }
            Some(_) => Err(ApiError::invalid(
                "Invalid metadata",
                Some("metadata".into()),
            )),
        }
    }

    pub fn metadata(&self) -> Result<BTreeMap<String, String>, ApiError> {
        let mut m = BTreeMap::new();
        self.apply_metadata(&mut m)?;
        Ok(m)
    }

    /// Taxes are not simulated: `automatic_tax[enabled]=true` is refused rather than ignored.
    pub fn refuse_automatic_tax(&self) -> Result<(), ApiError> {
        if let Some(t) = self.obj("automatic_tax")? {
            if t.bool("enabled")? == Some(true) {
                return Err(ApiError::invalid(
                    "The simulator does not calculate taxes: automatic_tax[enabled] must be false.",
                    Some("automatic_tax[enabled]".into()),
                ));
            }
        }
        Ok(())
    }

    pub fn expand(&self) -> Vec<String> {
        self.str_list("expand").unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_brackets_become_objects_and_arrays() {
        let m = parse(b"line_items[0][price]=price_1&line_items[0][quantity]=2&line_items[1][price_data][currency]=usd&expand[]=a&expand[]=b&metadata[k]=v&x=1").unwrap();
        let v = Value::Object(m);
        assert_eq!(v["line_items"][0]["price"], "price_1");
        assert_eq!(v["line_items"][0]["quantity"], "2");
        assert_eq!(v["line_items"][1]["price_data"]["currency"], "usd");
        assert_eq!(v["expand"], serde_json::json!(["a", "b"]));
        assert_eq!(v["metadata"]["k"], "v");
        assert_eq!(v["x"], "1");
    }

    #[test]
    fn indices_sort_numerically_and_conflicts_are_errors() {
        let m = parse(b"a[10]=x&a[2]=y").unwrap();
        assert_eq!(Value::Object(m)["a"], serde_json::json!(["y", "x"]));
        assert!(parse(b"a=1&a[b]=2").is_err());
        assert!(parse(b"a[b]=2&a=1").is_err());
    }
}
