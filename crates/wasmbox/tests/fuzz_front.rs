//! Property test of the request front: random requests, well-formed and
//! mangled, sent as raw bytes over loopback to a real server (native wire
//! format and `--compat reference`). Properties:
//! - nothing panics (a panic hook counts panics on any thread);
//! - every well-formed request gets a response whose status is a row of the
//!   README's status table, with `Wasmbox-Error` naming the row when it is
//!   not 200, and never 500 (no input of a client's is an internal error);
//! - every mangled request gets a status from the table or one of hyper's
//!   own parse answers (400, 408, 413, 414, 431, 501, 505), or a clean close;
//! - the server still serves afterwards.
//!
//! Generation is seeded (`WASMBOX_FUZZ_SEED`, default fixed) and bounded
//! (`WASMBOX_FUZZ_CASES`, default 400 per server), so CI runs the same cases
//! every time; a failure prints the seed, the case number and its bytes.
//! There is no shrinking: the printed request is already small.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Statuses of the README's status table.
const TABLE: [u16; 14] = [
    200, 400, 403, 404, 405, 408, 413, 422, 424, 500, 502, 503, 504, 507,
];
/// What hyper itself answers to requests it cannot parse.
const HYPER: [u16; 7] = [400, 408, 413, 414, 431, 501, 505];

const METHODS: [&str; 12] = [
    "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "CONNECT", "PATCH", "TRACE", "get", "BREW",
    "POST",
];
const NAMES: [&str; 22] = [
    "hello",
    "echo",
    "hello.wat",
    "echo.wasm",
    "missing",
    "",
    "..",
    ".",
    "-x",
    ".hidden",
    "a%2fb",
    "%2e%2e",
    "%zz",
    "%",
    "%00",
    "caf%C3%A9",
    "x%20y",
    "-/live",
    "-/ready",
    "-/metrics",
    "-/functions",
    "-/nope",
];
const QUERY: [&str; 9] = [
    "",
    "?arg=a",
    "?arg=a&arg=b&arg=%20c",
    "?arg=%ff%fe",
    "?arg",
    "?=&&&",
    "?arg=--bytes&arg=10",
    "?arg=--upper",
    "?x=1&arg=%",
];
const RESOURCE_VALUES: [&str; 14] = [
    "1",
    "64",
    "200",
    "0",
    "-1",
    "",
    " 64 ",
    "1.5",
    "abc",
    "99999999999999999999",
    "4096",
    "1000",
    "999999",
    "0x10",
];

/// One generated request: its bytes, and whether it is well-formed HTTP.
struct Case {
    bytes: Vec<u8>,
    well_formed: bool,
}

fn pick<'a>(rng: &mut fastrand::Rng, from: &[&'a str]) -> &'a str {
    from[rng.usize(..from.len())]
}

fn name(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..10) {
        0 => (0..rng.usize(1..300)).map(|_| rng.alphanumeric()).collect(),
        1 => (0..rng.usize(1..12))
            .map(|_| char::from(rng.u8(b'!'..=b'~')))
            .filter(|c| !matches!(c, '?' | '#'))
            .collect(),
        2..=5 => pick(rng, &["hello", "echo", "echo.wasm"]).to_string(),
        _ => pick(rng, &NAMES).to_string(),
    }
}

fn target(rng: &mut fastrand::Rng) -> String {
    let path = format!("/{}{}", name(rng), pick(rng, &QUERY));
    match rng.u8(..12) {
        0 => "*".to_string(),
        1 => "example.com:443".to_string(),
        2 => format!("http://example.com{path}"),
        3 => path.replacen('/', "//", 1),
        _ => path,
    }
}

fn body(rng: &mut fastrand::Rng) -> Vec<u8> {
    match rng.u8(..6) {
        0 => Vec::new(),
        1 => br#"{"parameter": "x y"}"#.to_vec(),
        2 => br#"{"parameter": 5}"#.to_vec(),
        3 => b"{not json".to_vec(),
        4 => (0..rng.usize(..2000)).map(|_| rng.u8(..)).collect(),
        _ => b"hello world".to_vec(),
    }
}

/// A well-formed request (valid HTTP/1.1 framing; anything in the fields).
fn well_formed(rng: &mut fastrand::Rng) -> Vec<u8> {
    let method = if rng.u8(..10) < 6 {
        pick(rng, &["GET", "POST"])
    } else {
        pick(rng, &METHODS)
    };
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n",
        target(rng)
    );
    for header in ["Memory-Request", "cpu_quota", "cpu-quota"] {
        for _ in 0..[0, 0, 0, 0, 1, 1, 2][rng.usize(..7)] {
            head.push_str(&format!("{header}: {}\r\n", pick(rng, &RESOURCE_VALUES)));
        }
    }
    if rng.bool() {
        head.push_str("Content-Type: application/json\r\n");
    }
    let body = body(rng);
    let mut out;
    if rng.u8(..4) == 0 {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        out = head.into_bytes();
        for chunk in body.chunks(rng.usize(1..64)) {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        out = head.into_bytes();
        out.extend_from_slice(&body);
    }
    out
}

