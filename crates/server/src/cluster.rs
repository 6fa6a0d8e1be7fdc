//! A cluster of `duet serve` nodes on one Redis (`--redis`): the IO side.
//!
//! Owns the link to Redis: claiming rooms (an atomic script), keeping each
//! held room's record and this node's heartbeat alive with TTLs, carrying
//! messages between nodes over pub/sub (one channel per node), and judging
//! other nodes dead when their heartbeat stays missing. The rules — who
//! holds a room, what a message between nodes means, what a record holds —
//! are in `duet_signaling::cluster` and [`crate::signaling`]; this module
//! only moves bytes and keeps time.
//!
//! In Redis, all under `duet:`: `room:NAME` (a hash: `owner`, the node that
//! holds the room, and `seats`, its record; TTL [`ROOM_TTL`], rewritten by the
//! owner every [`REFRESH_EVERY`]), `node:ID` (the heartbeat; TTL
//! [`HEARTBEAT_TTL`], written every [`HEARTBEAT_EVERY`]); channel `to:ID`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use duet_signaling::RoomName;
use duet_signaling::cluster::{DeathWatch, Envelope, NodeMessage, StoredRoom};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{PushInfo, PushKind, Script, Value};
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;
use crate::signaling::Signaling;

/// A room's record lives this long unless its owner rewrites it.
pub const ROOM_TTL: Duration = Duration::from_secs(60);
/// How often an owner rewrites the records of its rooms.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// How often a node writes its heartbeat, and checks the others'.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// A heartbeat lasts this long: a node silent for longer is missing.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(3);
/// The longest a `join` waits for Redis before it is refused (`unavailable`).
pub const CLAIM_DEADLINE: Duration = Duration::from_secs(2);
/// Messages and writes waiting for Redis at most; more are dropped (and counted).
const QUEUE: usize = 100_000;
/// Most commands sent to Redis in one pipeline.
const BATCH: usize = 256;

const PREFIX: &str = "duet:";

/// Claims a room: the caller holds it unless another node does whose heartbeat
/// is alive. Returns `{owner}` or `{owner, record}` (the record of the last owner).
const CLAIM: &str = r"
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. owner) == 1 then
  return {owner}
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local seats = redis.call('HGET', KEYS[1], 'seats')
if seats then return {ARGV[1], seats} end
return {ARGV[1]}
";

/// Writes a room's record if the caller holds it (or nobody does: Redis lost
/// it). Returns the owner after the call.
const SAVE: &str = r"
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return owner end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'seats', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return ARGV[1]
";

/// Deletes a room's record if the caller holds it.
const DELETE: &str = r"
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
";

/// Lets go of a room, leaving its record for the next owner.
const RELEASE: &str = r"
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'seats', ARGV[2])
redis.call('HDEL', KEYS[1], 'owner')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Who holds a room, as a claim found.
#[derive(Debug)]
pub enum Claim {
    /// This node: with the record of the node that held it before, if any,
    /// and which of the nodes named in it are dead.
    Mine {
        stored: Option<StoredRoom>,
        dead: std::collections::HashSet<String>,
    },
    /// Another node, alive.
    Other(Arc<str>),
}

/// A write to Redis, sent in order with the others.
#[derive(Debug)]
enum Op {
    Publish { channel: String, payload: String },
    Save { room: RoomName, record: String },
    Delete { room: RoomName },
    Release { room: RoomName, record: String },
}

/// This node's link to Redis.
#[derive(Debug)]
pub struct Link {
    node: Arc<str>,
    manager: ConnectionManager,
    ops: mpsc::Sender<Op>,
    watch: Mutex<DeathWatch>,
    metrics: Arc<Metrics>,
    claim: Script,
}

/// What [`Link::run`] needs besides the link.
#[derive(Debug)]
pub struct Pending {
    ops: mpsc::Receiver<Op>,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

fn room_key(room: &RoomName) -> String {
    format!("{PREFIX}room:{room}")
}

fn node_key(node: &str) -> String {
    format!("{PREFIX}node:{node}")
}

fn channel(node: &str) -> String {
    format!("{PREFIX}to:{node}")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Where a Redis URL points, without its password.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://…@{host}"),
            None => url.to_owned(),
        },
        None => "(not a URL)".to_owned(),
    }
}

