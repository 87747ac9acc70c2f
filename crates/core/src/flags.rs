//! Feature flag evaluation: on/off, environments, and a percentage rollout.
//!
//! A customer's rollout bucket is a number in 0..10000 taken from
//! `sha256("<flag id>:<customer id>")`, so the same customer always lands in the same bucket for a
//! flag, and raising the rollout only ever adds customers. A flag is on for a customer when it is
//! enabled, the environment is one of the flag's (or the flag lists none), and the bucket is below
//! `rollout_percent × 100`.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::catalog::FeatureFlag;

/// Why a flag evaluated the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagReason {
    /// The flag is switched off.
    Disabled,
    /// The flag does not apply in this environment.
    Environment,
    /// The customer's bucket is inside the rollout.
    InRollout,
    /// The customer's bucket is outside the rollout.
    OutOfRollout,
}

/// A flag evaluated for one customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlagEvaluation {
    /// The flag's id.
    pub flag: String,
    /// Whether the flag is on for the customer.
    pub enabled: bool,
    /// Why.
    pub reason: FlagReason,
    /// The customer's rollout bucket, 0..10000.
    pub bucket: u32,
}

/// The customer's rollout bucket for a flag, in 0..10000.
pub fn bucket(flag: &str, customer: &str) -> u32 {
    let digest = Sha256::digest(format!("{flag}:{customer}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 10_000) as u32
}

/// Evaluates a flag for a customer in an environment.
pub fn evaluate(flag: &FeatureFlag, customer: &str, environment: &str) -> FlagEvaluation {
    let bucket = bucket(&flag.id, customer);
    let threshold = (flag.rollout_percent * Decimal::ONE_HUNDRED)
        .trunc()
        .to_u32()
        .unwrap_or(0);
    let (enabled, reason) = if !flag.enabled {
        (false, FlagReason::Disabled)
    } else if !flag.environments.is_empty() && !flag.environments.iter().any(|e| e == environment) {
        (false, FlagReason::Environment)
    } else if bucket < threshold {
        (true, FlagReason::InRollout)
    } else {
        (false, FlagReason::OutOfRollout)
    };
    FlagEvaluation {
        flag: flag.id.clone(),
        enabled,
        reason,
        bucket,
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn flag(enabled: bool, rollout: Decimal, envs: &[&str]) -> FeatureFlag {
        FeatureFlag {
            id: "billing_v2".into(),
            description: String::new(),
            enabled,
            rollout_percent: rollout,
            environments: envs.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn buckets_are_deterministic_sha256() {
        // sha256("billing_v2:cus_1") starts with these 8 bytes; computed independently.
        let digest = Sha256::digest(b"billing_v2:cus_1");
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap()) % 10_000;
        assert_eq!(u64::from(bucket("billing_v2", "cus_1")), expected);
        assert_eq!(bucket("billing_v2", "cus_1"), bucket("billing_v2", "cus_1"));
        assert_ne!(bucket("billing_v2", "cus_1"), bucket("other_flag", "cus_1"));
    }

    #[test]
    fn off_environment_and_rollout() {
        let e = evaluate(&flag(false, dec!(100), &[]), "cus_1", "production");
        assert_eq!((e.enabled, e.reason), (false, FlagReason::Disabled));
        let e = evaluate(&flag(true, dec!(100), &["staging"]), "cus_1", "production");
        assert_eq!((e.enabled, e.reason), (false, FlagReason::Environment));
        let e = evaluate(&flag(true, dec!(100), &["staging"]), "cus_1", "staging");
        assert_eq!((e.enabled, e.reason), (true, FlagReason::InRollout));
        let e = evaluate(&flag(true, dec!(0), &[]), "cus_1", "production");
        assert_eq!((e.enabled, e.reason), (false, FlagReason::OutOfRollout));
    }

    #[test]
    fn rollout_percent_selects_that_share_of_customers() {
        let f = flag(true, dec!(25), &[]);
        let on = (0..10_000)
            .filter(|i| evaluate(&f, &format!("cus_{i}"), "production").enabled)
            .count();
        // 25 % of 10,000 customers, within sampling noise.
        assert!((2300..=2700).contains(&on), "{on}");
        // Raising the rollout keeps everyone who already had the flag.
        let wider = flag(true, dec!(50), &[]);
        for i in 0..2000 {
            let c = format!("cus_{i}");
            if evaluate(&f, &c, "production").enabled {
                assert!(evaluate(&wider, &c, "production").enabled);
            }
        }
    }

    #[test]
    fn fractional_rollouts_use_basis_points() {
        let f = flag(true, dec!(0.01), &[]);
        let customer = (0..100_000)
            .map(|i| format!("cus_{i}"))
            .find(|c| bucket("billing_v2", c) == 0)
            .unwrap();
        assert!(evaluate(&f, &customer, "production").enabled);
        let customer = (0..100_000)
            .map(|i| format!("cus_{i}"))
            .find(|c| bucket("billing_v2", c) == 1)
            .unwrap();
        assert!(!evaluate(&f, &customer, "production").enabled);
    }
}
