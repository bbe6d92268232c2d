//! The checkout's body: the usual shape read into borrowed fields without a JSON tree
//! ([`CheckoutFields::plain`]), anything else read field by field ([`parse_checkout`]),
//! which names every field at fault. Both accept exactly the same bodies alike (the
//! tests hold them to it), so the fast reading changes no answer.

use serde::Deserialize;

use super::body::JsonBody;
use super::errors::ApiError;
use crate::domain::order::{CheckoutBody, Consent};
use crate::domain::validate::{FieldError, Fields, Required};

/// Length bounds (in characters) of the body's strings, and of the quantity.
const PRODUCT_ID_LEN: std::ops::RangeInclusive<usize> = 1..=64;
const CUSTOMER_ID_LEN: std::ops::RangeInclusive<usize> = 1..=200;
const TERMS_VERSION_LEN: std::ops::RangeInclusive<usize> = 1..=64;
const QUANTITY: std::ops::RangeInclusive<i64> = 1..=100;

pub(super) fn parse_checkout(body: &serde_json::Value) -> Result<CheckoutBody, Vec<FieldError>> {
    let mut f = Fields::new(body)?;
    let product_id = f.string("product_id", Required, PRODUCT_ID_LEN);
    let quantity = f.int("quantity", Required, QUANTITY);
    let customer_id = f.string("customer_id", Required, CUSTOMER_ID_LEN);
    let consent = f.object("consent", Required, |c| {
        let terms_version = c.string("terms_version", Required, TERMS_VERSION_LEN);
        let marketing = c.bool("marketing", Required);
        Some(Consent {
            terms_version: terms_version?,
            marketing: marketing?,
        })
    });
    f.finish()?;
    Ok(CheckoutBody {
        product_id: product_id.unwrap_or_default(),
        quantity: quantity.unwrap_or_default(),
        customer_id: customer_id.unwrap_or_default(),
        consent: consent.unwrap_or(Consent {
            terms_version: String::new(),
            marketing: false,
        }),
    })
}

/// A checkout body of the usual shape, its strings borrowed from the request: exactly
/// these fields, each once, strings without escapes. Whatever does not fit is read by
/// [`parse_checkout`] instead, which also names every field at fault.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainBody<'a> {
    /// Absent is allowed here (the product may come from the path); `null` is not.
    #[serde(default, borrow, deserialize_with = "present")]
    product_id: Option<&'a str>,
    quantity: i64,
    customer_id: &'a str,
    #[serde(borrow)]
    consent: PlainConsent<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainConsent<'a> {
    terms_version: &'a str,
    marketing: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de str>, D::Error> {
    <&'de str>::deserialize(d).map(Some)
}

/// A valid checkout body's fields, borrowed (from the request or a parsed body).
pub(super) struct CheckoutFields<'a> {
    pub(super) product_id: &'a str,
    quantity: i64,
    pub(super) customer_id: &'a str,
    terms_version: &'a str,
    marketing: bool,
}

/// What [`Fields::string`] accepts: `len` characters, none of them a control character.
/// ASCII (the usual ids) is checked byte by byte, without decoding characters.
fn plain_string(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    if s.is_ascii() {
        return len.contains(&s.len()) && !s.bytes().any(|b| b.is_ascii_control());
    }
    len.contains(&s.chars().count()) && !s.chars().any(char::is_control)
}

impl<'a> CheckoutFields<'a> {
    /// The fields of a body of the usual shape that is valid as it stands (with
    /// `path_id`, the product of the path: the body's must be it, or absent); `None`
    /// for anything else, which the general path then reads.
    pub(super) fn plain(body: &'a [u8], path_id: Option<&'a str>) -> Option<Self> {
        let b: PlainBody<'a> = serde_json::from_slice(body).ok()?;
        let product_id = match (b.product_id, path_id) {
            (Some(named), Some(path)) if named != path => return None,
            (Some(named), _) => named,
            (None, Some(path)) => path,
            (None, None) => return None,
        };
        let valid = plain_string(product_id, PRODUCT_ID_LEN)
            && QUANTITY.contains(&b.quantity)
            && plain_string(b.customer_id, CUSTOMER_ID_LEN)
            && plain_string(b.consent.terms_version, TERMS_VERSION_LEN);
        valid.then_some(CheckoutFields {
            product_id,
            quantity: b.quantity,
            customer_id: b.customer_id,
            terms_version: b.consent.terms_version,
            marketing: b.consent.marketing,
        })
    }

    pub(super) fn of(body: &'a CheckoutBody) -> Self {
        CheckoutFields {
            product_id: &body.product_id,
            quantity: body.quantity,
            customer_id: &body.customer_id,
            terms_version: &body.consent.terms_version,
            marketing: body.consent.marketing,
        }
    }

    pub(super) fn to_body(&self) -> CheckoutBody {
        CheckoutBody {
            product_id: self.product_id.to_owned(),
            quantity: self.quantity,
            customer_id: self.customer_id.to_owned(),
            consent: Consent {
                terms_version: self.terms_version.to_owned(),
                marketing: self.marketing,
            },
        }
    }
}