impl Link {
    /// Connects to Redis (`redis://`, or `rediss://` for TLS; a password or
    /// ACL user in the URL) as a new node, and subscribes to its channel.
    pub async fn connect(
        url: &str,
        ca: Option<&std::path::Path>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Arc<Self>, Pending)> {
        let node: Arc<str> = Arc::from(format!("{:016x}", rand::random::<u64>()).as_str());
        let client = redis::Client::open(url)
            .with_context(|| format!("`{}` is not a Redis URL", redacted(url)))?;
        // Pub/sub messages arrive on the same connection as replies (RESP3).
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let info = info.set_redis_settings(settings);
        let client = match ca {
            Some(path) => {
                let root_cert = std::fs::read(path)
                    .with_context(|| format!("cannot read the Redis CA {}", path.display()))?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                redis::Client::build_with_tls(info, certificates)
                    .context("cannot use the Redis CA for TLS")?
            }
            None => redis::Client::open(info)?,
        };
        let (push_sender, pushes) = mpsc::unbounded_channel();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_secs(1))
            .set_automatic_resubscription()
            .set_push_sender(push_sender);
        let mut manager = tokio::time::timeout(
            Duration::from_secs(10),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer from Redis at {} within 10 s", redacted(url)))?
        .with_context(|| format!("cannot connect to Redis at {}", redacted(url)))?;
        manager
            .subscribe(channel(&node))
            .await
            .context("cannot subscribe to this node's channel in Redis")?;
        let (ops, ops_receiver) = mpsc::channel(QUEUE);
        let link = Arc::new(Self {
            node,
            manager,
            ops,
            watch: Mutex::new(DeathWatch::default()),
            metrics,
            claim: Script::new(CLAIM),
        });
        tracing::info!(node = %link.node, redis = %redacted(url), "joined the cluster");
        Ok((
            link,
            Pending {
                ops: ops_receiver,
                pushes,
            },
        ))
    }

    /// This node's name.
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    fn push(&self, op: Op) {
        if self.ops.try_send(op).is_err() {
            self.metrics.redis_dropped.inc();
        }
    }

    /// Sends a message to another node (in order with every other write).
    pub fn send(&self, to: &str, message: NodeMessage) {
        let envelope = Envelope {
            from: self.node.to_string(),
            message,
        };
        self.push(Op::Publish {
            channel: channel(to),
            payload: envelope.to_json(),
        });
    }

    /// Writes the record of a room this node holds.
    pub fn save(&self, room: &RoomName, record: String) {
        self.push(Op::Save {
            room: room.clone(),
            record,
        });
    }

    /// Deletes the record of a room this node held (it is empty).
    pub fn delete(&self, room: &RoomName) {
        self.push(Op::Delete { room: room.clone() });
    }

    /// Lets go of a room, leaving its record (if it still has seats) for the next holder.
    pub fn release(&self, room: &RoomName, record: Option<String>) {
        match record {
            Some(record) => self.push(Op::Release {
                room: room.clone(),
                record,
            }),
            None => self.delete(room),
        }
    }

    fn mark(&self, ok: bool) {
        let mut watch = self
            .watch
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if ok {
            watch.redis_ok(Instant::now());
        } else {
            watch.redis_failed();
            self.metrics.redis_errors.inc();
        }
    }

