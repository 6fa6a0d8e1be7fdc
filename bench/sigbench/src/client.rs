//! One simulated client: connect, join its room, then follow the engine's phases
//! (idle, relay at a given period, close) until told to close or cut off.
//!
//! Clients `2p` and `2p + 1` share room `p`. While relaying, every client sends
//! on its own schedule, offset so that the two members of a pair alternate and
//! the pairs are spread evenly over the period; the aggregate is the asked rate.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::hist::Hist;
use crate::net::{self, Ws};
use crate::protocol::{Incoming, Protocol};
use crate::state::{Phase, Shared, status};

/// What all clients of a run have in common.
#[derive(Debug)]
pub struct ClientCtx {
    /// Shared counters and status.
    pub shared: Arc<Shared>,
    /// The protocol spoken.
    pub protocol: Protocol,
    /// The WebSocket URL of each node (one for a single server).
    pub urls: Vec<String>,
    /// The address of each node.
    pub servers: Vec<SocketAddr>,
    /// TLS client config (accepts any certificate).
    pub tls: Arc<rustls::ClientConfig>,
    /// Bounds how many clients connect and join at once.
    pub admission: Arc<Semaphore>,
    /// Time allowed for one client's connect + join.
    pub client_timeout: Duration,
    /// No client starts connecting after this.
    pub connect_deadline: Instant,
    /// Padding put in every relayed message.
    pub pad: String,
    /// Room names are this prefix plus the pair number.
    pub room_prefix: String,
    /// Phase changes from the engine.
    pub phase: watch::Receiver<Phase>,
}

/// How long a closing client waits for the server's close reply.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Run client `id` from connect to close.
pub async fn run(ctx: Arc<ClientCtx>, id: usize, src: IpAddr) {
    let shared = Arc::clone(&ctx.shared);
    let room = format!("{}{}", ctx.room_prefix, id / 2);
    let setup = async {
        let _permit = tokio::time::timeout_at(ctx.connect_deadline, ctx.admission.acquire())
            .await
            .map_err(|_| anyhow!("connect phase deadline passed before this client's turn"))?
            .context("admission closed")?;
        let join = connect_and_join(
            &ctx,
            id,
            &room,
            src,
            &shared.connect_hist,
            &shared.join_hist,
        );
        tokio::time::timeout(ctx.client_timeout, join)
            .await
            .map_err(|_| anyhow!("connect+join timed out"))?
    };
    let (ws, keepalive) = match setup.await {
        Ok(v) => v,
        Err(e) => {
            shared.set_status(id, status::FAILED);
            shared
                .failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            shared.event(&format!("join failed: {}", short_error(&e)));
            shared.outcome.notify_one();
            return;
        }
    };
    shared.set_status(id, status::JOINED);
    shared
        .joined
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared.outcome.notify_one();
    let closing = steady(&ctx, id, &room, ws, keepalive).await;
    if !closing {
        shared.set_status(id, status::GONE);
    }
}

/// Root cause of an error chain, short, without per-connection details.
fn short_error(e: &anyhow::Error) -> String {
    let mut s = format!("{e:#}");
    s.truncate(160);
    s
}

/// Connect, do the protocol's own handshake, join; records the connect and join
/// latencies in the given histograms; returns the socket and the keep-alive
/// (frame, interval) the protocol needs.
impl ClientCtx {
    /// The node client `id` connects to: the two members of a pair go to
    /// different nodes when there are several (pair p: nodes p and p + 1).
    pub fn node_of(&self, id: usize) -> usize {
        let nodes = self.servers.len().max(1);
        (id / 2 + id % 2) % nodes
    }
}

