//! Sans-IO STUN/TURN server core of Duet (RFC 8489, RFC 8656).
//!
//! Owns the relay's rules: Binding, Allocate, Refresh, CreatePermission,
//! ChannelBind, Send/Data indications and ChannelData; long-term credentials
//! (static users and the TURN REST shared secret), nonces, quotas, lifetimes,
//! the peer address policy and bandwidth caps.
//!
//! It must not do IO or read the clock: the driver feeds datagrams with their
//! addresses and `now`, carries out [`Command`]s and wakes the core at
//! [`Server::poll_timeout`]. Parsing uses the `stun-types`/`turn-types` codec.

mod allocation;
pub mod auth;
pub mod config;
pub mod datapath;
pub mod policy;
mod reflection;
pub mod request;
mod server;

pub use auth::{Credentials, rest_credentials, rest_password};
pub use config::{Config, Lifetimes};
pub use policy::{Cidr, PeerDecision, PeerPolicy};
pub use server::{Command, Delivery, FiveTuple, Forward, Server, Stats, Transport};
