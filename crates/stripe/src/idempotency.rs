//! Idempotency keys, derived from something durable.

use sha2::{Digest, Sha256};
use std::fmt;

/// The `Idempotency-Key` of a POST to Stripe.
///
/// There is deliberately no random constructor: a key must come from a row Tally committed before
/// the call (`from_row`) or from the deterministic content of the request (`from_content`), so that
/// a retry after a crash, or a second process doing the same work, sends the same key and Stripe
/// answers with the first result instead of creating a duplicate.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Stripe refuses longer keys.
const MAX_LEN: usize = 255;

impl IdempotencyKey {
    /// A key for the `attempt`-th call made on behalf of a durable row, e.g.
    /// `from_row("invoice_line", "il_42", 1)`. The row must be committed before the call is made.
    pub fn from_row(kind: &str, row_id: &str, attempt: u32) -> IdempotencyKey {
        IdempotencyKey::bounded(format!("tally:{kind}:{row_id}:{attempt}"))
    }

    /// A key derived from the deterministic content of the request: the same `scope` and `parts`
    /// always give the same key (parts are hashed, so their length does not matter).
    pub fn from_content(scope: &str, parts: &[&str]) -> IdempotencyKey {
        let mut h = Sha256::new();
        for p in parts {
            // Length-prefixed so that ["ab","c"] and ["a","bc"] differ.
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        IdempotencyKey::bounded(format!("tally:{scope}:{}", hex::encode(h.finalize())))
    }

    /// Keeps keys within Stripe's limit: an over-long key is replaced by a hash of itself, which
    /// is still deterministic.
    fn bounded(key: String) -> IdempotencyKey {
        if key.len() <= MAX_LEN {
            IdempotencyKey(key)
        } else {
            IdempotencyKey(format!(
                "tally:h:{}",
                hex::encode(Sha256::digest(key.as_bytes()))
            ))
        }
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({})", self.0)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic_and_bounded() {
        assert_eq!(
            IdempotencyKey::from_row("invoice_line", "il_42", 2).as_str(),
            "tally:invoice_line:il_42:2"
        );
        let a = IdempotencyKey::from_content("price", &["pro_monthly", "6000"]);
        assert_eq!(
            a,
            IdempotencyKey::from_content("price", &["pro_monthly", "6000"])
        );
        assert_ne!(
            a,
            IdempotencyKey::from_content("price", &["pro_monthly6", "000"])
        );
        assert_eq!(a.as_str().len(), "tally:price:".len() + 64);
        let long = IdempotencyKey::from_row("x", &"y".repeat(300), 1);
        assert_eq!(long.as_str().len(), "tally:h:".len() + 64);
    }
}