pub async fn connect_and_join(
    ctx: &ClientCtx,
    room_member: usize,
    room: &str,
    src: IpAddr,
    connect_hist: &Hist,
    join_hist: &Hist,
) -> Result<(Ws, Option<(&'static str, Duration)>)> {
    let t0 = Instant::now();
    let node = ctx.node_of(room_member);
    let (Some(url), Some(server)) = (ctx.urls.get(node), ctx.servers.get(node)) else {
        anyhow::bail!("no server address");
    };
    let mut ws = net::open(url, *server, src, &ctx.tls).await?;
    let mut ping_interval = None;
    if ctx.protocol.has_session_handshake() {
        // Engine.IO open packet, then socket.io's connect to "/".
        loop {
            match next_text(&mut ws).await? {
                Some(text) => match ctx.protocol.classify(&text) {
                    Incoming::EioOpen { ping_interval_ms } => {
                        ping_interval = ping_interval_ms.map(Duration::from_millis);
                    }
                    Incoming::SioConnect => break,
                    Incoming::Closed => bail!("server closed the session during handshake"),
                    _ => {}
                },
                None => bail!("connection closed during handshake"),
            }
        }
    }
    connect_hist.record(t0.elapsed().as_micros() as u64);

    let t_join = Instant::now();
    ws.send(Message::text(ctx.protocol.join_frame(room)))
        .await
        .context("sending join")?;
    loop {
        let Some(text) = next_text(&mut ws).await? else {
            bail!("connection closed before joined");
        };
        match ctx.protocol.classify(&text) {
            Incoming::Joined => break,
            Incoming::Full => bail!("room full"),
            Incoming::Error(code) => bail!("server error on join: {code}"),
            Incoming::Closed => bail!("server closed the session on join"),
            Incoming::EioPing => ws.send(Message::text("3")).await.context("eio pong")?,
            _ => {}
        }
    }
    join_hist.record(t_join.elapsed().as_micros() as u64);
    Ok((ws, ctx.protocol.keepalive(ping_interval)))
}

/// The next text frame; `None` when the connection closed. Control frames are
/// handled by the library (pings answered) and skipped.
async fn next_text(ws: &mut Ws) -> Result<Option<String>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(Some(t.as_str().to_owned())),
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("websocket read"),
        }
    }
}

/// This client's sending schedule in one relay step.
#[derive(Debug, Clone, Copy)]
struct Plan {
    step: u32,
    start: Instant,
    end: Instant,
    period: Duration,
    /// Offset as a fraction of the period.
    frac: f64,
    /// Sends done so far.
    k: u64,
}

impl Plan {
    /// When send number `k` is due.
    fn due(&self) -> Instant {
        self.start + self.period.mul_f64(self.frac + self.k as f64)
    }
}

/// This client's offset in the period: pairs spread by the golden ratio, the two
/// members of a pair half a period apart.
fn offset_fraction(id: usize) -> f64 {
    const GOLDEN: f64 = 0.618_033_988_749_894_9;
    let pair = (id / 2) as f64;
    let base = (pair * GOLDEN).fract();
    (base + 0.5 * (id % 2) as f64).fract()
}

