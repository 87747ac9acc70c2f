//! Prepaid credits: the ledger's rules.
//!
//! A customer's credits are a ledger of entries — grants (optionally expiring), purchases,
//! consumption, adjustments, refunds and expiries. The balance is derived from the entries and is
//! never negative. Credits sit in *buckets*, one per entry that adds credits; consumption draws
//! from buckets that expire first (earliest expiry first), then from non-expiring buckets oldest
//! first, so credits that would be lost are used before credits that would not.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

/// Errors applying ledger rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    /// The balance does not cover the amount.
    #[error("insufficient credits: balance {balance}, required {required}")]
    InsufficientCredits {
        /// Credits available now.
        balance: Decimal,
        /// Credits the operation needs.
        required: Decimal,
    },
    /// An entry breaks the ledger's rules (wrong sign, zero amount, misplaced expiry).
    #[error("invalid credit entry: {0}")]
    InvalidEntry(String),
}

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Credits given: a plan's monthly grant or an admin grant; may expire.
    Grant,
    /// Credits bought with a credit pack; never expire.
    Purchase,
    /// Credits used.
    Consume,
    /// A manual correction, up or down.
    Adjust,
    /// Consumed credits given back (e.g. for a failed operation); may expire.
    Refund,
    /// Credits of an expired bucket written off.
    Expire,
}

impl EntryKind {
    /// The kind with its article, for messages: "a grant", "an adjust".
    fn with_article(self) -> String {
        match self {
            EntryKind::Adjust | EntryKind::Expire => format!("an {}", self.as_str()),
            _ => format!("a {}", self.as_str()),
        }
    }

    /// The name stored and shown for the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Grant => "grant",
            EntryKind::Purchase => "purchase",
            EntryKind::Consume => "consume",
            EntryKind::Adjust => "adjust",
            EntryKind::Refund => "refund",
            EntryKind::Expire => "expire",
        }
    }
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreditEntry {
    /// Unique id of the entry; buckets are named after the entry that created them.
    pub id: String,
    /// What the entry records.
    pub kind: EntryKind,
    /// Signed change to the balance: positive for grant, purchase and refund, negative for
    /// consume and expire, either for adjust; never zero.
    pub amount: Decimal,
    /// When the entry happened.
    pub at: DateTime<Utc>,
    /// When the credits it adds expire (grants and refunds only).
    pub expires_at: Option<DateTime<Utc>>,
}

impl CreditEntry {
    /// Checks the entry's sign and expiry against its kind.
    pub fn validate(&self) -> Result<(), CreditError> {
        let invalid = |m: &str| Err(CreditError::InvalidEntry(format!("{}: {m}", self.id)));
        if self.amount.is_zero() {
            return invalid("the amount must not be zero");
        }
        let positive = self.amount > Decimal::ZERO;
        match self.kind {
            EntryKind::Grant | EntryKind::Purchase | EntryKind::Refund if !positive => {
                invalid(&format!("{} adds credits", self.kind.with_article()))
            }
            EntryKind::Consume | EntryKind::Expire if positive => {
                invalid(&format!("{} removes credits", self.kind.with_article()))
            }
            EntryKind::Purchase | EntryKind::Consume | EntryKind::Adjust | EntryKind::Expire
                if self.expires_at.is_some() =>
            {
                invalid(&format!("{} cannot expire", self.kind.with_article()))
            }
            _ => match self.expires_at {
                Some(e) if e <= self.at => invalid("credits cannot expire before they are added"),
                _ => Ok(()),
            },
        }
    }
}

/// Credits left from one entry that added them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreditBucket {
    /// Id of the entry that created the bucket.
    pub id: String,
    /// Credits left.
    pub remaining: Decimal,
    /// When the bucket was created.
    pub created_at: DateTime<Utc>,
    /// When its credits expire, if they do.
    pub expires_at: Option<DateTime<Utc>>,
}

impl CreditBucket {
    /// Whether the bucket's credits can still be used at `now`.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.remaining > Decimal::ZERO && self.expires_at.is_none_or(|e| now < e)
    }
}

/// Credits taken from one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allocation {
    /// The bucket's id.
    pub bucket: String,
    /// Credits taken from it.
    pub amount: Decimal,
}

/// Credits usable at `now`.
pub fn balance(buckets: &[CreditBucket], now: DateTime<Utc>) -> Decimal {
    buckets
        .iter()
        .filter(|b| b.is_open(now))
        .map(|b| b.remaining)
        .sum()
}