    /// Finds who holds a room, claiming it when nobody (alive) does.
    pub async fn claim(&self, room: &RoomName) -> anyhow::Result<Claim> {
        let mut manager = self.manager.clone();
        self.metrics.redis_command("claim");
        let mut invocation = self.claim.key(room_key(room));
        invocation
            .arg(&*self.node)
            .arg(millis(ROOM_TTL))
            .arg(format!("{PREFIX}node:"));
        let invocation = invocation.invoke_async::<Vec<String>>(&mut manager);
        let reply = tokio::time::timeout(CLAIM_DEADLINE, invocation).await;
        let reply = match reply {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => {
                self.mark(false);
                return Err(error.into());
            }
            Err(_) => {
                self.mark(false);
                anyhow::bail!("no answer from Redis within {CLAIM_DEADLINE:?}");
            }
        };
        self.mark(true);
        let mut reply = reply.into_iter();
        let owner = reply.next().context("an empty reply to a claim")?;
        if *owner != *self.node {
            return Ok(Claim::Other(Arc::from(owner.as_str())));
        }
        let stored = reply.next().and_then(|record| StoredRoom::parse(&record));
        let mut dead = std::collections::HashSet::new();
        if let Some(stored) = &stored {
            let mut others: Vec<&str> = stored
                .seats
                .iter()
                .filter_map(|seat| seat.at.as_ref().map(|(node, _)| node.as_str()))
                .filter(|node| **node != *self.node)
                .collect();
            others.sort_unstable();
            others.dedup();
            for node in others {
                self.metrics.redis_command("check");
                let exists = tokio::time::timeout(
                    CLAIM_DEADLINE,
                    redis::cmd("EXISTS")
                        .arg(node_key(node))
                        .query_async::<bool>(&mut manager),
                )
                .await;
                if !matches!(exists, Ok(Ok(true))) {
                    dead.insert(node.to_owned());
                }
            }
        }
        Ok(Claim::Mine { stored, dead })
    }

    /// Runs the link until `shutdown`: writes in order, delivers messages
    /// from other nodes, beats, refreshes records, watches the other nodes.
    pub async fn run(
        self: Arc<Self>,
        pending: Pending,
        signaling: Arc<Signaling>,
        shutdown: watch::Receiver<bool>,
    ) {
        let Pending { ops, pushes } = pending;
        tokio::join!(
            Arc::clone(&self).write(ops, Arc::clone(&signaling), shutdown.clone()),
            Arc::clone(&self).deliver(pushes, Arc::clone(&signaling), shutdown.clone()),
            self.beat(signaling, shutdown),
        );
    }

    async fn write(
        self: Arc<Self>,
        mut ops: mpsc::Receiver<Op>,
        signaling: Arc<Signaling>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut manager = self.manager.clone();
        let ttl = millis(ROOM_TTL);
        let mut stopping = false;
        loop {
            let first = if stopping {
                // Shutting down: what is queued still goes out (a drain's releases).
                ops.try_recv().ok()
            } else {
                tokio::select! {
                    op = ops.recv() => op,
                    _ = shutdown.changed() => {
                        stopping = true;
                        ops.try_recv().ok()
                    }
                }
            };
            let Some(first) = first else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let mut pipe = redis::pipe();
            for op in &batch {
                match op {
                    Op::Publish { channel, payload } => {
                        self.metrics.redis_command("publish");
                        pipe.cmd("PUBLISH").arg(channel).arg(payload);
                    }
                    Op::Save { room, record } => {
                        self.metrics.redis_command("save");
                        pipe.cmd("EVAL")
                            .arg(SAVE)
                            .arg(1)
                            .arg(room_key(room))
                            .arg(&*self.node)
                            .arg(record)
                            .arg(ttl);
                    }
                    Op::Delete { room } => {
                        self.metrics.redis_command("delete");
                        pipe.cmd("EVAL")
                            .arg(DELETE)
                            .arg(1)
                            .arg(room_key(room))
                            .arg(&*self.node);
                    }
                    Op::Release { room, record } => {
                        self.metrics.redis_command("release");
                        pipe.cmd("EVAL")
                            .arg(RELEASE)
                            .arg(1)
                            .arg(room_key(room))
                            .arg(&*self.node)
                            .arg(record)
                            .arg(ttl);
                    }
                }
            }
            let reply = tokio::time::timeout(
                Duration::from_secs(5),
                pipe.query_async::<Vec<Value>>(&mut manager),
            )
            .await;
            match reply {
                Ok(Ok(values)) => {
                    self.mark(true);
                    for (op, value) in batch.iter().zip(values) {
                        if let (Op::Save { room, .. }, Value::BulkString(owner)) = (op, value)
                            && owner != self.node.as_bytes()
                        {
                            signaling.lost_room(room);
                        }
                    }
                }
                Ok(Err(error)) => {
                    self.mark(false);
                    tracing::warn!(%error, writes = batch.len(), "writes to Redis failed");
                }
                Err(_) => {
                    self.mark(false);
                    tracing::warn!(writes = batch.len(), "writes to Redis timed out");
                }
            }
        }
    }

