//! Chat: JSON text messages on the data channel (or through signaling before
//! it opens), as the web client sends them, echoed back when asked.

use std::time::Instant;

use str0m::channel::ChannelId;

use super::{CHAT_MAX_CHARS, Call, CallEvent, CallOutput, ECHO_PREFIX};
use crate::wire::PeerMessage;

impl Call {
    pub(super) fn on_channel_text(&mut self, channel: ChannelId, bytes: &[u8], now: Instant) {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            return;
        };
        if let Ok(PeerMessage::Chat { text }) = PeerMessage::from_value(&value) {
            self.on_chat(text, Some(channel), now);
        }
    }

    /// A chat message arrived on `channel` (None: through signaling); echoes it if asked.
    pub(super) fn on_chat(&mut self, text: String, channel: Option<ChannelId>, now: Instant) {
        self.stats.chat_received += 1;
        let text: String = text.chars().take(CHAT_MAX_CHARS).collect();
        // Never echo an echo: two echoing peers would bounce it forever.
        if self.config.echo && !text.trim().is_empty() && !text.starts_with(ECHO_PREFIX) {
            let reply = PeerMessage::Chat {
                text: format!("{ECHO_PREFIX}{text}"),
            };
            let sent = match channel {
                Some(id) => self.write_channel(Some(id), &reply, now),
                None => {
                    self.outputs.push_back(CallOutput::Send(reply));
                    true
                }
            };
            if sent {
                self.stats.chat_echoed += 1;
            }
        }
        self.outputs
            .push_back(CallOutput::Event(CallEvent::Chat { text }));
    }

    /// Writes a JSON message on a data channel; false when there is none open.
    pub(super) fn write_channel(
        &mut self,
        channel: Option<ChannelId>,
        message: &PeerMessage,
        now: Instant,
    ) -> bool {
        let Some(id) = channel else {
            return false;
        };
        let Ok(json) = serde_json::to_vec(message) else {
            return false;
        };
        let written = self
            .rtc
            .channel(id)
            .is_some_and(|mut channel| channel.write(false, &json).is_ok());
        self.drain(now);
        written
    }
}
