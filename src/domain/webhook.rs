//! Webhooks, the pure part: event names, secrets, the two signature schemes, the retry
//! schedule and the URL guard against server-side request forgery.

use std::net::IpAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use sha2::Sha256;

/// Every event type a store may subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "order.created",
    "order.confirmed",
    "order.cancelled",
    "order.expired",
    "product.sold_out",
    "product.restocked",
    "drop.live",
];

/// Longest accepted endpoint URL, in characters.
pub const MAX_URL_LEN: usize = 2000;
/// What a secret starts with (the Standard Webhooks convention).
const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    format!(
        "{SECRET_PREFIX}{}",
        BASE64.encode(rand::random::<[u8; 32]>())
    )
}

/// The HMAC key of a secret: the base64-decoded part after `whsec_`.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    BASE64.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The signature headers of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signatures {
    /// `Flashsale-Signature: t=<t>,v1=<hex>[,v1=<hex>]`.
    pub flashsale: String,
    /// `webhook-signature: v1,<base64>[ v1,<base64>]` (Standard Webhooks).
    pub standard: String,
}

/// Signs `body` at unix time `t` with every live key (the current secret's first; during
/// a rotation the old one's too), in both schemes.
pub fn sign(keys: &[Vec<u8>], event_id: &str, t: i64, body: &[u8]) -> Signatures {
    let t = t.to_string();
    let mut flashsale = format!("t={t}");
    let mut standard = Vec::with_capacity(keys.len());
    for key in keys {
        let ours = hmac_sha256(key, &[t.as_bytes(), b".", body]);
        flashsale.push_str(",v1=");
        flashsale.push_str(&hex::encode(ours));
        let theirs = hmac_sha256(key, &[event_id.as_bytes(), b".", t.as_bytes(), b".", body]);
        standard.push(format!("v1,{}", BASE64.encode(theirs)));
    }
    Signatures {
        flashsale,
        standard: standard.join(" "),
    }
}

/// The delays between attempts (`FLASHSALE_WEBHOOK_RETRY_SCHEDULE`): after the first
/// attempt fails, the next comes `delays[0]` later, and so on; after the last, the
/// delivery has failed.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    pub delays: Vec<Duration>,
}

/// How far a delay may move either way, so that retries of a burst spread out.
const JITTER: f64 = 0.2;

