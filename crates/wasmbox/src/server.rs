//! `wasmbox serve`: build the runtime handles, accept connections, shut
//! down gracefully on SIGTERM/SIGINT.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use wasmbox_runtime::{EpochTicker, Executor, Registry, WasmEngine};

use crate::config::ServeConfig;
use crate::http::{self, App};

/// A bound, not yet serving server (so tests can learn the port first).
pub struct Server {
    pub app: Arc<App>,
    listener: TcpListener,
    _ticker: EpochTicker,
    drain_timeout: std::time::Duration,
}

impl Server {
    pub async fn bind(config: ServeConfig) -> anyhow::Result<Server> {
        let engine = WasmEngine::new(config.engine.clone())
            .map_err(|e| anyhow::anyhow!("cannot create the wasmtime engine: {e}"))?;
        let ticker = EpochTicker::start(&engine)?;
        let registry = Arc::new(
            Registry::new(engine.clone(), config.registry.clone())
                .map_err(|e| anyhow::anyhow!("cannot set up the registry: {e}"))?,
        );
        let isolation = wasmbox_isolation::open(&config.isolation).map_err(anyhow::Error::msg)?;
        if isolation.mode() == wasmbox_isolation::Mode::None {
            tracing::warn!("{}", isolation.describe());
        } else {
            tracing::info!(mode = %isolation.mode(), "cpu isolation: {}", isolation.describe());
        }
        let executor = Arc::new(Executor::new(config.executor.clone(), isolation));
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let app = Arc::new(App {
            engine,
            registry,
            executor,
            limits: config.limits.clone(),
            compat: config.compat,
            pod: config.pod.clone(),
            in_flight: AtomicUsize::new(0),
            ready: AtomicBool::new(true),
        });
        tracing::info!(
            listen = %listener.local_addr()?,
            functions = %config.registry.dir.display(),
            workers = config.executor.max_workers,
            compat = ?config.compat,
            "wasmbox serving"
        );
        Ok(Server {
            app,
            listener,
            _ticker: ticker,
            drain_timeout: config.drain_timeout,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets open
    /// requests finish (up to the drain timeout) and stops the workers.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let builder = auto::Builder::new(TokioExecutor::new());
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(s) => s,
                        Err(e) => {
                            // EMFILE and friends: log, back off a little, go on.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let app = self.app.clone();
                    let service = service_fn(move |req| {
                        let app = app.clone();
                        async move { Ok::<_, std::convert::Infallible>(http::handle(app, req).await) }
                    });
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                _ = &mut shutdown => break,
            }
        }
        tracing::info!("shutting down: not ready, no new connections, draining");
        self.app.ready.store(false, Ordering::Relaxed);
        drop(self.listener);
        if tokio::time::timeout(self.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?self.drain_timeout, "drain timeout passed with requests still open");
        }
        let executor = self.app.executor.clone();
        tokio::task::spawn_blocking(move || executor.shutdown()).await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
