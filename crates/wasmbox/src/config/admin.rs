//! The admin listener's settings: where it listens, the bearer token that
//! guards the function listing (read once, at startup), and whether the
//! metrics need that token too. A leaf: it imports nothing from its
//! siblings; `resolve` wraps [`AdminConfigError`] into its `ConfigError`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The environment variable that holds the admin token itself (there is no
/// flag for the value: a command line is visible to every local user in
/// `/proc/<pid>/cmdline`).
pub const ENV_ADMIN_TOKEN: &str = "WASMBOX_ADMIN_TOKEN";

/// The admin listener, resolved.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// `--admin-listen`; `None`: no admin listener, so no metrics and no
    /// listing anywhere.
    pub listen: Option<SocketAddr>,
    /// The bearer token for `/-/functions` (and `/-/metrics` with
    /// `metrics_auth`); `None`: those answer 403 `admin-token-not-configured`.
    pub token: Option<AdminToken>,
    /// `--admin-metrics-auth`: `/-/metrics` needs the token too.
    pub metrics_auth: bool,
}

/// Where the token came from, for `--check-config` and the startup log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Env,
}

/// The admin token. Its `Debug` never shows the value, so neither a log line
/// nor a `{:?}` of the configuration can leak it.
#[derive(Clone)]
pub struct AdminToken {
    value: Vec<u8>,
    pub source: TokenSource,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminToken(<redacted>, from {})", self.source)
    }
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::File(p) => write!(f, "--admin-token-file {}", p.display()),
            TokenSource::Env => write!(f, "{ENV_ADMIN_TOKEN}"),
        }
    }
}

impl AdminToken {
    /// Whether `given` is the token, in time that depends only on the two
    /// lengths: a length mismatch returns at once (so the token's length
    /// can leak, nothing else); equal lengths are compared by OR-folding the
    /// XOR of every byte pair, with no early exit, and the fold's result
    /// passes through `black_box` so the compiler cannot turn it back into
    /// a short-circuiting comparison.
    pub fn matches(&self, given: &[u8]) -> bool {
        if given.len() != self.value.len() {
            return false;
        }
        let diff = self
            .value
            .iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// A token that cannot be used, and why. The messages never contain the
/// token's value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdminConfigError {
    #[error("cannot read the admin token file {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("the admin token from {0} is empty; put a random string in it (e.g. `openssl rand -hex 32`)")]
    Empty(TokenSource),
    #[error("the admin token from {0} contains a character that cannot be sent in an Authorization header: use printable ASCII without spaces (e.g. `openssl rand -hex 32`)")]
    BadCharacter(TokenSource),
    #[error("both --admin-token-file and {ENV_ADMIN_TOKEN} are set; set one")]
    TwoSources,
    #[error("--admin-metrics-auth needs an admin token (--admin-token-file or {ENV_ADMIN_TOKEN})")]
    MetricsAuthWithoutToken,
    #[error("--admin-listen {admin} uses the port of {other}; the admin listener needs a port of its own")]
    SharedPort { admin: SocketAddr, other: String },
}

impl AdminConfigError {
    /// The flag or environment variable at fault.
    pub fn setting(&self) -> &'static str {
        match self {
            AdminConfigError::Unreadable { .. } => "--admin-token-file",
            AdminConfigError::Empty(s) | AdminConfigError::BadCharacter(s) => match s {
                TokenSource::File(_) => "--admin-token-file",
                TokenSource::Env => ENV_ADMIN_TOKEN,
            },
            AdminConfigError::TwoSources => "--admin-token-file",
            AdminConfigError::MetricsAuthWithoutToken => "--admin-metrics-auth",
            AdminConfigError::SharedPort { .. } => "--admin-listen",
        }
    }
}

/// Reads the token from `file` or from the value of [`ENV_ADMIN_TOKEN`]
/// (`env`, `Some("")` when set but empty). Surrounding whitespace (a file's
/// trailing newline) is not part of the token.
pub fn read_token(
    file: Option<&Path>,
    env: Option<String>,
) -> Result<Option<AdminToken>, AdminConfigError> {
    let (raw, source) = match (file, env) {
        (Some(_), Some(_)) => return Err(AdminConfigError::TwoSources),
        (None, None) => return Ok(None),
        (None, Some(v)) => (v.into_bytes(), TokenSource::Env),
        (Some(path), None) => {
            let bytes = std::fs::read(path).map_err(|e| AdminConfigError::Unreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            (bytes, TokenSource::File(path.to_path_buf()))
        }
    };
    let value = raw.trim_ascii();
    if value.is_empty() {
        return Err(AdminConfigError::Empty(source));
    }
    if !value.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(AdminConfigError::BadCharacter(source));
    }
    Ok(Some(AdminToken {
        value: value.to_vec(),
        source,
    }))
}

