//! The embedded STUN/TURN relay's IO: the UDP and TCP listeners, one UDP
//! socket per relay allocation, and the timer, all around one sans-IO
//! [`duet_turn::Server`].
//!
//! How a packet travels (client → peer): the listener task receives a
//! datagram into its one reusable buffer, locks the core, which finds the
//! allocation by 5-tuple and returns the payload's range and the relay port;
//! the task sends that slice from the relay socket. Peer → client: the relay
//! socket's task, once the socket is readable, receives into its worker
//! thread's buffer at `HEADROOM` (up to a batch of datagrams), the core writes the
//! ChannelData or Data-indication header in front of the payload in place,
//! and the task sends the framed slice from the listener socket. No
//! allocation happens per packet on UDP; TCP clients get a copy per message.
//!
//! Sends never block: UDP uses `try_send_to` (a full socket buffer drops the
//! datagram, as the network would), stream clients (TCP, TLS) have queues
//! bounded in bytes (see [`crate::turn_stream`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use duet_signaling::IceServer;
use duet_turn::datapath::{HEADROOM, TAILROOM};
use duet_turn::{Command, FiveTuple, Server, Transport};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::TurnSettings;
use crate::limits::{ConnectionLimits, Refusal};
use crate::turn_stream::{self, StreamWriter};

/// Largest datagram relayed; larger ones are cut by the socket and dropped.
const DATAGRAM_MAX: usize = 16 * 1024;

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    pub udp_addr: SocketAddr,
    pub tcp_addr: SocketAddr,
    shared: Arc<Shared>,
    secret: String,
    settings: TurnSettings,
    /// The stream ports advertised next to the relay's own UDP port.
    pub streams: StreamPorts,
}

/// Where else clients reach the relay, over TCP and TLS: the HTTPS port.
#[derive(Debug, Clone, Default)]
pub struct StreamPorts {
    /// The HTTPS port, which also serves TURN over TCP and TLS.
    pub https: Option<u16>,
    /// True while browsers trust the HTTPS certificate, so `turns:` may be
    /// offered (it turns true when an ACME certificate arrives).
    pub tls_trusted: Arc<AtomicBool>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    udp: Arc<UdpSocket>,
    bind_ip: IpAddr,
    /// Where IPv6 relay sockets bind, when IPv6 relays are on.
    bind_ip_v6: Option<IpAddr>,
    wake: tokio::sync::Notify,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Caps on stream (TCP and TLS) client connections, in all and per address.
    pub(crate) stream_limits: Arc<ConnectionLimits>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) core: Server,
    /// When the timer task will wake next.
    timer_at: Option<Instant>,
    relays: HashMap<u16, RelaySocket>,
    /// Stream (TCP and TLS) clients by five-tuple: their outgoing queues.
    pub(crate) stream_clients: HashMap<FiveTuple, StreamWriter>,
}

#[derive(Debug)]
struct RelaySocket {
    socket: Arc<UdpSocket>,
    task: tokio::task::AbortHandle,
}

