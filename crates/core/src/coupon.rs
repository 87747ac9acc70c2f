//! Coupon rules: whether a coupon may be redeemed, and whether a redemption still discounts.
//!
//! A coupon is redeemed once per subscription. Redeeming needs the coupon to be for the plan,
//! before its `redeem_by` instant and under its `max_redemptions`. After that, its duration
//! decides which monthly periods it discounts, counted from the redemption: `once` the first,
//! `repeating` the first N, `forever` all of them.

use chrono::{DateTime, Utc};

use crate::catalog::{Coupon, CouponDuration};

/// Why a coupon does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CouponRejection {
    /// The coupon is limited to other plans.
    #[error("coupon {coupon} does not apply to plan {plan}")]
    NotForPlan {
        /// Coupon id.
        coupon: String,
        /// The customer's plan.
        plan: String,
    },
    /// The redeem-by instant has passed.
    #[error("coupon {coupon} could only be redeemed before {redeem_by}")]
    Expired {
        /// Coupon id.
        coupon: String,
        /// The instant redemptions stopped.
        redeem_by: DateTime<Utc>,
    },
    /// Every allowed redemption is used up.
    #[error("coupon {coupon} has reached its maximum of {max} redemptions")]
    MaxRedemptionsReached {
        /// Coupon id.
        coupon: String,
        /// The maximum.
        max: u32,
    },
    /// The redemption's duration is over.
    #[error("coupon {coupon} no longer discounts: its duration has ended")]
    DurationEnded {
        /// Coupon id.
        coupon: String,
    },
}

impl Coupon {
    /// Whether the coupon is limited to some plans, and `plan` is not one of them.
    fn excludes(&self, plan: &str) -> bool {
        !self.plans.is_empty() && !self.plans.iter().any(|p| p == plan)
    }

    /// Whether a customer on `plan` may redeem the coupon at `now`, given how many times it has
    /// been redeemed by anyone so far.
    pub fn can_redeem(
        &self,
        plan: &str,
        now: DateTime<Utc>,
        redemptions_so_far: u32,
    ) -> Result<(), CouponRejection> {
        if self.excludes(plan) {
            return Err(CouponRejection::NotForPlan {
                coupon: self.id.clone(),
                plan: plan.to_string(),
            });
        }
        if let Some(redeem_by) = self.redeem_by {
            if now >= redeem_by {
                return Err(CouponRejection::Expired {
                    coupon: self.id.clone(),
                    redeem_by,
                });
            }
        }
        if let Some(max) = self.max_redemptions {
            if redemptions_so_far >= max {
                return Err(CouponRejection::MaxRedemptionsReached {
                    coupon: self.id.clone(),
                    max,
                });
            }
        }
        Ok(())
    }

    /// Whether a redemption discounts the monthly period `months_since_redeemed` after it
    /// (0 = the period it was redeemed in).
    pub fn discounts_month(&self, months_since_redeemed: u32) -> bool {
        match self.duration {
            CouponDuration::Once => months_since_redeemed == 0,
            CouponDuration::Repeating { months } => months_since_redeemed < months,
            CouponDuration::Forever => true,
        }
    }

    /// Whether the coupon discounts an invoice of a customer on `plan`.
    ///
    /// `months_since_redeemed` is `None` for a new redemption, checked with
    /// [`Coupon::can_redeem`]; for an existing redemption it is the number of monthly periods since
    /// it, checked against the plan and the duration only (redeem-by and the maximum count at
    /// redemption time, not afterwards).
    pub fn applies(
        &self,
        plan: &str,
        now: DateTime<Utc>,
        redemptions_so_far: u32,
        months_since_redeemed: Option<u32>,
    ) -> Result<(), CouponRejection> {
        match months_since_redeemed {
            None => self.can_redeem(plan, now, redemptions_so_far),
            Some(months) => {
                if self.excludes(plan) {
                    return Err(CouponRejection::NotForPlan {
                        coupon: self.id.clone(),
                        plan: plan.to_string(),
                    });
                }
                if self.discounts_month(months) {
                    Ok(())
                } else {
                    Err(CouponRejection::DurationEnded {
                        coupon: self.id.clone(),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::catalog::Catalog;

    fn magic_box() -> Catalog {
        Catalog::parse(
            include_str!("../../../catalogs/magicbox.toml"),
            "magicbox.toml",
        )
        .unwrap()
    }

    #[test]
    fn launch2025_is_redeemable_through_the_last_day_of_2025() {
        let c = magic_box();
        let launch = c.coupon("LAUNCH2025").unwrap();
        let last_second = Utc.with_ymd_and_hms(2025, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(launch.can_redeem("pro", last_second, 0), Ok(()));
        let new_year = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let err = launch.can_redeem("pro", new_year, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "coupon LAUNCH2025 could only be redeemed before 2026-01-01 00:00:00 UTC"
        );
    }

    #[test]
    fn launch2025_allows_100_redemptions() {
        let c = magic_box();
        let launch = c.coupon("LAUNCH2025").unwrap();
        let now = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
        assert_eq!(launch.can_redeem("starter", now, 99), Ok(()));
        assert_eq!(
            launch.can_redeem("starter", now, 100),
            Err(CouponRejection::MaxRedemptionsReached {
                coupon: "LAUNCH2025".into(),
                max: 100
            })
        );
    }

    #[test]
    fn durations_decide_which_months_are_discounted() {
        let c = magic_box();
        let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let launch = c.coupon("LAUNCH2025").unwrap();
        assert!(launch.discounts_month(0));
        assert!(!launch.discounts_month(1));
        // An existing redemption keeps applying after redeem-by and the maximum have passed.
        assert_eq!(launch.applies("pro", now, 500, Some(0)), Ok(()));
        assert_eq!(
            launch.applies("pro", now, 500, Some(1)),
            Err(CouponRejection::DurationEnded {
                coupon: "LAUNCH2025".into()
            })
        );
        let early = c.coupon("EARLYBIRD30").unwrap();
        assert!(early.discounts_month(0) && early.discounts_month(120));
        assert_eq!(early.applies("pro", now, 10_000, None), Ok(()));

        let repeating = Coupon {
            duration: CouponDuration::Repeating { months: 3 },
            ..early.clone()
        };
        assert!(repeating.discounts_month(2));
        assert!(!repeating.discounts_month(3));
    }

    #[test]
    fn plan_restrictions_apply_to_new_and_existing_redemptions() {
        let c = magic_box();
        let now = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
        let only_pro = Coupon {
            plans: vec!["pro".into()],
            ..c.coupon("EARLYBIRD30").unwrap().clone()
        };
        assert_eq!(only_pro.applies("pro", now, 0, None), Ok(()));
        let rejection = CouponRejection::NotForPlan {
            coupon: "EARLYBIRD30".into(),
            plan: "starter".into(),
        };
        assert_eq!(
            only_pro.applies("starter", now, 0, None),
            Err(rejection.clone())
        );
        assert_eq!(only_pro.applies("starter", now, 0, Some(2)), Err(rejection));
    }
}
