//! One signaling WebSocket connection: its single task reads frames into the
//! hub, writes what the hub queued for it, and pings it when it falls silent.
//!
//! Priority inside the loop (a `biased` select): shutdown and draining first, then
//! outbound messages (so a busy reader cannot starve its own answers), then
//! incoming frames, then the ping timer. Every write has a deadline, so a peer
//! that stops reading cannot hold the task forever.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use duet_signaling::{CloseCode, ConnectionId, Disconnect};
use futures_util::SinkExt;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

use crate::limits::Permit;
use crate::outbox::Outbound;
use crate::signaling::{Route, Signaling};

/// Longest a single write may take before the connection is given up.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// How the read side ended.
enum Ending {
    /// The peer is gone (or was told to go); nothing more to write.
    Done,
    /// Write this close frame, then stop.
    Close(u16, &'static str),
}

/// Runs the connection until it ends. `permit` is its slot in the connection caps.
///
/// A plain function returning an `async move` block rather than an `async fn`:
/// an `async fn` keeps its arguments and then the locals they are moved into,
/// both in the task every idle connection holds (the WebSocket alone is ~370
/// bytes); the block uses what it captured in place.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice"
)]
pub fn run(
    mut socket: WebSocket,
    signaling: Arc<Signaling>,
    permit: Permit,
    ice_servers: Option<Arc<[duet_signaling::IceServer]>>,
    mut shutdown: watch::Receiver<bool>,
    mut draining: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send {
    async move {
        let (connection, mut outbound) = signaling.connect_with(ice_servers);
        let ping_after = ping_after(signaling.silence_timeout());
        // When the client was last heard from; the ping timer is moved to
        // `heard + ping_after` when it fires, not on every frame.
        let mut heard = Instant::now();
        let ping = tokio::time::sleep_until(on_the_beat(heard + ping_after, ping_after));
        tokio::pin!(ping);

        let ending = loop {
            tokio::select! {
                biased;
                // On shutdown every connection closes with 1001 and nobody is told
                // `bye`: the other member did not leave, the server did.
                _ = shutdown.changed() => {
                    break Ending::Close(CloseCode::GoingAway.number(), "server shutting down");
                }
                // Draining (SIGTERM): the client is told to come back with its
                // resume token; its seat waits as for a lost connection, so nobody
                // is told `bye`.
                () = crate::front::stopping(&mut draining) => {
                    signaling.disconnect(connection, Disconnect::Lost);
                    break Ending::Close(CloseCode::Restarting.number(), "server restarting; reconnect");
                }
                next = outbound.recv() => match next {
                    Some(Outbound::Text(text)) => {
                        if !write(&mut socket, Message::Text(text)).await {
                            signaling.disconnect(connection, Disconnect::Lost);
                            break Ending::Done;
                        }
                    }
                    Some(Outbound::Close(code, reason)) => break Ending::Close(code, reason),
                    None => break Ending::Close(CloseCode::SlowReader.number(), "reading too slowly"),
                },
                frame = socket.recv() => match on_frame(&signaling, connection, frame, &mut heard) {
                    Next::Read => {}
                    // A `join` of a room another node may hold (a cluster): the
                    // next frame waits until it is passed on.
                    Next::Route(route) => Box::pin(signaling.route(connection, route)).await,
                    Next::End(ending) => break ending,
                },
                () = &mut ping => {
                    let now = Instant::now();
                    let due = heard + ping_after;
                    if now < due {
                        // Heard from since the timer was set: no ping needed yet.
                        ping.as_mut().reset(on_the_beat(due, ping_after));
                        continue;
                    }
                    if !write(&mut socket, Message::Ping(Default::default())).await {
                        signaling.disconnect(connection, Disconnect::Lost);
                        break Ending::Done;
                    }
                    ping.as_mut().reset(on_the_beat(now + ping_after, ping_after));
                }
            }
        };
        if let Ending::Close(code, reason) = ending {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = write(&mut socket, Message::Close(Some(frame))).await;
        }
        let _ = timeout(Duration::from_secs(1), socket.close()).await;
        drop(permit);
    }
}

/// What to do after a read.
enum Next {
    Read,
    Route(Route),
    End(Ending),
}

/// Feeds one read result to the hub; any frame read is a sign of life.
fn on_frame(
    signaling: &Signaling,
    connection: ConnectionId,
    frame: Option<Result<Message, axum::Error>>,
    heard: &mut Instant,
) -> Next {
    if matches!(frame, Some(Ok(_))) {
        *heard = Instant::now();
    }
    Next::End(match frame {
        Some(Ok(Message::Text(text))) => {
            return match signaling.text(connection, text.as_str()) {
                Some(route) => Next::Route(route),
                None => Next::Read,
            };
        }
        Some(Ok(Message::Binary(_))) => {
            signaling.binary(connection);
            return Next::Read;
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
            signaling.activity(connection);
            return Next::Read;
        }
        Some(Ok(Message::Close(frame))) => {
            let reconnecting =
                frame.is_some_and(|frame| frame.code == CloseCode::CLIENT_RECONNECTING);
            let how = if reconnecting {
                Disconnect::Lost
            } else {
                Disconnect::Closed
            };
            signaling.disconnect(connection, how);
            Ending::Done
        }
        Some(Err(error)) => {
            let (how, ending) = classify(error);
            signaling.disconnect(connection, how);
            ending
        }
        None => {
            signaling.disconnect(connection, Disconnect::Lost);
            Ending::Done
        }
    })
}

/// A read error: a broken network keeps the seat for a resume; a broken rule does not.
fn classify(error: axum::Error) -> (Disconnect, Ending) {
    use tungstenite::error::{Error, ProtocolError};
    let inner = error.into_inner();
    match inner.downcast_ref::<Error>() {
        Some(Error::Capacity(_)) => (
            Disconnect::Closed,
            Ending::Close(
                CloseCode::MessageTooBig.number(),
                "frame larger than 64 KiB",
            ),
        ),
        Some(Error::Utf8(_)) => (Disconnect::Closed, Ending::Close(1007, "invalid UTF-8")),
        Some(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake))
        | Some(Error::Io(_))
        | Some(Error::ConnectionClosed)
        | Some(Error::AlreadyClosed)
        | None => (Disconnect::Lost, Ending::Done),
        Some(Error::Protocol(_)) => (Disconnect::Closed, Ending::Close(1002, "protocol error")),
        Some(_) => (Disconnect::Lost, Ending::Done),
    }
}