/// A well-formed request with bytes flipped, cut, or repeated.
fn mangled(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut b = well_formed(rng);
    for _ in 0..rng.usize(1..4) {
        if b.is_empty() {
            break;
        }
        let at = rng.usize(..b.len());
        match rng.u8(..5) {
            0 => b[at] = rng.u8(..),
            1 => b.truncate(at),
            2 => b.insert(at, b"\r\n\0 :%"[rng.usize(..6)]),
            3 => {
                let piece = b[at..(at + 8).min(b.len())].to_vec();
                for _ in 0..rng.usize(1..200) {
                    b.splice(at..at, piece.iter().copied());
                }
            }
            _ => {
                let tail = b.split_off(at);
                b.extend_from_slice(b"HTTP/2.0 ");
                b.extend(tail);
            }
        }
    }
    b
}

fn case(rng: &mut fastrand::Rng) -> Case {
    if rng.u8(..3) == 0 {
        Case {
            bytes: mangled(rng),
            well_formed: false,
        }
    } else {
        Case {
            bytes: well_formed(rng),
            well_formed: true,
        }
    }
}

/// Sends `bytes` and reads whatever comes back until the server closes (it
/// does after one response: `Connection: close`; or at its header-read or
/// body timeout for a request that never completes). No half-close: the
/// server takes a closed read side for a client gone.
async fn exchange(addr: String, bytes: Vec<u8>) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything.
    let _ = s.write_all(&bytes).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer and no close within 20 s");
    got
}

/// The status and `Wasmbox-Error` of the first response in `reply`.
fn status(reply: &[u8]) -> Option<(u16, Option<String>)> {
    let text = String::from_utf8_lossy(reply);
    let (head, _) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let code = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let error = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("wasmbox-error"))
        .map(|(_, v)| v.trim().to_string());
    Some((code, error))
}

async fn fuzz(server: &TestServer, seed: u64, cases: usize) {
    let addr = server.base.strip_prefix("http://").unwrap().to_string();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
    let all: Vec<Case> = (0..cases).map(|_| case(&mut rng)).collect();
    // Concurrently, a batch at a time: a mangled request may only end at the
    // server's timeouts.
    let mut replies = Vec::with_capacity(cases);
    for batch in all.chunks(32) {
        let sent = batch
            .iter()
            .map(|c| tokio::spawn(exchange(addr.clone(), c.bytes.clone())));
        for reply in futures_util::future::join_all(sent).await {
            replies.push(reply.unwrap());
        }
    }
    for (n, (c, reply)) in all.iter().zip(replies).enumerate() {
        let shown = || {
            format!(
                "seed {seed} case {n}: sent {:?}, got {:?}",
                String::from_utf8_lossy(&c.bytes[..c.bytes.len().min(600)]),
                String::from_utf8_lossy(&reply[..reply.len().min(400)])
            )
        };
        match status(&reply) {
            Some((code, error)) => {
                *seen.entry(code).or_default() += 1;
                if c.well_formed {
                    assert!(TABLE.contains(&code) && code != 500, "{}", shown());
                    assert!(
                        code == 200 || code == 204 || error.is_some() || code == 400,
                        "a failure without Wasmbox-Error: {}",
                        shown()
                    );
                } else {
                    assert!(
                        TABLE.contains(&code) || HYPER.contains(&code),
                        "{}",
                        shown()
                    );
                    assert_ne!(code, 500, "{}", shown());
                }
            }
            None => assert!(
                !c.well_formed,
                "a well-formed request got no response: {}",
                shown()
            ),
        }
        assert_eq!(PANICS.load(Ordering::Relaxed), 0, "a panic: {}", shown());
    }
    eprintln!("statuses seen: {seen:?}");
    // Both kinds of answer were exercised.
    assert!(seen.contains_key(&200) && seen.keys().any(|&c| c >= 400));
}

fn settings() -> (u64, usize) {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
    (
        env("WASMBOX_FUZZ_SEED").unwrap_or(0x5eed_f00d),
        env("WASMBOX_FUZZ_CASES").unwrap_or(400) as usize,
    )
}

fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        previous(info);
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_get_statuses_from_the_table_and_never_panic() {
    count_panics();
    let (seed, cases) = settings();
    for compat in ["none", "reference"] {
        let s = TestServer::start(
            &["hello.wat", "echo.wasm"],
            &[
                "--compat",
                compat,
                "--header-read-timeout",
                "500ms",
                "--body-timeout",
                "500ms",
            ],
        )
        .await;
        fuzz(&s, seed, cases).await;
        s.get("/hello").await.expect(200, &[]);
        s.stop().await;
    }
}
