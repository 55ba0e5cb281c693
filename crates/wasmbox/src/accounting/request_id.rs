//! The request id: taken from `X-Request-Id` (printable ASCII, no spaces,
//! at most [`MAX_REQUEST_ID`] bytes) or from a valid W3C `traceparent`
//! (its trace id), generated otherwise; returned in `X-Request-Id`.

use hyper::header::HeaderMap;

/// Longest request id taken from a client.
pub const MAX_REQUEST_ID: usize = 128;

/// The id for a request with `headers`.
pub fn request_id(headers: &HeaderMap) -> String {
    if let Some(id) = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| valid_id(s))
    {
        return id.to_string();
    }
    if let Some(trace) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id)
    {
        return trace.to_string();
    }
    generate()
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_REQUEST_ID && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The trace id of a `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if
/// it is well formed and not all zeros.
fn trace_id(tp: &str) -> Option<&str> {
    let parts: Vec<&str> = tp.trim().split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    match parts.as_slice() {
        [v, t, p, f, ..]
            if hex(v, 2)
                && *v != "ff"
                && hex(t, 32)
                && hex(p, 16)
                && hex(f, 2)
                && t.bytes().any(|b| b != b'0') =>
        {
            Some(t)
        }
        _ => None,
    }
}

/// 32 random hex digits.
fn generate() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn with(name: &'static str, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn a_valid_client_id_is_kept_and_a_bad_one_replaced() {
        assert_eq!(request_id(&with("x-request-id", "abc-123")), "abc-123");
        let long = "a".repeat(MAX_REQUEST_ID + 1);
        let id = request_id(&with("x-request-id", &long));
        assert_eq!(id.len(), 32);
        assert_ne!(request_id(&with("x-request-id", "a b")), "a b");
    }

    #[test]
    fn traceparent_gives_its_trace_id() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            request_id(&with("traceparent", tp)),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let zeros = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        assert_ne!(request_id(&with("traceparent", zeros)), "0".repeat(32));
        assert_eq!(request_id(&HeaderMap::new()).len(), 32);
    }
}