/// The body as a JSON tree, for the general path; with `path_id`, its `product_id` is
/// the path's (filled in if absent; another one is a 422).
pub(super) fn general_body(
    body: &[u8],
    path_id: Option<&str>,
) -> Result<serde_json::Value, ApiError> {
    let mut body = JsonBody::parse(body)?.0;
    let (Some(id), Some(fields)) = (path_id, body.as_object_mut()) else {
        return Ok(body);
    };
    match fields.get("product_id") {
        None => {
            fields.insert("product_id".to_owned(), id.into());
        }
        Some(named) if named.as_str() == Some(id) => {}
        Some(_) => {
            return Err(vec![FieldError::new(
                "product_id",
                "must be the product in the path, or left out",
            )]
            .into())
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn general(body: &str, path_id: Option<&str>) -> Option<CheckoutBody> {
        let value = general_body(body.as_bytes(), path_id).ok()?;
        parse_checkout(&value).ok()
    }

    #[test]
    fn the_plain_reading_takes_only_what_the_general_one_accepts_alike() {
        let ok = r#"{"product_id":"prd_1","quantity":2,"customer_id":"c-1","consent":{"terms_version":"v1","marketing":true}}"#;
        let bodies = [
            ok,
            r#"{"quantity":2,"customer_id":"c-1","consent":{"terms_version":"v1","marketing":false}}"#,
            r#"{"product_id":null,"quantity":2,"customer_id":"c-1","consent":{"terms_version":"v1","marketing":false}}"#,
            r#"{"product_id":"prd_1","quantity":2,"customer_id":"c\u00e9","consent":{"terms_version":"v1","marketing":false}}"#,
            r#"{"product_id":"prd_1","quantity":2,"customer_id":"c\u0001","consent":{"terms_version":"v1","marketing":false}}"#,
            r#"{"product_id":"prd_1","quantity":2,"customer_id":"c\u007f","consent":{"terms_version":"v1","marketing":false}}"#,
            r#"{"product_id":"prd_1","quantity":2,"customer_id":"c\u0085","consent":{"terms_version":"v1","marketing":false}}"#,
            r#"{"product_id":"prd_1","quantity":0,"customer_id":"c","consent":{"terms_version":"v1","marketing":false}}"#,
            r#"{"product_id":"prd_1","quantity":1.0,"customer_id":"c","consent":{"terms_version":"v1","marketing":false}}"#,
            r#"{"product_id":"prd_1","quantity":101,"customer_id":"c","consent":{"terms_version":"v1","marketing":false}}"#,
            r#"{"product_id":"","quantity":1,"customer_id":"c","consent":{"terms_version":"v1","marketing":false}}"#,
            r#"{"product_id":"prd_1","quantity":1,"customer_id":"c","consent":{"terms_version":"v1","marketing":false},"x":1}"#,
            r#"{"product_id":"prd_1","quantity":1,"customer_id":"c","consent":{"terms_version":"v1","marketing":false,"x":1}}"#,
            r#"{"product_id":"prd_1","product_id":"prd_2","quantity":1,"customer_id":"c","consent":{"terms_version":"v1","marketing":false}}"#,
            r#"{"product_id":"prd_1","quantity":1,"customer_id":"c","consent":{"terms_version":"","marketing":false}}"#,
            r#"{"product_id":"prd_1","quantity":1,"customer_id":"c","consent":{"terms_version":"v1"}}"#,
            r#"{"product_id":"prd_1","quantity":1,"customer_id":"c"}"#,
            r#"[1]"#,
            r#"{"product_id":"prd_1""#,
        ];
        let long = format!(
            r#"{{"product_id":"prd_1","quantity":1,"customer_id":"{}","consent":{{"terms_version":"v1","marketing":false}}}}"#,
            "é".repeat(201)
        );
        let ascii = |n: usize| {
            format!(
                r#"{{"product_id":"prd_1","quantity":1,"customer_id":"{}","consent":{{"terms_version":"v1","marketing":false}}}}"#,
                "c".repeat(n)
            )
        };
        let (longest, too_long) = (ascii(200), ascii(201));
        assert!(CheckoutFields::plain(longest.as_bytes(), None).is_some());
        assert!(CheckoutFields::plain(too_long.as_bytes(), None).is_none());
        assert!(general(&too_long, None).is_none());
        let paths = [None, Some("prd_1"), Some("prd_2")];
        let mut plain_taken = 0;
        for body in
            bodies
                .iter()
                .copied()
                .chain([long.as_str(), longest.as_str(), too_long.as_str()])
        {
            for path_id in paths {
                let Some(plain) = CheckoutFields::plain(body.as_bytes(), path_id) else {
                    continue;
                };
                plain_taken += 1;
                let plain = plain.to_body();
                let general = general(body, path_id)
                    .unwrap_or_else(|| panic!("{body} ({path_id:?}): plain accepted it"));
                assert_eq!(plain.product_id, general.product_id, "{body}");
                assert_eq!(plain.fingerprint(), general.fingerprint(), "{body}");
            }
        }
        // The usual body, with or without the product in the path, takes the plain way.
        assert!(CheckoutFields::plain(ok.as_bytes(), None).is_some());
        assert!(CheckoutFields::plain(ok.as_bytes(), Some("prd_1")).is_some());
        assert!(CheckoutFields::plain(bodies[1].as_bytes(), Some("prd_1")).is_some());
        assert_eq!(plain_taken, 6);
    }
}