/// Decides which buckets pay for `amount` credits at `now`: expiring buckets first (earliest
/// expiry first), then non-expiring ones, oldest first. Fails with
/// [`CreditError::InsufficientCredits`] when the usable balance is short; `amount` must be
/// positive.
pub fn allocate(
    buckets: &[CreditBucket],
    amount: Decimal,
    now: DateTime<Utc>,
) -> Result<Vec<Allocation>, CreditError> {
    if amount <= Decimal::ZERO {
        return Err(CreditError::InvalidEntry(format!(
            "the amount to allocate must be positive ({amount})"
        )));
    }
    let available = balance(buckets, now);
    if available < amount {
        return Err(CreditError::InsufficientCredits {
            balance: available,
            required: amount,
        });
    }
    let mut open: Vec<&CreditBucket> = buckets.iter().filter(|b| b.is_open(now)).collect();
    // `None` (never expires) sorts after every expiry.
    open.sort_by_key(|b| (b.expires_at.is_none(), b.expires_at, b.created_at));
    let mut left = amount;
    let mut out = Vec::new();
    for b in open {
        if left.is_zero() {
            break;
        }
        let take = left.min(b.remaining);
        out.push(Allocation {
            bucket: b.id.clone(),
            amount: take,
        });
        left -= take;
    }
    Ok(out)
}

/// A customer's credits, rebuilt by applying ledger entries in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CreditLedger {
    buckets: Vec<CreditBucket>,
}

impl CreditLedger {
    /// An empty ledger.
    pub fn new() -> CreditLedger {
        CreditLedger::default()
    }

