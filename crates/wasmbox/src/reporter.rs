//! Reports the container's CPU utilisation to the resource-aware Knative
//! queue-proxy fork: a binary websocket frame holding protobuf
//! `SuperPodMetrics { double cpu_utilization = 1; }` every period.
//!
//! Unlike the reference it never blocks serving and never takes the process
//! down: when nobody listens it retries with capped exponential backoff, and
//! it reconnects whenever the connection drops.

use std::time::Duration;

use futures_util::SinkExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// The queue-proxy fork's message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SuperPodMetrics {
    #[prost(double, tag = "1")]
    pub cpu_utilization: f64,
}

/// Sends the latest value of `cpu` (cores) to `url` every `period` until
/// `stop` flips to true.
pub async fn run(
    url: String,
    period: Duration,
    cpu: watch::Receiver<f64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((mut ws, _)) => {
                tracing::info!(url, "queue-proxy reporter connected");
                backoff = Duration::from_millis(100);
                let mut tick = tokio::time::interval(period);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.changed() => { let _ = ws.close(None).await; return; }
                    }
                    let frame = prost::Message::encode_to_vec(&SuperPodMetrics {
                        cpu_utilization: *cpu.borrow(),
                    });
                    if let Err(e) = ws.send(Message::binary(frame)).await {
                        tracing::warn!(url, error = %e, "queue-proxy reporter lost its connection; reconnecting");
                        break;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(url, error = %e, retry_in = ?backoff, "queue-proxy not reachable")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