impl RetrySchedule {
    /// Seconds, comma-separated (fractions allowed, for tests): `5,300,1800`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let delays = s
            .split(',')
            .map(|d| match d.trim().parse::<f64>() {
                Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(Duration::from_secs_f64(secs)),
                _ => Err(format!("{d:?} is not a number of seconds")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() {
            return Err("the schedule needs at least one delay".into());
        }
        Ok(RetrySchedule { delays })
    }

    /// When to try again after failed attempt number `attempt` (1-based), or `None`: the
    /// delivery has failed. `jitter` is uniform in [-1, 1]; a `Retry-After` asked for on
    /// a 429 or 503 is honoured up to twice the scheduled delay.
    pub fn next_delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        let base = *self.delays.get(attempt.checked_sub(1)? as usize)?;
        let jittered = base.mul_f64(1.0 + JITTER * jitter.clamp(-1.0, 1.0));
        Some(match retry_after {
            Some(asked) => asked.clamp(jittered, base * 2),
            None => jittered,
        })
    }
}

/// Parses `Retry-After` in seconds (the HTTP-date form is ignored: a receiver in
/// trouble answers seconds).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Why a URL may not be an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not an absolute http(s) URL with a host, or too long.
    #[error("{0}")]
    Invalid(&'static str),
    /// The host is, or resolves to, an address the service must not reach.
    #[error("{0} is a loopback, private, link-local, unique-local or unspecified address")]
    Forbidden(IpAddr),
}

/// A syntactically acceptable endpoint URL.
pub fn parse_url(raw: &str) -> Result<url::Url, UrlError> {
    if raw.chars().count() > MAX_URL_LEN {
        return Err(UrlError::Invalid("must be at most 2000 characters"));
    }
    let url = url::Url::parse(raw).map_err(|_| UrlError::Invalid("must be an absolute URL"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(UrlError::Invalid("must be an https:// or http:// URL"));
    }
    if url.host().is_none() {
        return Err(UrlError::Invalid("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Invalid("must not carry credentials"));
    }
    Ok(url)
}

/// Whether the service must not send to `ip` (unless an allowed net holds it).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                // 100.64.0.0/10, carrier-grade NAT: private in practice.
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        }
    }
}

/// The address guard: `Err` when `ip` is internal and no allowed net holds it.
pub fn check_addr(ip: IpAddr, allow: &[IpNet]) -> Result<(), UrlError> {
    if is_internal(ip) && !allow.iter().any(|net| net.contains(&ip)) {
        Err(UrlError::Forbidden(ip))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_whsec_and_32_bytes() {
        let s = new_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(secret_key(&s).unwrap().len(), 32);
        assert_ne!(s, new_secret());
        assert_eq!(secret_key("nope"), None);
    }

    #[test]
    fn flashsale_signature_is_hmac_of_t_dot_body() {
        // RFC 4231 test case 2 key and data, framed the way the scheme frames them.
        let key = b"Jefe".to_vec();
        let sig = sign(
            std::slice::from_ref(&key),
            "evt_1",
            0,
            b"what do ya want for nothing?",
        );
        let expected = hex::encode(hmac_sha256(&key, &[b"0.what do ya want for nothing?"]));
        assert_eq!(sig.flashsale, format!("t=0,v1={expected}"));
    }

    #[test]
    fn one_signature_per_live_key() {
        let keys = vec![vec![1u8; 32], vec![2u8; 32]];
        let sig = sign(&keys, "evt_1", 1_700_000_000, b"{}");
        assert_eq!(sig.flashsale.matches(",v1=").count(), 2);
        assert_eq!(sig.standard.split(' ').count(), 2);
        assert!(sig.standard.split(' ').all(|s| s.starts_with("v1,")));
    }

    #[test]
    fn standard_signature_verifies_with_the_standardwebhooks_crate() {
        let secret = new_secret();
        let old = new_secret();
        let keys = vec![secret_key(&secret).unwrap(), secret_key(&old).unwrap()];
        let body = br#"{"id":"evt_1","type":"order.created"}"#;
        let t = chrono::Utc::now().timestamp();
        let sig = sign(&keys, "evt_1", t, body);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("webhook-id", "evt_1".parse().unwrap());
        headers.insert("webhook-timestamp", t.to_string().parse().unwrap());
        headers.insert("webhook-signature", sig.standard.parse().unwrap());
        // Either live secret verifies; a tampered body does not.
        for s in [&secret, &old] {
            let wh = standardwebhooks::Webhook::new(s).unwrap();
            wh.verify(body, &headers).expect("verifies");
            assert!(wh.verify(b"{}", &headers).is_err());
        }
        let other = standardwebhooks::Webhook::new(&new_secret()).unwrap();
        assert!(other.verify(body, &headers).is_err());
    }

    #[test]
    fn schedule_parses_and_ends() {
        let s = RetrySchedule::parse("5, 300,0.5").unwrap();
        assert_eq!(s.delays[2], Duration::from_millis(500));
        assert_eq!(s.next_delay(1, None, 0.0), Some(Duration::from_secs(5)));
        assert_eq!(s.next_delay(3, None, 0.0), Some(Duration::from_millis(500)));
        assert_eq!(s.next_delay(4, None, 0.0), None);
        assert_eq!(s.next_delay(0, None, 0.0), None);
        assert!(RetrySchedule::parse("").is_err());
        assert!(RetrySchedule::parse("5,x").is_err());
        assert!(RetrySchedule::parse("-1").is_err());
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let s = RetrySchedule::parse("100").unwrap();
        assert_eq!(s.next_delay(1, None, 1.0), Some(Duration::from_secs(120)));
        assert_eq!(s.next_delay(1, None, -1.0), Some(Duration::from_secs(80)));
        assert_eq!(s.next_delay(1, None, 7.0), Some(Duration::from_secs(120)));
    }

    #[test]
    fn retry_after_is_honoured_up_to_twice_the_delay() {
        let s = RetrySchedule::parse("100").unwrap();
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(s.next_delay(1, secs(150), 0.0), secs(150));
        assert_eq!(s.next_delay(1, secs(1000), 0.0), secs(200));
        // Never sooner than the schedule.
        assert_eq!(s.next_delay(1, secs(1), 0.0), secs(100));
        assert_eq!(parse_retry_after(" 30 "), secs(30));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn urls_are_checked() {
        assert!(parse_url("https://example.com/hook").is_ok());
        assert!(parse_url("http://example.com:8080/").is_ok());
        assert!(parse_url("ftp://example.com/").is_err());
        assert!(parse_url("/relative").is_err());
        assert!(parse_url("https://user:pw@example.com/").is_err());
        let long = format!("https://example.com/{}", "a".repeat(2000));
        assert!(parse_url(&long).is_err());
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(check_addr(ip, &[]).is_err(), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"] {
            assert!(check_addr(ip.parse().unwrap(), &[]).is_ok(), "{ip}");
        }
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(check_addr("127.0.0.1".parse().unwrap(), &allow).is_ok());
        assert!(check_addr("10.0.0.1".parse().unwrap(), &allow).is_err());
    }
}
