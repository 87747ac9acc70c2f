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
