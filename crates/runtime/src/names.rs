//! Function names as they appear in URLs, validated before they touch the
//! file system.

use std::fmt;

/// A validated function name: one path segment of `[A-Za-z0-9._~+-]`, not
/// starting with `-` or `.` (so `/-/...` management routes and dot files can
/// never be functions), no `..`, at most 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionName(String);

/// Why a name was refused; the message is meant for the HTTP client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("function name is empty")]
    Empty,
    /// The decoded name is longer than 255 bytes.
    #[error("function name is longer than 255 bytes")]
    TooLong,
    /// The decoded name contains `/` (e.g. from `%2F`).
    #[error("function name must be a single path segment (it contains '/')")]
    Slash,
    /// A `%` not followed by two hex digits.
    #[error("function name contains a malformed percent-escape")]
    BadEscape,
    /// The decoded bytes are not valid UTF-8.
    #[error("function name is not valid UTF-8")]
    NotUtf8,
    /// The name contains `..`.
    #[error("function name contains '..'")]
    DotDot,
    /// The name starts with `-` or `.` (this character).
    #[error("function name must not start with '{0}'")]
    BadStart(char),
    /// The name contains an ASCII control character (this byte).
    #[error("function name contains a control character (byte 0x{0:02x})")]
    Control(u8),
    /// The name contains a character outside `[A-Za-z0-9._~+-]` (the first
    /// such).
    #[error("function name contains {0:?}; allowed are letters, digits and . _ ~ + -")]
    BadChar(char),
}

impl FunctionName {
    /// Parses a raw (still percent-encoded) URL path segment.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let decoded = percent_decode(raw)?;
        Self::validate(decoded)
    }

    /// Validates an already decoded name (e.g. from the command line).
    pub fn validate(name: String) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > 255 {
            return Err(NameError::TooLong);
        }
        if let Some(b) = name.bytes().find(|b| b.is_ascii_control()) {
            return Err(NameError::Control(b));
        }
        if name.contains('/') {
            return Err(NameError::Slash);
        }
        if name.contains("..") {
            return Err(NameError::DotDot);
        }
        let first = name.chars().next().unwrap();
        if first == '-' || first == '.' {
            return Err(NameError::BadStart(first));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '+' | '-')))
        {
            return Err(NameError::BadChar(c));
        }
        Ok(FunctionName(name))
    }

    /// The decoded name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Percent-decodes `raw`. `percent-encoding` passes a malformed escape
/// through as it is; here every `%` must start two hex digits.
fn percent_decode(raw: &str) -> Result<String, NameError> {
    let well_formed = raw.split('%').skip(1).all(|rest| {
        rest.as_bytes()
            .get(..2)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err(NameError::BadEscape);
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|name| name.into_owned())
        .map_err(|_| NameError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_extensions() {
        for ok in ["hello", "hello.wasm", "my-func_2.cwasm", "a+b~c", "x%2Dy"] {
            assert!(FunctionName::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(FunctionName::parse("x%2Dy").unwrap().as_str(), "x-y");
    }

    #[test]
    fn refuses_traversal_and_odd_bytes() {
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("..", NameError::DotDot),
            ("a..b", NameError::DotDot),
            ("a%2fb", NameError::Slash),
            ("%2e%2e", NameError::DotDot),
            ("a%00b", NameError::Control(0)),
            ("a%0Ab", NameError::Control(b'\n')),
            ("-", NameError::BadStart('-')),
            (".hidden", NameError::BadStart('.')),
            ("a%zz", NameError::BadEscape),
            ("a%4", NameError::BadEscape),
            ("%ff", NameError::NotUtf8),
            ("a b", NameError::BadChar(' ')),
            ("a%5Cb", NameError::BadChar('\\')),
        ];
        for (raw, want) in cases {
            assert_eq!(FunctionName::parse(raw).unwrap_err(), *want, "{raw:?}");
        }
        assert_eq!(
            FunctionName::parse(&"a".repeat(256)).unwrap_err(),
            NameError::TooLong
        );
    }
}