/// The whole admin configuration; `others` are the server's other
/// listeners (name, address), whose ports the admin listener may not share.
pub fn resolve_admin(
    listen: Option<SocketAddr>,
    token_file: Option<&Path>,
    token_env: Option<String>,
    metrics_auth: bool,
    others: &[(&str, SocketAddr)],
) -> Result<AdminConfig, AdminConfigError> {
    let token = read_token(token_file, token_env)?;
    if metrics_auth && token.is_none() {
        return Err(AdminConfigError::MetricsAuthWithoutToken);
    }
    if let Some(admin) = listen {
        if let Some((name, other)) = others
            .iter()
            .find(|(_, a)| a.port() != 0 && a.port() == admin.port())
        {
            return Err(AdminConfigError::SharedPort {
                admin,
                other: format!("{name} {other}"),
            });
        }
    }
    Ok(AdminConfig {
        listen,
        token,
        metrics_auth,
    })
}

impl AdminConfig {
    /// One line per setting for `--check-config`; the token by its source
    /// only.
    pub fn describe(&self) -> [(&'static str, String); 3] {
        [
            (
                "admin-listen",
                self.listen
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "off (no metrics, no listing)".into()),
            ),
            (
                "admin-token",
                match &self.token {
                    Some(t) => format!("set, from {} (value not shown)", t.source),
                    None => "not configured (/-/functions answers 403)".into(),
                },
            ),
            ("admin-metrics-auth", self.metrics_auth.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(v: &str) -> AdminToken {
        read_token(None, Some(v.into())).unwrap().unwrap()
    }

    #[test]
    fn the_token_matches_only_itself() {
        let t = token("s3cret-token");
        assert!(t.matches(b"s3cret-token"));
        assert!(
            !t.matches(b"s3cret-tokeN"),
            "same length, last byte differs"
        );
        assert!(
            !t.matches(b"S3cret-token"),
            "same length, first byte differs"
        );
        assert!(!t.matches(b"s3cret-token2"), "longer");
        assert!(!t.matches(b"s3cret"), "a prefix");
        assert!(!t.matches(b""));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = token("do-not-print-me");
        let config = AdminConfig {
            listen: None,
            token: Some(t),
            metrics_auth: false,
        };
        let shown = format!("{config:?} {:?}", config.describe());
        assert!(!shown.contains("do-not-print-me"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn token_files_are_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "abc123\n").unwrap();
        let t = read_token(Some(&good), None).unwrap().unwrap();
        assert!(t.matches(b"abc123"));
        assert_eq!(t.source, TokenSource::File(good.clone()));

        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let e = read_token(Some(&empty), None).unwrap_err();
        assert_eq!(e, AdminConfigError::Empty(TokenSource::File(empty.clone())));
        assert!(e.to_string().contains("is empty"), "{e}");

        let missing = dir.path().join("missing");
        let e = read_token(Some(&missing), None).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "cannot read the admin token file {}",
                missing.display()
            )),
            "{e}"
        );
        assert_eq!(e.setting(), "--admin-token-file");

        let spaced = dir.path().join("spaced");
        std::fs::write(&spaced, "two words").unwrap();
        let e = read_token(Some(&spaced), None).unwrap_err();
        assert!(matches!(e, AdminConfigError::BadCharacter(_)), "{e}");

        assert_eq!(
            read_token(Some(&good), Some("x".into())).unwrap_err(),
            AdminConfigError::TwoSources
        );
        assert_eq!(
            read_token(None, Some(String::new())).unwrap_err().setting(),
            ENV_ADMIN_TOKEN
        );
        assert!(read_token(None, None).unwrap().is_none());
    }

    #[test]
    fn metrics_auth_needs_a_token_and_ports_are_not_shared() {
        let admin: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        assert_eq!(
            resolve_admin(Some(admin), None, None, true, &[]).unwrap_err(),
            AdminConfigError::MetricsAuthWithoutToken
        );
        let serving: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        let e = resolve_admin(Some(admin), None, None, false, &[("--port", serving)]).unwrap_err();
        assert_eq!(e.setting(), "--admin-listen");
        assert!(e.to_string().contains("--port 0.0.0.0:9464"), "{e}");
        // Port 0 (any free port) never clashes.
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(resolve_admin(Some(any), None, None, false, &[("--port", any)]).is_ok());
    }
}
