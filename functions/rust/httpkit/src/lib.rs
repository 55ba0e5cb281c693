//! `httpkit`: a wasi:http handler for wasmbox's tests. The path (after
//! `/<function>`) picks what it does:
//!
//! | path | response |
//! |---|---|
//! | `/sleep/MS` | sleeps MS ms in one host call, then `slept MS ms` |
//! | `/spin/MS` | burns MS ms of CPU (wall clock), then `spun MS ms` |
//! | `/alloc/MB` | allocates and touches MB MiB, then `allocated MB MiB` |
//! | `/big/N` | N bytes of `x`, streamed in 4 KiB writes |
//! | `/hoard/N` | keeps N header maps of 96 KiB each (host memory) while it answers `held N` |
//! | `/random/N` | asks the host for N random bytes in one call, then `got N random bytes` |
//! | `/sized/N` | N bytes of `y` with `content-length: N`, streamed in 4 KiB writes |
//! | `/drip/N/MS` | sends its head, then N lines `drip I`, sleeping MS ms after each |
//! | `/status/CODE` | status CODE, header `x-kit: status` |
//! | `/trap` | panics before answering (a trap) |
//! | `/late-trap/MS` | sets the head and writes `partial`, then sleeps MS ms and panics; with MS 0, aborts at once (a trap with no host call) |
//! | `/none` | returns without answering |
//! | `/fetch/AUTHORITY/PATH` | GET http://AUTHORITY/PATH; its status and body, or 502 and `error: CODE` |
//! | `/fetch2/AUTHORITY/PATH` | the same twice, one after the other; the second's answer |
//! | `/env/NAME` | the value of environment variable NAME, or 404 |
//! | `/pipe` | sends its head at once, then the request body back as each piece arrives |
//! | `/head-spin/MS` | sets its head and writes `started`, burns MS ms of CPU without a host call, then writes `done` |
//! | anything else | 200: method, path with query, headers (sorted), then the body |
//!
//! A request body that fails while being read (the client broke it, or
//! wasmbox cut it at a limit) makes httpkit panic (a trap).

use wasip2::clocks::monotonic_clock;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};
use wasip2::io::streams::StreamError;

struct Kit;

fn respond(out: ResponseOutparam, status: u16, extra: &[(&str, &str)], body: &[u8]) {
    let mut list = vec![(
        "content-type".to_string(),
        b"text/plain; charset=utf-8".to_vec(),
    )];
    list.extend(extra.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())));
    let headers = Fields::from_list(&list).expect("valid headers");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status");
    let outgoing = response.body().expect("body taken once");
    ResponseOutparam::set(out, Ok(response));
    write_body(outgoing, body);
}

fn write_body(outgoing: OutgoingBody, body: &[u8]) {
    {
        let stream = outgoing.write().expect("stream taken once");
        for chunk in body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).expect("write body");
        }
    }
    OutgoingBody::finish(outgoing, None).expect("finish body");
}

/// The next piece of `stream`, or `None` at its end; panics if it failed.
fn next_piece(stream: &wasip2::io::streams::InputStream) -> Option<Vec<u8>> {
    match stream.blocking_read(65536) {
        Ok(piece) => Some(piece),
        Err(StreamError::Closed) => None,
        Err(StreamError::LastOperationFailed(e)) => {
            panic!("the request body failed: {}", e.to_debug_string())
        }
    }
}

fn read_all(body: IncomingBody) -> Vec<u8> {
    let mut data = Vec::new();
    {
        let stream = body.stream().expect("stream taken once");
        while let Some(piece) = next_piece(&stream) {
            data.extend_from_slice(&piece);
        }
    }
    drop(body);
    data
}

/// Answers at once, then writes each piece of the request body back as it
/// arrives.
fn pipe(request: IncomingRequest, out: ResponseOutparam) {
    let response = OutgoingResponse::new(Fields::new());
    let outgoing = response.body().expect("body taken once");
    ResponseOutparam::set(out, Ok(response));
    let body = request.consume().expect("body taken once");
    {
        let input = body.stream().expect("stream taken once");
        let output = outgoing.write().expect("stream taken once");
        while let Some(piece) = next_piece(&input) {
            for chunk in piece.chunks(4096) {
                output.blocking_write_and_flush(chunk).expect("write body");
            }
        }
    }
    drop(body);
    OutgoingBody::finish(outgoing, None).expect("finish body");
}

fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(s) => s.clone(),
    }
}

fn fetch(authority: &str, path: &str) -> Result<(u16, Vec<u8>), ErrorCode> {
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&Scheme::Http)).expect("scheme");
    request.set_authority(Some(authority)).expect("authority");
    request
        .set_path_with_query(Some(&format!("/{path}")))
        .expect("path");
    let future = outgoing_handler::handle(request, None)?;
    future.subscribe().block();
    let response = future
        .get()
        .expect("ready")
        .expect("taken once")?;
    let status = response.status();
    let body = read_all(response.consume().expect("body taken once"));
    Ok((status, body))
}