    /// Rebuilds a ledger from stored entries, in order.
    pub fn replay<'a>(
        entries: impl IntoIterator<Item = &'a CreditEntry>,
    ) -> Result<CreditLedger, CreditError> {
        let mut ledger = CreditLedger::new();
        for e in entries {
            ledger.apply(e)?;
        }
        Ok(ledger)
    }

    /// The buckets, including empty and expired ones.
    pub fn buckets(&self) -> &[CreditBucket] {
        &self.buckets
    }

    /// Credits usable at `now`.
    pub fn balance(&self, now: DateTime<Utc>) -> Decimal {
        balance(&self.buckets, now)
    }

    /// Applies one entry and returns the buckets it drew from (empty for entries that add
    /// credits). Nothing changes when it fails.
    ///
    /// - grant, purchase, refund and positive adjust open a bucket;
    /// - consume and negative adjust draw from open buckets, expiring ones first, and fail with
    ///   [`CreditError::InsufficientCredits`] rather than let the balance go negative;
    /// - expire writes off credits of buckets expired at the entry's time, earliest first.
    pub fn apply(&mut self, entry: &CreditEntry) -> Result<Vec<Allocation>, CreditError> {
        entry.validate()?;
        if entry.amount > Decimal::ZERO {
            self.buckets.push(CreditBucket {
                id: entry.id.clone(),
                remaining: entry.amount,
                created_at: entry.at,
                expires_at: entry.expires_at,
            });
            return Ok(Vec::new());
        }
        let amount = -entry.amount;
        let allocations = if entry.kind == EntryKind::Expire {
            let due = self.expirations(entry.at);
            let expired: Decimal = due.iter().map(|a| a.amount).sum();
            if amount > expired {
                return Err(CreditError::InvalidEntry(format!(
                    "{}: only {expired} credits have expired",
                    entry.id
                )));
            }
            let mut left = amount;
            let mut out = Vec::new();
            for a in due {
                if left.is_zero() {
                    break;
                }
                let take = left.min(a.amount);
                out.push(Allocation {
                    bucket: a.bucket,
                    amount: take,
                });
                left -= take;
            }
            out
        } else {
            allocate(&self.buckets, amount, entry.at)?
        };
        for a in &allocations {
            if let Some(b) = self.buckets.iter_mut().find(|b| b.id == a.bucket) {
                b.remaining -= a.amount;
            }
        }
        Ok(allocations)
    }

    /// Credits that have expired by `now` but are not yet written off, per bucket, earliest
    /// expiry first: what an `expire` entry should record.
    pub fn expirations(&self, now: DateTime<Utc>) -> Vec<Allocation> {
        let mut due: Vec<&CreditBucket> = self
            .buckets
            .iter()
            .filter(|b| b.remaining > Decimal::ZERO && b.expires_at.is_some_and(|e| e <= now))
            .collect();
        due.sort_by_key(|b| (b.expires_at, b.created_at));
        due.into_iter()
            .map(|b| Allocation {
                bucket: b.id.clone(),
                amount: b.remaining,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    use super::*;

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, d, 0, 0, 0).unwrap()
    }

    fn entry(
        id: &str,
        kind: EntryKind,
        amount: Decimal,
        at: u32,
        expires: Option<u32>,
    ) -> CreditEntry {
        CreditEntry {
            id: id.into(),
            kind,
            amount,
            at: day(at),
            expires_at: expires.map(day),
        }
    }

    #[test]
    fn consumption_draws_from_expiring_grants_first() {
        let mut l = CreditLedger::new();
        l.apply(&entry("pack", EntryKind::Purchase, dec!(500), 1, None))
            .unwrap();
        l.apply(&entry("late", EntryKind::Grant, dec!(100), 2, Some(30)))
            .unwrap();
        l.apply(&entry("soon", EntryKind::Grant, dec!(100), 3, Some(20)))
            .unwrap();
        assert_eq!(l.balance(day(5)), dec!(700));
        let a = l
            .apply(&entry("c1", EntryKind::Consume, dec!(-150), 5, None))
            .unwrap();
        assert_eq!(
            a,
            [
                Allocation {
                    bucket: "soon".into(),
                    amount: dec!(100)
                },
                Allocation {
                    bucket: "late".into(),
                    amount: dec!(50)
                },
            ]
        );
        let a = l
            .apply(&entry("c2", EntryKind::Consume, dec!(-60), 6, None))
            .unwrap();
        assert_eq!(
            a,
            [
                Allocation {
                    bucket: "late".into(),
                    amount: dec!(50)
                },
                Allocation {
                    bucket: "pack".into(),
                    amount: dec!(10)
                },
            ]
        );
        assert_eq!(l.balance(day(6)), dec!(490));
    }

    #[test]
    fn the_balance_never_goes_negative() {
        let mut l = CreditLedger::new();
        l.apply(&entry("g", EntryKind::Grant, dec!(100), 1, None))
            .unwrap();
        let err = l
            .apply(&entry("c", EntryKind::Consume, dec!(-100.5), 2, None))
            .unwrap_err();
        assert_eq!(
            err,
            CreditError::InsufficientCredits {
                balance: dec!(100),
                required: dec!(100.5)
            }
        );
        assert_eq!(
            err.to_string(),
            "insufficient credits: balance 100, required 100.5"
        );
        assert_eq!(l.balance(day(2)), dec!(100));
        let err = l
            .apply(&entry("a", EntryKind::Adjust, dec!(-101), 2, None))
            .unwrap_err();
        assert!(matches!(err, CreditError::InsufficientCredits { .. }));
        l.apply(&entry("a2", EntryKind::Adjust, dec!(-100), 2, None))
            .unwrap();
        assert_eq!(l.balance(day(2)), dec!(0));
    }

    #[test]
    fn expired_grants_stop_counting_and_are_written_off() {
        let mut l = CreditLedger::new();
        l.apply(&entry("monthly", EntryKind::Grant, dec!(100), 1, Some(31)))
            .unwrap();
        l.apply(&entry("c", EntryKind::Consume, dec!(-30), 10, None))
            .unwrap();
        assert_eq!(l.balance(day(30)), dec!(70));
        assert_eq!(l.balance(day(31)), dec!(0));
        assert!(l.expirations(day(30)).is_empty());
        let due = l.expirations(day(31));
        assert_eq!(
            due,
            [Allocation {
                bucket: "monthly".into(),
                amount: dec!(70)
            }]
        );
        let err = l
            .apply(&entry("c2", EntryKind::Consume, dec!(-1), 31, None))
            .unwrap_err();
        assert_eq!(
            err,
            CreditError::InsufficientCredits {
                balance: dec!(0),
                required: dec!(1)
            }
        );
        l.apply(&entry("x", EntryKind::Expire, dec!(-70), 31, None))
            .unwrap();
        assert!(l.expirations(day(31)).is_empty());
        assert_eq!(l.buckets()[0].remaining, dec!(0));
        let err = l
            .apply(&entry("x2", EntryKind::Expire, dec!(-1), 31, None))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid credit entry: x2: only 0 credits have expired"
        );
    }

    #[test]
    fn refunds_and_adjustments_add_credits() {
        let entries = [
            entry("g", EntryKind::Grant, dec!(10), 1, None),
            entry("c", EntryKind::Consume, dec!(-10), 2, None),
            entry("r", EntryKind::Refund, dec!(4), 3, None),
            entry("a", EntryKind::Adjust, dec!(6), 4, None),
        ];
        let l = CreditLedger::replay(&entries).unwrap();
        assert_eq!(l.balance(day(5)), dec!(10));
    }

    #[test]
    fn entries_must_have_the_right_sign() {
        let bad = [
            (
                entry("e", EntryKind::Grant, dec!(-1), 1, None),
                "e: a grant adds credits",
            ),
            (
                entry("e", EntryKind::Consume, dec!(1), 1, None),
                "e: a consume removes credits",
            ),
            (
                entry("e", EntryKind::Adjust, dec!(0), 1, None),
                "e: the amount must not be zero",
            ),
            (
                entry("e", EntryKind::Purchase, dec!(5), 1, Some(9)),
                "e: a purchase cannot expire",
            ),
            (
                entry("e", EntryKind::Adjust, dec!(5), 1, Some(9)),
                "e: an adjust cannot expire",
            ),
            (
                entry("e", EntryKind::Expire, dec!(5), 1, None),
                "e: an expire removes credits",
            ),
            (
                entry("e", EntryKind::Grant, dec!(5), 9, Some(9)),
                "e: credits cannot expire before they are added",
            ),
        ];
        for (e, message) in bad {
            assert_eq!(e.validate(), Err(CreditError::InvalidEntry(message.into())));
        }
    }

    #[test]
    fn allocate_needs_a_positive_amount() {
        assert!(matches!(
            allocate(&[], dec!(0), day(1)),
            Err(CreditError::InvalidEntry(_))
        ));
        assert_eq!(
            allocate(&[], dec!(1), day(1)),
            Err(CreditError::InsufficientCredits {
                balance: dec!(0),
                required: dec!(1)
            })
        );
    }
}
