//! `wasmbox serve`: build the runtime handles, accept connections, shut
//! down gracefully on SIGTERM/SIGINT.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use wasmbox_admission::{Admission, AdmissionConfig, Resources};
use wasmbox_runtime::{EpochTicker, Executor, Registry, WasmEngine};

use crate::admin_listener::AdminListener;
use crate::config::ServeConfig;
use crate::health::Readiness;
use crate::http::{self, App, BodyBudget, BodyRules};
use crate::listener::{self, Backoff, Front};
use crate::metrics::Metrics;
use crate::{host, reporter};

/// A bound, not yet serving server (so tests can learn the port first).
pub struct Server {
    pub app: Arc<App>,
    listener: TcpListener,
    front: Front,
    health: Option<TcpListener>,
    admin: Option<AdminListener>,
    qp_report: Option<String>,
    reporting_period: std::time::Duration,
    _ticker: EpochTicker,
    drain_timeout: std::time::Duration,
}

impl Server {
    pub async fn bind(config: ServeConfig) -> anyhow::Result<Server> {
        let engine = WasmEngine::new(config.engine.clone())
            .map_err(|e| {
                let c = &config.engine;
                let pool = if format!("{e:#}").contains("memory pool") {
                    format!(
                        "; its instance pool reserves address space for {} instances (--workers and {} spares), each with up to {} memories of {} MiB (--max-memory-mb, at least 4096): lower --workers or --max-memory-mb",
                        c.max_instances,
                        c.max_instances.saturating_sub(config.executor.max_workers as u32),
                        wasmbox_runtime::engine::MEMORIES_PER_COMPONENT,
                        c.max_memory_mib.max(4096)
                    )
                } else {
                    String::new()
                };
                anyhow::anyhow!("cannot create the wasmtime engine: {e}{pool}")
            })?
            .with_outbound(config.outbound.clone());
        let ticker = EpochTicker::start(&engine)?;
        let registry = Arc::new(
            Registry::new(engine.clone(), config.registry.clone())
                .map_err(|e| anyhow::anyhow!("cannot set up the registry: {e}"))?,
        );
        // Capacity first: the cgroup-v2 mode moves this process into its
        // own subtree, whose limits are not the container's.
        let detected = host::detect_capacity();
        let isolation = wasmbox_isolation::open(&config.isolation).map_err(anyhow::Error::msg)?;
        if isolation.mode() == wasmbox_isolation::Mode::None {
            tracing::warn!("{}", isolation.describe());
        } else {
            tracing::info!(mode = %isolation.mode(), "cpu isolation: {}", isolation.describe());
        }
        let executor = Arc::new(Executor::new(
            config.executor.clone(),
            engine.clone(),
            isolation,
        ));
        // One worker per core the container may use starts now, so that the
        // first calls find a thread and its slot rather than wait while
        // they are made.
        let cores = detected.capacity.cpu_millis.div_ceil(1000).max(1);
        executor.prestart(usize::try_from(cores).unwrap_or(1));
        // After isolation is set up: cgroup-v2 moves this process into its
        // own subtree, and a compile child started before would be left
        // behind in the parent, where it breaks the no-internal-process rule.
        if !config.registry.prewarm_poll.is_zero() {
            registry.start_prewarm();
        }

        let a = &config.admission;
        let capacity = Resources {
            cpu_millis: a.capacity_cpu.unwrap_or(detected.capacity.cpu_millis),
            memory_mb: a.capacity_memory_mb.unwrap_or(detected.capacity.memory_mb),
        };
        let admission_config = AdmissionConfig {
            cpu_overbook: a.cpu_overbook,
            memory_overbook: a.memory_overbook,
            max_queue: a.max_queue,
            max_queue_mb: a
                .max_queue_mb
                .unwrap_or((capacity.memory_mb as f64 * a.memory_overbook) as u64),
            queue_timeout: a.queue_timeout,
            cpu_gate: a.cpu_gate,
            max_function_share: a.max_function_share,
            newcomer_cpu_overdraft: a.newcomer_cpu_overdraft,
            max_function_queue_share: a.max_function_queue_share,
            max_overtaken_wait: a.max_overtaken_wait,
            // Every admitted call has a worker; the rest wait in the fair
            // order, not in the workers' first-come queue.
            max_running: config.executor.max_workers,
            ..AdmissionConfig::new(capacity)
        };
        admission_config
            .validate()
            .map_err(|e| anyhow::anyhow!("admission settings: {e}"))?;
        let admission = Admission::new(admission_config);
        tracing::info!(
            cpu_millicores = capacity.cpu_millis,
            cpu_from = if a.capacity_cpu.is_some() { "--capacity-cpu" } else { detected.cpu_source.as_str() },
            memory_mb = capacity.memory_mb,
            memory_from = if a.capacity_memory_mb.is_some() { "--capacity-memory-mb" } else { detected.memory_source.as_str() },
            limit = ?admission.limit(),
            "admission capacity"
        );
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let body_budget = BodyBudget::new(
            config
                .front
                .buffered_bytes(capacity.memory_mb, config.limits.max_body_bytes),
        );
        let body_rules = BodyRules {
            max: config.limits.max_body_bytes,
            timeout: config.front.body_timeout,
            budget_wait: a.queue_timeout,
        };
        let metrics = Metrics::new();
        let access_log = match &config.access_log {
            Some(target) => Some(crate::accounting::AccessLog::open(target).map_err(|e| {
                anyhow::anyhow!("cannot open the access log {}: {e}", target.display())
            })?),
            None => None,
        };
        let accounting = Arc::new(crate::accounting::Accounting::new(
            metrics.usage.clone(),
            metrics.invocations.clone(),
            access_log,
        ));
        let manifests = Arc::new(wasmbox_runtime::registry::Manifests::new(
            config.registry.dir.clone(),
            wasmbox_runtime::registry::ServerBounds {
                max_memory_mb: config.limits.max_memory_mb,
                max_cpu_quota: config.limits.max_cpu_quota,
                timeout: config.limits.timeout,
                max_output_bytes: config.limits.max_output_bytes,
                max_stderr_bytes: config.limits.max_stderr_bytes,
            },
            config.registry.revalidate_after,
        ));
        let app = Arc::new(App {
            engine,
            registry,
            executor,
            limits: config.limits.clone(),
            compat: config.compat,
            pod: config.pod.clone(),
            in_flight: AtomicUsize::new(0),
            apart: Arc::default(),
            end_poll: Default::default(),
            admission,
            readiness: Readiness::new(config.readiness_window, config.readiness_threshold),
            metrics,
            capacity,
            body_rules,
            body_budget,
            connections: Arc::default(),
            manifests,
            accounting,
        });
        // Bind everything before announcing that we serve.
        let health =
            match config.health_listen {
                Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                    anyhow::anyhow!("cannot listen on {addr} for health probes: {e}")
                })?),
                None => None,
            };
        let admin = AdminListener::bind(&config.admin).await?;
        tracing::info!(
            listen = %listener.local_addr()?,
            functions = %config.registry.dir.display(),
            workers = config.executor.max_workers,
            compat = ?config.compat,
            "wasmbox serving"
        );
        let nofile = host::raise_open_file_limit();
        tracing::info!(
            max_connections = config.front.max_connections,
            from = %config.front.max_connections_from,
            open_file_limit = ?nofile,
            http2 = ?config.front.http2_max_streams,
            max_buffered_mb = app.body_budget.max() >> 20,
            "front door"
        );
        Ok(Server {
            front: Front::new(config.front.clone(), app.connections.clone()),
            app,
            listener,
            health,
            admin,
            _ticker: ticker,
            drain_timeout: config.drain_timeout,
            qp_report: config.qp_report.clone(),
            reporting_period: config.reporting_period,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    pub fn health_addr(&self) -> Option<std::net::SocketAddr> {
        self.health.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets open
    /// requests finish (up to the drain timeout) and stops the workers.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (cpu_tx, cpu_rx) = watch::channel(0.0f64);
        tokio::spawn(sample(self.app.clone(), cpu_tx, stop_rx.clone()));
        if let Some(url) = self.qp_report.clone() {
            tokio::spawn(reporter::run(
                url,
                self.reporting_period,
                cpu_rx,
                stop_rx.clone(),
            ));
        }
        if let Some(health) = self.health.take() {
            tokio::spawn(serve_health(health, self.app.clone(), stop_rx.clone()));
        }
        if let Some(admin) = self.admin.take() {
            tokio::spawn(admin.serve(self.app.clone(), stop_rx.clone()));
        }
        let mut backoff = Backoff::default();
        loop {
            tokio::select! {
                accepted = self.front.accept(&self.listener, &mut backoff) => {
                    self.front.serve(accepted, self.app.clone(), &graceful);
                }
                _ = &mut shutdown => break,
            }
        }
        // The shutdown sequence (README, "Shutdown"): not ready, no new
        // connections or admissions; admitted and queued work has until the
        // drain timeout; then whatever still runs is stopped and answered
        // 503 `draining`, as is whatever still waits for admission; the
        // workers are joined and every slot cgroup is removed.
        tracing::info!(timeout = ?self.drain_timeout, "shutting down: not ready, no new connections, draining");
        self.app.readiness.start_draining();
        self.app.admission.start_draining();
        drop(self.listener);
        let drained = graceful.shutdown();
        tokio::pin!(drained);
        // Connections can close with guests still running: a handler whose
        // client has its whole answer (a HEAD, a body of the declared
        // length) finishes apart. Both are held to the drain timeout.
        let app = self.app.clone();
        let mut closed = false;
        let finished = async {
            (&mut drained).await;
            closed = true;
            loop {
                let stats = app.executor.stats();
                if stats.busy + stats.queued == 0 && app.apart.load(Ordering::Acquire) == 0 {
                    break;
                }
                tokio::time::sleep(IDLE_POLL).await;
            }
        };
        if tokio::time::timeout(self.drain_timeout, finished)
            .await
            .is_err()
        {
            let stats = self.app.executor.stats();
            tracing::warn!(
                timeout = ?self.drain_timeout,
                running = stats.busy,
                queued = stats.queued,
                "drain timeout passed: stopping what still runs"
            );
            self.app.executor.stop_all();
            self.app.admission.close();
            // Stopped invocations answer at once (a guest in Wasm stops at
            // its next epoch tick, one in a host call immediately); give
            // their responses a moment to be written.
            if !closed
                && tokio::time::timeout(STOPPED_WRITE_GRACE, &mut drained)
                    .await
                    .is_err()
            {
                tracing::warn!(
                    "connections still open after stopping every invocation; closing them"
                );
            }
        }
        let executor = self.app.executor.clone();
        tokio::task::spawn_blocking(move || executor.shutdown()).await?;
        let _ = stop_tx.send(true);
        tracing::info!("stopped");
        Ok(())
    }
}

/// Every 50 ms: container CPU use (cores, mean of the last 5 samples) to
/// admission (the CPU gate) and the reporter; every second: memory
/// utilisation to readiness.
async fn sample(app: Arc<App>, cpu_tx: watch::Sender<f64>, mut stop: watch::Receiver<bool>) {
    let mut meter = host::CpuMeter::new(host::CpuClock::detect(), 5);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let capacity_bytes = (app.capacity.memory_mb.max(1) << 20) as f64;
    for n in 0u64.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let cores = meter.sample();
        app.admission.set_cpu_utilization(cores);
        let _ = cpu_tx.send(cores);
        if n % 20 == 0 {
            app.readiness
                .record(host::memory_used() as f64 / capacity_bytes);
        }
    }
}

/// The reference-compatible probe port: `/live` and `/ready`.
async fn serve_health(listener: TcpListener, app: Arc<App>, stop: watch::Receiver<bool>) {
    listener::serve_side_port(&listener, stop, move |req| {
        let app = app.clone();
        async move { http::health_probe(&app, req.uri().path()) }
    })
    .await;
}

/// How often shutdown looks whether the guests (and the bodies read apart)
/// still running after their connections closed have ended.
const IDLE_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// After the drain timeout has stopped every invocation, how long their
/// responses get to be written before the connections are dropped.
const STOPPED_WRITE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Resolves on SIGTERM or SIGINT. A second one exits the process at once,
/// with status 128 + the signal number (130 for SIGINT, 143 for SIGTERM);
/// slot cgroups left behind are swept by the next start.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    tokio::spawn(async move {
        let code = tokio::select! {
            _ = term.recv() => 128 + 15,
            _ = int.recv() => 128 + 2,
        };
        tracing::warn!(code, "second signal: exiting at once");
        std::process::exit(code);
    });
}
