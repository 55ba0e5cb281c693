//! `wasmbox-bench bare-hyper --port P`: the HTTP ceiling. A hyper HTTP/1.1
//! server on tokio's multi-threaded runtime (as wasmbox's) that answers
//! every request with the bytes wasmbox's hello answers (status, headers,
//! body), with no Wasm, no admission and no worker hand-off. The bench
//! starts it as a separate process, so it shares nothing with the load
//! generator but the machine.

use std::convert::Infallible;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::{free_port, wait_http_ok};

/// wasmbox's hello body.
pub(crate) const HELLO: &[u8] = b"Hello from wasmbox!\n";

async fn answer(
    _req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let t = Instant::now();
    // The same headers as wasmbox (hyper adds `date`), Server-Timing with
    // its phases in the same format, so the answer has the same size.
    let total = t.elapsed().as_secs_f64() * 1e3;
    let timing = format!(
        "load;dur=0.0000, queue;dur=0.0000, isolation;dur=0.0000, instantiate;dur=0.0000, execute;dur=0.0000, cpu;dur=0.0000, total;dur={total:.4}"
    );
    let resp = hyper::Response::builder()
        .status(200)
        .header("content-type", "text/plain; charset=utf-8")
        .header("server-timing", timing)
        .body(Full::new(Bytes::from_static(HELLO)))
        .expect("valid response");
    Ok(resp)
}

/// Serves on 127.0.0.1:`port` until killed.
pub(crate) fn serve(port: u16) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                    .await;
            });
        }
    })
}

/// The bare server as a child process; killed on drop.
pub(crate) struct BareHyper {
    child: Child,
    pub(crate) port: u16,
}

impl BareHyper {
    pub(crate) fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["bare-hyper", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .context("start bare-hyper")?;
        if let Err(e) = wait_http_ok(port, "/", Duration::from_secs(20), || {
            child.try_wait().ok().flatten().is_some()
        }) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.context("bare-hyper did not come up"));
        }
        Ok(BareHyper { child, port })
    }
}

impl Drop for BareHyper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