impl Relay {
    /// Binds the listeners and spawns the relay's tasks into `tasks`.
    pub async fn start(
        settings: TurnSettings,
        data_dir: &Path,
        shutdown: watch::Receiver<bool>,
        tasks: &mut JoinSet<anyhow::Result<()>>,
    ) -> anyhow::Result<Self> {
        let (udp, tcp) = bind_listeners(settings.listen).await?;
        let udp_addr = udp.local_addr()?;
        let tcp_addr = tcp.local_addr()?;
        enlarge_buffers(&udp);
        let secret = match &settings.secret {
            Some(secret) => secret.clone(),
            None => load_or_make_secret(data_dir)?,
        };
        let bind_ip = settings.listen.ip();
        let advertised = settings
            .external_ip
            .unwrap_or_else(|| concrete_address(bind_ip));
        let mut config = duet_turn::Config::new(&settings.realm, advertised);
        // IPv6 relays: on the given address, else on the host's global IPv6
        // address if it has one (REQUESTED-ADDRESS-FAMILY IPv6 gets 440 otherwise).
        let relay_v6 = settings
            .relay_ipv6
            .or_else(global_ipv6)
            .filter(IpAddr::is_ipv6);
        config.relay_address_v6 = relay_v6;
        config.credentials.shared_secret = Some(secret.clone());
        config.credentials.users = settings.users.iter().cloned().collect();
        config.relay_ports = settings.relay_ports.clone();
        config.peer_policy.allowed = settings.allow_peers.clone();
        config.peer_policy.server_addresses = own_addresses(bind_ip, settings.external_ip);
        let external_ip = settings.external_ip;
        config.max_allocations = settings.max_allocations;
        config.max_allocations_per_user = settings.user_quota;
        config.bandwidth_per_allocation = settings.bandwidth;
        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        let core = Server::new(config, rand::random(), now, unix);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                core,
                timer_at: None,
                relays: HashMap::new(),
                stream_clients: HashMap::new(),
            }),
            udp: Arc::new(udp),
            bind_ip,
            bind_ip_v6: relay_v6,
            wake: tokio::sync::Notify::new(),
            shutdown,
            stream_limits: ConnectionLimits::new(
                turn_stream::MAX_STREAMS,
                turn_stream::MAX_STREAMS_PER_ADDRESS,
            ),
        });
        tasks.spawn(run_udp(Arc::clone(&shared), udp_addr));
        tasks.spawn(run_tcp(Arc::clone(&shared), tcp, tcp_addr));
        tasks.spawn(run_timers(Arc::clone(&shared)));
        tasks.spawn(run_own_addresses(Arc::clone(&shared), external_ip));
        Ok(Self {
            udp_addr,
            tcp_addr,
            shared,
            secret,
            settings,
            streams: StreamPorts::default(),
        })
    }

    /// The `iceServers` for one signaling session, with REST credentials made
    /// for this session only. A browser makes one allocation per TURN URL, so
    /// the list is short and each URL opens a way the others do not:
    /// - `stun:HOST:3478` and `turn:HOST:3478?transport=udp`, the fast path;
    /// - `turn:HOST:443?transport=tcp` (the HTTPS port), for networks without
    ///   UDP; it replaces TCP on 3478, which any network that allows the page's
    ///   port does not need;
    /// - `turns:HOST:443?transport=tcp` when the certificate is trusted, for
    ///   networks that let only TLS out (Chromium refuses it with a
    ///   self-signed certificate, so it is left out then).
    ///
    /// Without an HTTPS port (`streams.https` unset) TCP goes to the relay's own port.
    pub fn ice_servers(&self, host: &str, session: &str) -> Vec<IceServer> {
        let host = self.settings.public_host.as_deref().unwrap_or(host);
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let port = self.udp_addr.port();
        let mut turn_urls = vec![format!("turn:{host}:{port}?transport=udp")];
        match self.streams.https {
            Some(https) => {
                turn_urls.push(format!("turn:{host}:{https}?transport=tcp"));
                if self.streams.tls_trusted.load(Ordering::Relaxed) {
                    turn_urls.push(format!("turns:{host}:{https}?transport=tcp"));
                }
            }
            None => turn_urls.push(format!("turn:{host}:{port}?transport=tcp")),
        }
        let stun = format!("stun:{host}:{port}");
        let ttl = self.settings.credential_ttl;
        session_ice_servers(stun, turn_urls, &self.secret, session, ttl)
    }

    /// The host name configured for clients, if any (public host, else external IP).
    pub fn configured_host(&self) -> Option<String> {
        self.settings
            .public_host
            .clone()
            .or_else(|| self.settings.external_ip.map(|ip| ip.to_string()))
    }

    pub fn stats(&self) -> duet_turn::Stats {
        self.shared.lock().core.stats()
    }

    /// New allocations are refused from now on; the existing ones go on (draining).
    pub fn stop_allocating(&self) {
        self.shared.lock().core.stop_allocating();
    }

    /// Stream (TCP and TLS) client connections open now.
    pub fn stream_connections(&self) -> usize {
        self.shared.stream_limits.total()
    }

    /// Takes over a TURN client that reached another listener over a byte
    /// stream (TCP or TLS on the HTTPS port). `already_read` is what the
    /// listener read to recognize it; `local` is the address it connected to.
    pub fn accept_stream<S>(
        &self,
        stream: S,
        already_read: Vec<u8>,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Result<(), Refusal>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let from = turn_stream::five_tuple(client, local);
        turn_stream::accept(&self.shared, stream, already_read, from)
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Carries out every queued command of the core.
    fn run_commands(self: &Arc<Self>, inner: &mut Inner) {
        while let Some(command) = inner.core.poll_command() {
            match command {
                Command::SendToClient { to, bytes } => {
                    tracing::debug!(client = %to.client, transport = ?to.transport, len = bytes.len(), "TURN answer");
                    send_to_client(&self.udp, inner, to, &bytes);
                }
                Command::OpenRelay { port, ipv6 } => {
                    let opened = self.open_relay(inner, port, ipv6);
                    inner.core.handle_relay_opened(port, opened, Instant::now());
                }
                Command::CloseRelay { port } => {
                    if let Some(relay) = inner.relays.remove(&port) {
                        relay.task.abort();
                    }
                }
            }
        }
        // Wake the timer task only when a deadline earlier than its own appeared.
        if let Some(next) = inner.core.poll_timeout()
            && inner.timer_at.is_none_or(|planned| next < planned)
        {
            inner.timer_at = Some(next);
            self.wake.notify_one();
        }
    }

    fn open_relay(self: &Arc<Self>, inner: &mut Inner, port: u16, ipv6: bool) -> bool {
        let ip = match (ipv6, self.bind_ip_v6) {
            (true, Some(v6)) => v6,
            (true, None) => return false,
            (false, _) => self.bind_ip,
        };
        let socket = match bind_relay_socket(SocketAddr::new(ip, port)) {
            Ok(socket) => socket,
            Err(error) => {
                tracing::debug!(port, %error, "relay port unavailable");
                return false;
            }
        };
        enlarge_buffers(&socket);
        let socket = match socket
            .set_nonblocking(true)
            .and_then(|()| UdpSocket::from_std(socket))
        {
            Ok(socket) => Arc::new(socket),
            Err(_) => return false,
        };
        let task =
            tokio::spawn(run_relay(Arc::clone(self), Arc::clone(&socket), port)).abort_handle();
        inner.relays.insert(port, RelaySocket { socket, task });
        true
    }
}

