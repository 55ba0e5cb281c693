//! Reading a request's head: the resource headers and argv from the query
//! (the body: `body`).

use hyper::header::HeaderMap;
use wasmbox_admission::Resources;
use wasmbox_runtime::FunctionName;

use super::error::{ErrorKind, HttpError};
use crate::config::RequestLimits;

/// Reads `Memory-Request` and `cpu_quota` (also `cpu-quota`), applying
/// defaults and bounds.
pub fn parse_resources(
    headers: &HeaderMap,
    limits: &RequestLimits,
) -> Result<Resources, HttpError> {
    parse_resources_for(headers, limits, "this server's")
}

/// [`parse_resources`] with `whose` maximum the message names ("this
/// server's", or a function's manifest).
pub(super) fn parse_resources_for(
    headers: &HeaderMap,
    limits: &RequestLimits,
    whose: &str,
) -> Result<Resources, HttpError> {
    let memory_mb = header_number(
        headers,
        &["memory-request"],
        ("Memory-Request", whose),
        "MB",
        limits.max_memory_mb,
    )?
    .unwrap_or(limits.default_memory_mb);
    let cpu_millis = header_number(
        headers,
        &["cpu_quota", "cpu-quota"],
        ("cpu_quota", whose),
        "millicores",
        limits.max_cpu_quota,
    )?
    .unwrap_or(limits.default_cpu_quota);
    Ok(Resources {
        memory_mb,
        cpu_millis,
    })
}

/// One positive whole number from any of `names` (all values must agree),
/// at most `max`.
fn header_number(
    headers: &HeaderMap,
    names: &[&str],
    (display, whose): (&str, &str),
    unit: &str,
    max: u64,
) -> Result<Option<u64>, HttpError> {
    let bad = |reason: String| {
        HttpError::new(ErrorKind::BadHeader, format!("header {display}: {reason}"))
    };
    let mut found: Option<u64> = None;
    for name in names {
        for v in headers.get_all(*name) {
            let s = v
                .to_str()
                .map_err(|_| bad("value is not visible ASCII".into()))?
                .trim();
            let n = parse_positive(s).map_err(bad)?;
            if n > max {
                return Err(bad(format!(
                    "{n} {unit} is above {whose} maximum of {max} {unit}"
                )));
            }
            match found {
                Some(prev) if prev != n => {
                    return Err(bad(format!(
                        "given more than once with different values ({prev} and {n})"
                    )))
                }
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

fn parse_positive(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("value is empty".into());
    }
    if s.starts_with('-') {
        return Err(format!(
            "'{s}' is negative; it must be a positive whole number"
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}' is not a whole number"));
    }
    match s.parse::<u64>() {
        Ok(0) => Err("0 is not allowed; it must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is too large")),
    }
}

/// argv from the query: argv[0] is the function name, then every `arg=`
/// value in order. Other query parameters are ignored.
pub(super) fn parse_args(name: &FunctionName, query: Option<&str>) -> Vec<String> {
    let mut argv = vec![name.to_string()];
    if let Some(q) = query {
        argv.extend(
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "arg")
                .map(|(_, v)| v.into_owned()),
        );
    }
    argv
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hyper::header::{HeaderName, HeaderValue};

    use super::*;

    fn limits() -> RequestLimits {
        RequestLimits {
            default_memory_mb: 200,
            max_memory_mb: 4096,
            default_cpu_quota: 1000,
            max_cpu_quota: 1000,
            timeout: Duration::from_secs(1),
            max_body_bytes: 10,
            max_output_bytes: 10,
            max_stderr_bytes: 10,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn resources_defaults_and_both_spellings() {
        let l = limits();
        assert_eq!(
            parse_resources(&headers(&[]), &l).unwrap(),
            Resources {
                memory_mb: 200,
                cpu_millis: 1000
            }
        );
        let r = parse_resources(
            &headers(&[("memory-request", "64"), ("cpu-quota", "250")]),
            &l,
        )
        .unwrap();
        assert_eq!(
            r,
            Resources {
                memory_mb: 64,
                cpu_millis: 250
            }
        );
        let r =
            parse_resources(&headers(&[("cpu_quota", "300"), ("cpu-quota", "300")]), &l).unwrap();
        assert_eq!(r.cpu_millis, 300);
    }

    #[test]
    fn malformed_resources_name_header_and_reason() {
        let l = limits();
        let cases = [
            ("memory-request", "-5", "Memory-Request", "negative"),
            ("memory-request", "0", "Memory-Request", "at least 1"),
            (
                "memory-request",
                "abc",
                "Memory-Request",
                "not a whole number",
            ),
            (
                "memory-request",
                "1.5",
                "Memory-Request",
                "not a whole number",
            ),
            (
                "memory-request",
                "99999999999999999999999",
                "Memory-Request",
                "too large",
            ),
            (
                "memory-request",
                "8192",
                "Memory-Request",
                "above this server's maximum of 4096 MB",
            ),
            (
                "cpu_quota",
                "2000",
                "cpu_quota",
                "above this server's maximum of 1000 millicores",
            ),
            ("cpu-quota", "", "cpu_quota", "empty"),
        ];
        for (h, v, name, reason) in cases {
            let e = parse_resources(&headers(&[(h, v)]), &l).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadHeader);
            assert!(
                e.message.contains(name) && e.message.contains(reason),
                "{h}: {v} -> {}",
                e.message
            );
        }
        let e = parse_resources(&headers(&[("cpu_quota", "300"), ("cpu-quota", "400")]), &l)
            .unwrap_err();
        assert!(e.message.contains("different values"), "{}", e.message);
    }

    #[test]
    fn args_come_from_arg_parameters_in_order() {
        let n = FunctionName::parse("echo").unwrap();
        assert_eq!(
            parse_args(&n, Some("arg=a&x=1&arg=b%20c&arg=d+e")),
            vec!["echo", "a", "b c", "d e"]
        );
        assert_eq!(parse_args(&n, None), vec!["echo"]);
    }
}