/// The connected life of a client. Returns true when it ended because the engine
/// said close, false when the connection was lost.
async fn steady(
    ctx: &ClientCtx,
    id: usize,
    room: &str,
    mut ws: Ws,
    keepalive: Option<(&'static str, Duration)>,
) -> bool {
    let shared = &*ctx.shared;
    let mut phase_rx = ctx.phase.clone();
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut plan: Option<Plan> = None;
    let send_timer = tokio::time::sleep_until(far);
    tokio::pin!(send_timer);
    // Spread the first keep-alive over the interval so clients do not ping in step.
    let ka_timer = tokio::time::sleep_until(match keepalive {
        Some((_, every)) => Instant::now() + every.mul_f64(0.5 + 0.5 * offset_fraction(id)),
        None => far,
    });
    tokio::pin!(ka_timer);
    // A phase that was set before this client was ready still applies.
    let initial = *phase_rx.borrow_and_update();
    if initial == Phase::Close {
        close(&mut ws).await;
        return true;
    }

    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    match ctx.protocol.classify(t.as_str()) {
                        Incoming::Relay { sent_us, step } => {
                            if let Some(c) = shared.step(step) {
                                c.received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                c.latency.record(shared.now_us().saturating_sub(sent_us));
                            }
                        }
                        Incoming::EioPing => {
                            if ws.send(Message::text("3")).await.is_err() {
                                shared.event("send failed (eio pong)");
                                return false;
                            }
                        }
                        Incoming::Bye => shared.event("bye (peer gone)"),
                        Incoming::Full => shared.event("full"),
                        Incoming::Error(code) => shared.event(&format!("server error {code}")),
                        Incoming::Closed => {
                            shared.event("server ended the session (protocol close)");
                            return false;
                        }
                        Incoming::Joined
                        | Incoming::OtherJoined
                        | Incoming::Pong
                        | Incoming::EioOpen { .. }
                        | Incoming::SioConnect
                        | Incoming::Other => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let what = match frame {
                        Some(f) => format!("closed by server, code {} {}", u16::from(f.code), f.reason.as_str()),
                        None => "closed by server, no code".to_owned(),
                    };
                    shared.event(what.trim_end());
                    return false;
                }
                Some(Ok(Message::Binary(_))) => shared.event("unexpected binary frame"),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    shared.event(&format!("read error: {}", short_error(&anyhow!(e))));
                    return false;
                }
                None => {
                    shared.event("connection ended without close frame");
                    return false;
                }
            },

            () = &mut send_timer, if plan.is_some() => {
                let Some(p) = plan.as_mut() else { continue };
                let late = Instant::now().saturating_duration_since(p.due());
                let frame = ctx.protocol.relay_frame(room, shared.now_us(), p.step, &ctx.pad);
                if let Err(e) = ws.send(Message::text(frame)).await {
                    shared.event(&format!("send failed: {}", short_error(&anyhow!(e))));
                    return false;
                }
                if let Some(c) = shared.step(p.step) {
                    c.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    c.lag.record(late.as_micros() as u64);
                }
                p.k += 1;
                let next = p.due();
                if next >= p.end {
                    plan = None;
                    send_timer.as_mut().reset(far);
                } else {
                    send_timer.as_mut().reset(next);
                }
            }

            () = &mut ka_timer, if keepalive.is_some() => {
                if let Some((frame, every)) = keepalive {
                    if ws.send(Message::text(frame)).await.is_err() {
                        shared.event("send failed (keep-alive)");
                        return false;
                    }
                    ka_timer.as_mut().reset(Instant::now() + every);
                }
            }

            changed = phase_rx.changed() => {
                if changed.is_err() {
                    // The engine is gone: stop.
                    close(&mut ws).await;
                    return true;
                }
                let phase = *phase_rx.borrow_and_update();
                match phase {
                    Phase::Idle => {
                        plan = None;
                        send_timer.as_mut().reset(far);
                    }
                    Phase::Relay { step, start, end, period } => {
                        let peer = id ^ 1;
                        if shared.status_of(peer) == status::JOINED && !period.is_zero() {
                            let p = Plan { step, start, end, period, frac: offset_fraction(id), k: 0 };
                            if p.due() < end {
                                send_timer.as_mut().reset(p.due());
                                plan = Some(p);
                            } else {
                                plan = None;
                                send_timer.as_mut().reset(far);
                            }
                        }
                    }
                    Phase::Close => {
                        close(&mut ws).await;
                        return true;
                    }
                }
            }
        }
    }
}

/// Send a close frame and wait (bounded) for the server's reply.
pub async fn close(ws: &mut Ws) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if ws.close(None).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_members_half_a_period_apart() {
        for p in 0..100usize {
            let a = offset_fraction(2 * p);
            let b = offset_fraction(2 * p + 1);
            assert!((0.0..1.0).contains(&a) && (0.0..1.0).contains(&b));
            let d = (a - b).abs();
            assert!((d - 0.5).abs() < 1e-9, "{a} {b}");
        }
    }
}