/// Runs one input against the core under the lock, then carries out its commands.
pub(crate) fn with_shared<T>(shared: &Arc<Shared>, f: impl FnOnce(&mut Inner) -> T) -> T {
    let mut inner = shared.lock();
    let result = f(&mut inner);
    shared.run_commands(&mut inner);
    result
}

fn send_to_client(udp: &UdpSocket, inner: &Inner, to: FiveTuple, bytes: &[u8]) {
    match to.transport {
        Transport::Udp => {
            let _ = udp.try_send_to(bytes, to.client);
        }
        Transport::Tcp => inner.write_to_stream(&to, bytes),
    }
}

impl Inner {
    /// Queues `bytes` for a stream (TCP or TLS) client; its task writes them.
    /// The one way anything reaches a stream client.
    fn write_to_stream(&self, to: &FiveTuple, bytes: &[u8]) {
        if let Some(writer) = self.stream_clients.get(to) {
            writer.send(bytes);
        }
    }
}

/// The UDP listener: STUN, TURN control and ChannelData from clients.
async fn run_udp(shared: Arc<Shared>, local: SocketAddr) -> anyhow::Result<()> {
    let mut buffer = vec![0u8; DATAGRAM_MAX];
    let mut scratch = vec![0u8; HEADROOM + DATAGRAM_MAX + TAILROOM];
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            ready = shared.udp.readable() => if ready.is_err() { continue },
            _ = shutdown.changed() => return Ok(()),
        }
        // What is waiting, up to a batch: one wake-up for many datagrams under load.
        for _ in 0..RELAY_BATCH {
            let (len, client) = match shared.udp.try_recv_from(&mut buffer) {
                Ok(received) => received,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors surface as recv errors on some systems; keep serving.
                Err(_) => continue,
            };
            let Some(packet) = buffer.get(..len) else {
                continue;
            };
            let from = FiveTuple {
                transport: Transport::Udp,
                client,
                server: local,
            };
            tracing::trace!(%client, len, "TURN datagram from client");
            relay_client_message(&shared, from, packet, &mut scratch);
        }
    }
}

