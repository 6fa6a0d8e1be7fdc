//! Feeds arbitrary bytes to the TURN core as client input over UDP and TCP.
#![no_main]

use std::time::Instant;

use duet_turn::{Config, FiveTuple, Server, Transport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(relay) = "203.0.113.1".parse() else { return };
    let mut config = Config::new("duet", relay);
    config.credentials.users.insert("alice".to_owned(), "pw".to_owned());
    let mut server = Server::new(config, [0; 32], Instant::now(), 1_800_000_000);
    for transport in [Transport::Udp, Transport::Tcp] {
        let (Ok(client), Ok(listener)) = ("198.51.100.1:4000".parse(), "203.0.113.1:3478".parse()) else {
            return;
        };
        let from = FiveTuple { transport, client, server: listener };
        let _ = server.handle_client(from, data, Instant::now());
        while server.poll_command().is_some() {}
    }
});
