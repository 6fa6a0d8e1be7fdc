//! Feeds arbitrary text to the signaling hub as a client frame.
#![no_main]

use std::time::Instant;

use duet_signaling::{Config, ConnectionId, Hub};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut hub = Hub::new(Config::default(), [0; 32]);
    let now = Instant::now();
    hub.handle_connect(ConnectionId(1), now);
    hub.handle_text(ConnectionId(1), text, now);
    while hub.poll_output().is_some() {}
});