    async fn deliver(
        self: Arc<Self>,
        mut pushes: mpsc::UnboundedReceiver<PushInfo>,
        signaling: Arc<Signaling>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let push = tokio::select! {
                push = pushes.recv() => push,
                _ = shutdown.changed() => None,
            };
            let Some(push) = push else {
                return;
            };
            if push.kind == PushKind::Disconnection {
                self.mark(false);
                continue;
            }
            let Some(message) = redis::Msg::from_push_info(push) else {
                continue;
            };
            match Envelope::parse(message.get_payload_bytes()) {
                Some(envelope) if *envelope.from != *self.node => signaling.on_node(envelope),
                Some(_) => {}
                None => self.metrics.redis_command("bad_message"),
            }
        }
    }

    async fn beat(self: Arc<Self>, signaling: Arc<Signaling>, mut shutdown: watch::Receiver<bool>) {
        let mut manager = self.manager.clone();
        let mut ticks = tokio::time::interval(HEARTBEAT_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_refresh = Instant::now();
        let mut first = true;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => {
                    // Gone at once rather than when the heartbeat expires.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        redis::cmd("DEL").arg(node_key(&self.node)).query_async::<()>(&mut manager),
                    )
                    .await;
                    return;
                }
            }
            self.metrics.redis_command("heartbeat");
            let beat = tokio::time::timeout(
                HEARTBEAT_EVERY,
                redis::cmd("SET")
                    .arg(node_key(&self.node))
                    .arg(1)
                    .arg("PX")
                    .arg(millis(HEARTBEAT_TTL))
                    .arg("GET")
                    .query_async::<Option<String>>(&mut manager),
            )
            .await;
            let lost_data = match beat {
                Ok(Ok(previous)) => {
                    self.mark(true);
                    previous.is_none() && !std::mem::take(&mut first)
                }
                _ => {
                    self.mark(false);
                    continue;
                }
            };
            if lost_data {
                tracing::warn!(
                    "Redis lost this node's heartbeat (restarted or flushed): rewriting the records of its rooms"
                );
            }
            if lost_data || last_refresh.elapsed() >= REFRESH_EVERY {
                last_refresh = Instant::now();
                for (room, record) in signaling.owned_rooms() {
                    self.save(&room, record);
                }
            }
            let watched = signaling.nodes_to_watch();
            if watched.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for node in &watched {
                self.metrics.redis_command("check");
                pipe.cmd("EXISTS").arg(node_key(node));
            }
            let present =
                tokio::time::timeout(HEARTBEAT_EVERY, pipe.query_async::<Vec<bool>>(&mut manager))
                    .await;
            let Ok(Ok(present)) = present else {
                self.mark(false);
                continue;
            };
            let now = Instant::now();
            let dead: Vec<String> = {
                let mut watch = self
                    .watch
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                watch.retain(&watched);
                watched
                    .iter()
                    .zip(present)
                    .filter(|(node, present)| watch.observe(node, *present, now))
                    .map(|(node, _)| node.clone())
                    .collect()
            };
            for node in dead {
                signaling.node_dead(&node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_logged_without_their_password() {
        assert_eq!(
            redacted("redis://user:secret@10.0.0.5:6379/2"),
            "redis://…@10.0.0.5:6379/2"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redacted("nonsense"), "(not a URL)");
    }
}
