//! The socket.io endpoint, `/socket.io/` on the HTTPS port: Engine.IO 3
//! (socket.io 1.x and 2.x clients) and 4, over WebSocket and long-polling, as
//! `socketioxide` speaks them. Each socket is one hub connection of the
//! socket.io dialect (`duet_signaling::socketio`), with the limits of every
//! signaling connection: the origin check, the connection caps, the rate
//! limits and the outbound queue bound.
//!
//! Owns the glue only: one task per socket writes what the hub queued for it
//! as events and keeps the hub told that the socket lives (Engine.IO's own
//! heartbeat is what proves it, so the hub's silence timeout never fires for
//! a socket Engine.IO still holds).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State as AxumState};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use duet_signaling::socketio::{ERROR_EVENT, Event, events};
use duet_signaling::{CloseCode, ConnectionId, Disconnect};
use serde_json::Value;
use socketioxide::extract::{Event as EventName, SocketRef, TryData};
use socketioxide::{SendError, SocketError, SocketIo};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::app::{AppState, MAX_FRAME_BYTES, Refused, origin_allowed, refuse, session_ice_servers};
use crate::limits::{Permit, Refusal};
use crate::outbox::{Inbox, OUTBOX_MESSAGES, Outbound};
use crate::signaling::Signaling;

/// Where socket.io clients connect (their default path).
pub const PATH: &str = "/socket.io";

/// The endpoint at [`PATH`], behind [`guard`]. (A client library a page
/// loads from under that path is a file of the web directory like any other.)
pub fn routes(state: Arc<AppState>) -> Router {
    let (service, io) = SocketIo::builder()
        .req_path(PATH)
        // socket.io 2's own defaults: a ping every 25 s, 20 s to answer.
        .ping_interval(Duration::from_secs(25))
        .ping_timeout(Duration::from_secs(20))
        .max_payload(MAX_FRAME_BYTES as u64)
        .ws_max_message_size(MAX_FRAME_BYTES)
        .ws_max_frame_size(MAX_FRAME_BYTES)
        .max_buffer_size(OUTBOX_MESSAGES)
        .connect_timeout(Duration::from_secs(10))
        .build_svc();
    let for_sockets = Arc::clone(&state);
    io.ns("/", move |socket: SocketRef| async move {
        on_connect(socket, for_sockets)
    });
    Router::new()
        .route_service(&format!("{PATH}/"), service)
        .route_layer(axum::middleware::from_fn_with_state(state, guard))
}

/// In front of the endpoint: a browser page of a foreign origin is refused
/// (403) like on `/ws`, and while the server drains no new session starts
/// (503), though the sessions it holds go on.
pub async fn guard(
    AxumState(state): AxumState<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    // Polling runs over HTTP/2 too, where the host is in `:authority` (the
    // URI), not in a `Host` header: give the checks below one place to look.
    if !request.headers().contains_key(header::HOST)
        && let Some(host) = request
            .uri()
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
    {
        request.headers_mut().insert(header::HOST, host);
    }
    if !origin_allowed(request.headers(), &state.allowed_origins) {
        return refuse(&state, Refused::Origin);
    }
    let new_session = !request
        .uri()
        .query()
        .is_some_and(|query| query.split('&').any(|pair| pair.starts_with("sid=")));
    if new_session && *state.draining.borrow() {
        return refuse(&state, Refused::Draining);
    }
    next.run(request).await
}

fn on_connect(socket: SocketRef, state: Arc<AppState>) {
    let parts = socket.req_parts();
    let address = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let permit = match address.map(|address| state.limits.try_acquire(address)) {
        Some(Ok(permit)) => permit,
        refused => {
            let why = match refused {
                Some(Err(Refusal::TooManyFromAddress)) => Refused::PerAddress,
                _ => Refused::ServerFull,
            };
            state.metrics.refuse_upgrade(why.reason());
            let _ = socket.emit(ERROR_EVENT, &(why.reason(), why.message()));
            let _ = socket.disconnect();
            return;
        }
    };
    let ice_servers = session_ice_servers(&state, &parts.headers);
    let signaling = Arc::clone(&state.signaling);
    let (connection, inbox) = signaling.connect_socketio(socket.id.to_string(), ice_servers);

    socket.on(events::JOIN, {
        let signaling = Arc::clone(&signaling);
        move |TryData(room): TryData<Value>| async move {
            if let Some(route) = signaling.socketio_event(connection, Event::Join(room.ok())) {
                signaling.route(connection, route).await;
            }
        }
    });
    socket.on(events::LEAVE, {
        let signaling = Arc::clone(&signaling);
        move |TryData(room): TryData<Value>| async move {
            if let Some(route) = signaling.socketio_event(connection, Event::Leave(room.ok())) {
                signaling.route(connection, route).await;
            }
        }
    });
    socket.on(events::MESSAGE, {
        let signaling = Arc::clone(&signaling);
        move |TryData(arguments): TryData<(Value, Value)>| async move {
            if let Some(route) =
                signaling.socketio_event(connection, Event::Message(arguments.ok()))
            {
                signaling.route(connection, route).await;
            }
        }
    });
    socket.on_fallback({
        let signaling = Arc::clone(&signaling);
        move |EventName(name): EventName| async move {
            if let Some(route) = signaling.socketio_event(connection, Event::Other(name)) {
                signaling.route(connection, route).await;
            }
        }
    });
    socket.on_disconnect({
        let signaling = Arc::clone(&signaling);
        move || async move { signaling.disconnect(connection, Disconnect::Closed) }
    });
    tokio::spawn(forward(
        socket.clone(),
        connection,
        inbox,
        permit,
        signaling,
        state.shutdown.clone(),
    ));
}

/// Writes what the hub queued for one socket until either side ends it.
async fn forward(
    socket: SocketRef,
    connection: ConnectionId,
    mut inbox: Inbox,
    _permit: Permit,
    signaling: Arc<Signaling>,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = (signaling.silence_timeout() / 3).max(Duration::from_millis(500));
    let mut alive = tokio::time::interval(every);
    alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            next = inbox.recv() => match next {
                Some(Outbound::Text(text)) => match emit_all(&socket, text.as_str()) {
                    Ok(()) => {}
                    Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                        // A slow reader, as on /ws.
                        signaling.disconnect(connection, Disconnect::Closed);
                        let _ = socket.emit(
                            ERROR_EVENT,
                            &(CloseCode::SlowReader.number(), "reading too slowly"),
                        );
                        break;
                    }
                    Err(_) => break,
                },
                Some(Outbound::Close(code, reason)) => {
                    let _ = socket.emit(ERROR_EVENT, &(code, reason));
                    break;
                }
                None => break,
            },
            _ = alive.tick() => {
                if !socket.connected() {
                    break;
                }
                signaling.activity(connection);
            }
        }
    }
    let _ = socket.disconnect();
}

/// Emits each event of a rendered `[[event, args…], …]` (two arguments, or
/// three for `joined`).
fn emit_all(socket: &SocketRef, text: &str) -> Result<(), SendError> {
    let Ok(events) = serde_json::from_str::<Vec<Vec<Value>>>(text) else {
        return Ok(());
    };
    for event in events {
        let mut parts = event.into_iter();
        let Some(Value::String(name)) = parts.next() else {
            continue;
        };
        let count = parts.len();
        let mut next = || parts.next().unwrap_or(Value::Null);
        if count >= 3 {
            socket.emit(&name, &(next(), next(), next()))?;
        } else {
            socket.emit(&name, &(next(), next()))?;
        }
    }
    Ok(())
}
