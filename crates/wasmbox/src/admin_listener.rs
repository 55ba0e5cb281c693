//! The admin listener (`--admin-listen`): its own socket, accept loop and
//! limits, so that it does not share fate with the serving port's. A flood
//! of invocations, a full admission queue or the serving port's connection
//! limits do not stop Prometheus from scraping or an operator from listing.
//!
//! Its own limits, those of every side port (`listener::serve_side_port`): at
//! most 64 connections at once (past that, new ones wait in the kernel's
//! backlog), HTTP/1.1 only, 10 s to send a request's headers, 30 s idle,
//! 10 s of waiting for a client to read. It serves until the
//! server has stopped its workers (like the health port), so metrics can be
//! scraped while draining.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::AdminConfig;
use crate::http::{self, App};
use crate::listener;

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
    pub async fn serve(self, app: Arc<App>, stop: watch::Receiver<bool>) {
        let config = self.config.clone();
        listener::serve_side_port(&self.listener, stop, move |req| {
            let (app, config) = (app.clone(), config.clone());
            async move { http::handle_admin(&app, &config, req).await }
        })
        .await;
    }
}