impl Guest for Kit {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let route: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
        let number = || route.get(1).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        match route[0] {
            "sleep" => {
                monotonic_clock::subscribe_duration(number() * 1_000_000).block();
                respond(out, 200, &[], format!("slept {} ms\n", number()).as_bytes());
            }
            "spin" => {
                let end = monotonic_clock::now() + number() * 1_000_000;
                let mut x: u64 = 1;
                while monotonic_clock::now() < end {
                    for i in 0..10_000u64 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                    }
                }
                respond(out, 200, &[], format!("spun {} ms ({})\n", number(), x % 7).as_bytes());
            }
            "alloc" => {
                let mut v: Vec<u8> = Vec::new();
                v.resize((number() as usize) << 20, 1);
                let sum: u64 = v.iter().step_by(4096).map(|b| u64::from(*b)).sum();
                respond(out, 200, &[], format!("allocated {} MiB ({sum})\n", number()).as_bytes());
            }
            "big" => respond(out, 200, &[], &vec![b'x'; number() as usize]),
            // Keeps `n` header maps of 96 KiB each alive: host memory,
            // outside the guest's own.
            "hoard" => {
                let value = vec![b'x'; 96 << 10];
                let held: Vec<Fields> = (0..number())
                    .map(|_| {
                        Fields::from_list(&[("x-hoard".to_string(), value.clone())])
                            .expect("valid header")
                    })
                    .collect();
                respond(out, 200, &[], format!("held {}\n", held.len()).as_bytes());
            }
            "drip" => {
                let ms: u64 = route.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
                let response = OutgoingResponse::new(Fields::new());
                let outgoing = response.body().expect("body taken once");
                ResponseOutparam::set(out, Ok(response));
                {
                    let stream = outgoing.write().expect("stream taken once");
                    for i in 0..number() {
                        let line = format!("drip {i}\n");
                        stream.blocking_write_and_flush(line.as_bytes()).expect("write");
                        monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                    }
                }
                OutgoingBody::finish(outgoing, None).expect("finish body");
            }
            "sized" => {
                let n = number().to_string();
                respond(out, 200, &[("content-length", &n)], &vec![b'y'; number() as usize]);
            }
            "random" => {
                let got = wasip2::random::random::get_random_bytes(number());
                respond(out, 200, &[], format!("got {} random bytes\n", got.len()).as_bytes());
            }
            "status" => respond(out, number() as u16, &[("x-kit", "status")], b"status\n"),
            "trap" => panic!("httpkit was asked to trap"),
            "late-trap" => {
                let response = OutgoingResponse::new(Fields::new());
                let outgoing = response.body().expect("body taken once");
                ResponseOutparam::set(out, Ok(response));
                let stream = outgoing.write().expect("stream taken once");
                stream.blocking_write_and_flush(b"partial\n").expect("write");
                if number() == 0 {
                    std::process::abort();
                }
                monotonic_clock::subscribe_duration(number() * 1_000_000).block();
                panic!("httpkit trapped after its response head");
            }
            "none" => {}
            "pipe" => pipe(request, out),
            "env" => match std::env::var(route.get(1).copied().unwrap_or_default()) {
                Ok(v) => respond(out, 200, &[], format!("{v}\n").as_bytes()),
                Err(_) => respond(out, 404, &[], b"not set\n"),
            },
            "head-spin" => {
                let response = OutgoingResponse::new(Fields::new());
                let outgoing = response.body().expect("body taken once");
                ResponseOutparam::set(out, Ok(response));
                {
                    let stream = outgoing.write().expect("stream taken once");
                    stream.blocking_write_and_flush(b"started\n").expect("write");
                    let end = monotonic_clock::now() + number() * 1_000_000;
                    let mut x: u64 = 1;
                    while monotonic_clock::now() < end {
                        for i in 0..10_000u64 {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                        }
                    }
                    stream
                        .blocking_write_and_flush(format!("done ({})\n", x % 7).as_bytes())
                        .expect("write");
                }
                OutgoingBody::finish(outgoing, None).expect("finish body");
            }
            "fetch" | "fetch2" => {
                let authority = route.get(1).copied().unwrap_or_default();
                let rest = route.get(2).copied().unwrap_or_default();
                if route[0] == "fetch2" {
                    let _ = fetch(authority, rest);
                }
                match fetch(authority, rest) {
                    Ok((status, body)) => respond(out, status, &[], &body),
                    Err(e) => respond(out, 502, &[], format!("error: {e:?}\n").as_bytes()),
                }
            }
            _ => {
                let mut text = format!(
                    "method: {}\npath: {path}\n",
                    method_name(&request.method())
                );
                let mut headers = request.headers().entries();
                headers.sort();
                for (k, v) in headers {
                    text.push_str(&format!("header: {k}: {}\n", String::from_utf8_lossy(&v)));
                }
                let body = read_all(request.consume().expect("body taken once"));
                text.push_str(&format!("body: {} bytes\n", body.len()));
                let mut bytes = text.into_bytes();
                bytes.extend_from_slice(&body);
                respond(out, 200, &[], &bytes);
            }
        }
    }
}

wasip2::http::proxy::export!(Kit);