/// Relays one client message: to a peer through the allocation's relay
/// socket, or, when the peer is another allocation of this relay, straight
/// into that allocation (no kernel round trip, and nothing else on this host
/// is reachable that way).
pub(crate) fn relay_client_message(
    shared: &Arc<Shared>,
    from: FiveTuple,
    packet: &[u8],
    scratch: &mut [u8],
) {
    let now = Instant::now();
    let outcome = with_shared(shared, |inner| {
        let forward = inner.core.handle_client(from, packet, now)?;
        tracing::trace!(client = %from.client, peer = %forward.peer, internal = inner.core.is_relay(forward.peer), "TURN forward");
        if !inner.core.is_relay(forward.peer) {
            let socket = Arc::clone(&inner.relays.get(&forward.relay_port)?.socket);
            return Some(Outcome::ToPeer(socket, forward));
        }
        let payload = packet.get(forward.payload.clone())?;
        scratch
            .get_mut(HEADROOM..HEADROOM + payload.len())?
            .copy_from_slice(payload);
        let source = SocketAddr::new(
            inner
                .core
                .relay_ip_of_port(forward.relay_port)
                .unwrap_or_else(|| inner.core.relay_address()),
            forward.relay_port,
        );
        let delivery =
            inner
                .core
                .handle_peer(forward.peer.port(), source, scratch, payload.len(), now);
        tracing::trace!(delivered = ?delivery, "TURN internal delivery");
        let delivery = delivery?;
        match delivery.to.transport {
            Transport::Udp => Some(Outcome::ToClient(delivery)),
            Transport::Tcp => {
                inner.write_to_stream(&delivery.to, scratch.get(delivery.bytes)?);
                None
            }
        }
    });
    match outcome {
        Some(Outcome::ToPeer(socket, forward)) => {
            if let Some(payload) = packet.get(forward.payload) {
                let _ = socket.try_send_to(payload, forward.peer);
            }
        }
        Some(Outcome::ToClient(delivery)) => {
            if let Some(bytes) = scratch.get(delivery.bytes) {
                let _ = shared.udp.try_send_to(bytes, delivery.to.client);
            }
        }
        None => {}
    }
}

/// Where a client's message goes, decided under the lock and carried out after it.
enum Outcome {
    ToPeer(Arc<UdpSocket>, duet_turn::Forward),
    ToClient(duet_turn::Delivery),
}

/// Datagrams a relay task handles in a row before it lets other tasks run.
const RELAY_BATCH: usize = 64;

thread_local! {
    /// The buffer relay tasks of this worker thread receive into. A datagram
    /// is received, framed and sent without an `.await` in between, so one
    /// buffer per thread serves every relay socket; an idle allocation holds
    /// no buffer of its own (16 KiB each, before).
    static RELAY_BUFFER: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0u8; HEADROOM + DATAGRAM_MAX + TAILROOM]);
}

