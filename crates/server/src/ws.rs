//! One signaling WebSocket connection: its single task reads frames into the
//! hub, writes what the hub queued for it, and pings it.
//!
//! Priority inside the loop (a `biased` select): shutdown and draining first, then
//! outbound messages (so a busy reader cannot starve its own answers), then
//! incoming frames, then the ping timer. Every write has a deadline, so a peer
//! that stops reading cannot hold the task forever.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use duet_signaling::{CloseCode, ConnectionId, Disconnect};
use futures_util::SinkExt;
use tokio::sync::watch;
use tokio::time::{MissedTickBehavior, timeout};

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
        let ping_every = (signaling.silence_timeout() / 3).max(Duration::from_millis(500));
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);

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
                frame = socket.recv() => match on_frame(&signaling, connection, frame) {
                    Next::Read => {}
                    // A `join` of a room another node may hold (a cluster): the
                    // next frame waits until it is passed on.
                    Next::Route(route) => Box::pin(signaling.route(connection, route)).await,
                    Next::End(ending) => break ending,
                },
                _ = ping.tick() => {
                    if !write(&mut socket, Message::Ping(Default::default())).await {
                        signaling.disconnect(connection, Disconnect::Lost);
                        break Ending::Done;
                    }
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

/// Feeds one read result to the hub.
fn on_frame(
    signaling: &Signaling,
    connection: ConnectionId,
    frame: Option<Result<Message, axum::Error>>,
) -> Next {
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

/// Writes one message within the deadline. False: the connection is unusable.
async fn write(socket: &mut WebSocket, message: Message) -> bool {
    matches!(
        timeout(WRITE_DEADLINE, socket.send(message)).await,
        Ok(Ok(()))
    )
}