/// How long a connection may stay silent before the server pings it: two
/// fifths of the silence timeout (18 s of the default 45 s), so a client that
/// misses one ping still has a second before it is closed, and a proxy with a
/// 60 s idle timeout always sees traffic. A client that speaks on its own (the
/// web client pings every 5 s while seated) is never pinged: its own frames
/// prove it alive and keep proxies awake, and each server ping would cost a
/// timer, a TLS record and two syscalls per connection.
fn ping_after(silence_timeout: Duration) -> Duration {
    (silence_timeout * 2 / 5).max(Duration::from_millis(500))
}

/// `at`, put off to the next beat shared by every connection's ping timer (a
/// quarter of `ping_after`, at most a second): the runtime then wakes for a
/// batch of pings once a second instead of for each one (with 20,000 idle
/// connections, a wake-up, a park and their context switches per ping cost as
/// much as the pings).
fn on_the_beat(at: Instant, ping_after: Duration) -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    let since = at.saturating_duration_since(start);
    let beat = (ping_after / 4).clamp(Duration::from_millis(1), Duration::from_secs(1));
    let beat = beat.as_nanos();
    let beats = since.as_nanos().div_ceil(beat);
    let offset = u64::try_from(beats.saturating_mul(beat)).unwrap_or(u64::MAX);
    start + Duration::from_nanos(offset)
}

/// Writes one message within the deadline. False: the connection is unusable.
async fn write(socket: &mut WebSocket, message: Message) -> bool {
    matches!(
        timeout(WRITE_DEADLINE, socket.send(message)).await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_client_is_pinged_twice_before_the_silence_timeout() {
        let silence = Duration::from_secs(45);
        assert_eq!(ping_after(silence), Duration::from_secs(18));
        assert!(ping_after(silence) * 2 < silence);
        // Under a 60 s proxy idle timeout, with the default.
        assert!(ping_after(silence) < Duration::from_secs(60));
        // The smallest silence timeout (2 s) still pings, but not in a loop.
        assert_eq!(
            ping_after(Duration::from_secs(2)),
            Duration::from_millis(800)
        );
        assert_eq!(ping_after(Duration::ZERO), Duration::from_millis(500));
    }

    #[test]
    fn ping_timers_share_a_beat_and_never_fire_early() {
        let ping_after = Duration::from_secs(18);
        let now = Instant::now();
        for offset_ms in [0, 1, 250, 999, 1000, 1001, 17_999] {
            let at = now + Duration::from_millis(offset_ms);
            let beat = on_the_beat(at, ping_after);
            assert!(beat >= at, "{offset_ms} ms fired early");
            assert!(
                beat - at <= Duration::from_secs(1),
                "{offset_ms} ms put off too long"
            );
        }
        // Timers due within one beat fire together.
        let a = on_the_beat(now + Duration::from_millis(10_100), ping_after);
        let b = on_the_beat(now + Duration::from_millis(10_200), ping_after);
        let c = on_the_beat(now + Duration::from_millis(10_300), ping_after);
        assert!(a == b || b == c, "three timers 100 ms apart on three beats");
        // A short silence timeout gets a short beat: a 2 s timeout pings after
        // 0.8 s, at most 0.2 s late.
        let short = Duration::from_millis(800);
        let at = now + short;
        assert!(on_the_beat(at, short) - at <= Duration::from_millis(200));
    }
}
