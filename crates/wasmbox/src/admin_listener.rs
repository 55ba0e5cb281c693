//! The admin listener (`--admin-listen`): its own socket, accept loop and
//! limits, so that it does not share fate with the serving port's. A flood
//! of invocations, a full admission queue or the serving port's connection
//! limits do not stop Prometheus from scraping or an operator from listing.
//!
//! Its own limits: at most [`MAX_CONNECTIONS`] connections at once (past
//! that, new ones wait in the kernel's backlog), HTTP/1.1 only, and
//! [`HEADER_READ_TIMEOUT`] to send a request's headers. It serves until the
//! server has stopped its workers (like the health port), so metrics can be
//! scraped while draining.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::AdminConfig;
use crate::http::{self, App};
use crate::listener::{self, Backoff};

/// Most admin connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound admin listener, not yet serving.
pub struct AdminListener {
    listener: TcpListener,
    config: Arc<AdminConfig>,
}

impl AdminListener {
    /// Binds `config.listen`; `None` when no admin listener is configured.
    pub async fn bind(config: &AdminConfig) -> anyhow::Result<Option<AdminListener>> {
        let Some(addr) = config.listen else {
            return Ok(None);
        };
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr} for the admin listener (--admin-listen): {e}")
        })?;
        tracing::info!(
            listen = %listener.local_addr()?,
            listing = if config.token.is_some() { "bearer token" } else { "403: no admin token configured" },
            metrics = if config.metrics_auth { "bearer token" } else { "open" },
            token_from = config.token.as_ref().map(|t| t.source.to_string()).unwrap_or_default(),
            "admin listener"
        );
        Ok(Some(AdminListener {
            listener,
            config: Arc::new(config.clone()),
        }))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` changes.
    pub async fn serve(self, app: Arc<App>, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut backoff = Backoff::default();
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                _ = stop.changed() => return,
            };
            let stream = tokio::select! {
                s = listener::accept(&self.listener, &mut backoff) => s,
                _ = stop.changed() => return,
            };
            let (app, config) = (app.clone(), self.config.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let (app, config) = (app.clone(), config.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::handle_admin(&app, &config, &req).await,
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                drop(permit);
            });
        }
    }
}
