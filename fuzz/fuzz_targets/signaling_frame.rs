//! Feeds arbitrary text to the signaling hub as a client frame, in Duet's own
//! protocol and through the `cmd` dialect's translation (both ways: what a
//! `cmd` client would be sent for every output is rendered too); to a client
//! as a server frame; and as relayed data turned into every dialect's form.
#![no_main]

use std::time::Instant;

use duet_signaling::cmd::{CmdClient, Seat};
use duet_signaling::signal::{self, Form};
use duet_signaling::{Config, ConnectionId, Hub, Output, PeerId, RoomName, ServerMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut hub = Hub::new(Config::default(), [0; 32]);
    let now = Instant::now();
    hub.handle_connect(ConnectionId(1), now);
    hub.handle_text(ConnectionId(1), text, now);
    while hub.poll_output().is_some() {}

    // The same text from a `cmd` client, seated or not.
    hub.handle_connect(ConnectionId(2), now);
    let mut client = CmdClient::default();
    let _ = duet_signaling::cmd::is_cmd(text);
    for seat in [
        Seat::default(),
        Seat {
            room: RoomName::parse("fuzz").ok(),
            mate_uid: Some("mate".to_owned()),
        },
    ] {
        let translated = client.translate_in(text, &seat);
        hub.handle_translated(ConnectionId(2), translated, now);
    }
    let room = RoomName::parse("fuzz").ok();
    while let Some(output) = hub.poll_output() {
        if let Output::Send { message, .. } = output {
            let _ = client.translate_out(&message, room.as_ref(), &|id: PeerId| id.to_string());
        }
    }
    for form in [Form::Duet, Form::Cmd, Form::Legacy] {
        let _ = signal::to_form(text, form);
    }
    let _ = ServerMessage::parse(text);
});
