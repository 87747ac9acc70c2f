//! The endpoints Tally uses, as methods on [`crate::Client`], with their parameter structs.

pub mod billing;
pub mod catalog;
pub mod customers;
pub mod invoicing;
pub mod meters;
pub mod payment_intents;
pub mod refunds;
pub mod test_clocks;

use crate::error::{Error, ErrorKind};
use crate::Stripe;

/// Turns a 404 into `Ok(None)` so that "find before create" reads naturally.
pub(crate) fn found<T>(r: Result<Stripe<T>, Error>) -> Result<Option<Stripe<T>>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Converts with a fallible mapping, keeping the request meta in the error.
pub(crate) fn try_map<W, T>(
    r: Stripe<W>,
    f: impl FnOnce(W) -> Result<T, String>,
) -> Result<Stripe<T>, Error> {
    let meta = r.meta;
    match f(r.value) {
        Ok(value) => Ok(Stripe { value, meta }),
        Err(m) => Err(Error {
            kind: ErrorKind::Decode(m),
            request_id: meta.request_id,
            status: Some(200),
            attempts: meta.attempts,
        }),
    }
}

/// Path segment for an id given by a caller (ids are URL-safe in Stripe, but custom ids come
/// from catalogs).
pub(crate) fn seg(id: &str) -> String {
    form_urlencoded::byte_serialize(id.as_bytes()).collect()
}