/// One relay socket: datagrams from peers, framed in place for the client.
async fn run_relay(shared: Arc<Shared>, socket: Arc<UdpSocket>, port: u16) {
    // Ends with its allocation (aborted) or with the server, whichever comes first.
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            ready = socket.readable() => if ready.is_err() { continue },
            _ = shutdown.changed() => return,
        }
        // What is waiting, up to a batch, each datagram on this thread's buffer.
        for _ in 0..RELAY_BATCH {
            let more =
                RELAY_BUFFER.with_borrow_mut(|buffer| relay_one(&shared, &socket, port, buffer));
            if !more {
                break;
            }
        }
    }
}

/// Receives one datagram from a peer and sends it on, framed, to the client.
/// False once the socket has nothing more to read.
fn relay_one(shared: &Shared, socket: &UdpSocket, port: u16, buffer: &mut [u8]) -> bool {
    let Some(window) = buffer.get_mut(HEADROOM..HEADROOM + DATAGRAM_MAX) else {
        return false;
    };
    let (len, peer) = match socket.try_recv_from(window) {
        Ok(received) => received,
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return false,
        // An ICMP error reported on the socket and the like: the next one may be fine.
        Err(_) => return true,
    };
    let mut inner = shared.lock();
    let Some(delivery) = inner
        .core
        .handle_peer(port, peer, buffer, len, Instant::now())
    else {
        return true;
    };
    let Some(bytes) = buffer.get(delivery.bytes) else {
        return true;
    };
    match delivery.to.transport {
        Transport::Udp => {
            drop(inner);
            let _ = shared.udp.try_send_to(bytes, delivery.to.client);
        }
        Transport::Tcp => inner.write_to_stream(&delivery.to, bytes),
    }
    true
}

/// The TCP listener: each client connection is served by [`turn_stream`].
async fn run_tcp(
    shared: Arc<Shared>,
    listener: TcpListener,
    local: SocketAddr,
) -> anyhow::Result<()> {
    let mut shutdown = shared.shutdown.clone();
    while let Some((stream, client)) = crate::front::accept(&listener, &mut shutdown).await {
        let from = turn_stream::five_tuple(client, local);
        if let Err(refusal) = turn_stream::accept(&shared, stream, Vec::new(), from) {
            tracing::debug!(%client, ?refusal, "TURN TCP connection refused");
        }
    }
    Ok(())
}

/// Fires the core's deadlines (allocation expiry).
async fn run_timers(shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let next = {
            let mut inner = shared.lock();
            let next = inner
                .core
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
            inner.timer_at = Some(next);
            next
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {
                with_shared(&shared, |inner| inner.core.handle_timeout(Instant::now()));
            }
            _ = shared.wake.notified() => {}
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// Bytes of socket buffer asked for on every relay socket: a video keyframe
/// burst from many clients overflows the default (about 208 KiB) and is lost
/// in the kernel. The kernel caps the request at `net.core.rmem_max`/`wmem_max`.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

fn enlarge_buffers(socket: impl std::os::fd::AsFd) {
    let socket = socket2::SockRef::from(&socket);
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
}

/// Tries for a port that is free for both UDP and TCP when the port is 0.
const FREE_PORT_ATTEMPTS: usize = 20;

/// The UDP and TCP listeners, on one port. With port 0 the kernel picks the
/// UDP port, and that number may be taken for TCP: then another is tried.
async fn bind_listeners(listen: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let attempts = if listen.port() == 0 {
        FREE_PORT_ATTEMPTS
    } else {
        1
    };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|error| bind_error(listen, "UDP", error))?;
        let tcp_target = SocketAddr::new(listen.ip(), udp.local_addr()?.port());
        match TcpListener::bind(tcp_target).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) => last_error = Some(bind_error(tcp_target, "TCP", error)),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("cannot listen for TURN on {listen}")))
}

fn bind_error(address: SocketAddr, protocol: &str, error: std::io::Error) -> anyhow::Error {
    let why = match error.kind() {
        std::io::ErrorKind::AddrInUse => "the address is already in use".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => error.to_string(),
    };
    anyhow::anyhow!("cannot listen for TURN on {address} ({protocol}): {why}")
}

/// One session's `iceServers`: a STUN entry, and TURN `turn_urls` with
/// credentials for `session` made with `secret` (the TURN REST scheme), valid `ttl`.
pub fn session_ice_servers(
    stun: String,
    turn_urls: Vec<String>,
    secret: &str,
    session: &str,
    ttl: std::time::Duration,
) -> Vec<IceServer> {
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
        + ttl.as_secs();
    let (username, credential) = duet_turn::rest_credentials(secret, session, expiry);
    vec![
        IceServer {
            urls: vec![stun],
            username: None,
            credential: None,
        },
        IceServer {
            urls: turn_urls,
            username: Some(username),
            credential: Some(credential),
        },
    ]
}

/// The TURN REST secret kept in the data directory, made on first run.
fn load_or_make_secret(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("turn-secret");
    if let Ok(secret) = std::fs::read_to_string(&path) {
        let secret = secret.trim().to_owned();
        if !secret.is_empty() {
            return Ok(secret);
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    crate::tls::write_private(&path, secret.as_bytes())?;
    Ok(secret)
}

/// An address to advertise when the listener is bound to the unspecified
/// address: the one the routing table would use to reach the internet, found
/// without sending anything (a UDP `connect` only selects a route), else loopback.
fn concrete_address(bind: IpAddr) -> IpAddr {
    if !bind.is_unspecified() {
        return bind;
    }
    let probe = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|socket| {
            socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            socket.local_addr()
        })
        .map(|address| address.ip());
    match probe {
        Ok(address) if !address.is_unspecified() => address,
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

/// A relay socket on `address`. An IPv6 one takes IPv6 only: its peers are
/// IPv6 (RFC 8656 §7.2), and IPv4 datagrams must not reach it as mapped addresses.
fn bind_relay_socket(address: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&address.into())?;
    Ok(socket.into())
}

/// This host's global IPv6 address, if it has one: the source address of a
/// route towards the IPv6 internet (no packet is sent).
fn global_ipv6() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0)).ok()?;
    socket
        .connect((std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9))
        .ok()?;
    let address = socket.local_addr().ok()?.ip();
    let IpAddr::V6(v6) = address else {
        return None;
    };
    let [first, ..] = v6.segments();
    let global = !v6.is_unspecified()
        && !v6.is_loopback()
        && first & 0xffc0 != 0xfe80
        && first & 0xfe00 != 0xfc00;
    global.then_some(address)
}

/// Every address of this host: each interface's (loopback included), the
/// address it reaches the internet from, the bind address and `--external-ip`.
/// The relay refuses them all as peers, both ways, except its own relay ports.
fn own_addresses(bind: IpAddr, external: Option<IpAddr>) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|interfaces| {
            interfaces
                .into_iter()
                .map(|interface| interface.ip())
                .collect()
        })
        .unwrap_or_default();
    addresses.push(concrete_address(bind));
    if !bind.is_unspecified() {
        addresses.push(bind);
    }
    addresses.extend(external);
    addresses.sort();
    addresses.dedup();
    addresses
}

/// How often the host's addresses are read again (an interface that comes up,
/// a DHCP renewal, a new IPv6 address).
pub const OWN_ADDRESSES_EVERY: Duration = Duration::from_secs(10);

/// Keeps the core's set of this host's addresses current.
async fn run_own_addresses(shared: Arc<Shared>, external: Option<IpAddr>) -> anyhow::Result<()> {
    let mut shutdown = shared.shutdown.clone();
    let mut known = own_addresses(shared.bind_ip, external);
    loop {
        tokio::select! {
            () = tokio::time::sleep(OWN_ADDRESSES_EVERY) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        let now = tokio::task::spawn_blocking({
            let bind = shared.bind_ip;
            move || own_addresses(bind, external)
        })
        .await
        .unwrap_or_else(|_| known.clone());
        if now != known {
            tracing::info!(addresses = ?now, "this host's addresses changed; the relay refuses the new set as peers");
            shared.lock().core.set_own_addresses(now.clone());
            known = now;
        }
    }
}
