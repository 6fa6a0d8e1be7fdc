//! Memory per attacker, measured on the real `duet` binary (a child process,
//! its resident memory read from /proc): 20 rooms from one address, in each a
//! member that never reads while the other sends 64 KiB messages inside the
//! rate limit. Every connection's outbound queue is bounded in bytes, so the
//! slow readers are closed (4003) long before they cost much; the server's
//! memory may grow by at most 64 MiB (it grew by about 350 MiB when the queue
//! was bounded in messages only).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::{ChildServer, Client, Event};
use futures_util::future::join_all;

const PAIRS: usize = 20;
/// Each sender's messages: 64 KiB of data minus the envelope, 40 a second (the
/// limit is 50), for this long.
const MESSAGE_BYTES: usize = 64 * 1024 - 64;
const PER_SECOND: u64 = 40;
const SENDING: Duration = Duration::from_secs(6);
const RSS_GROWTH_BOUND_KIB: u64 = 64 * 1024;

/// Sends until `SENDING` has passed or the room is gone; returns whether a
/// `bye` (the slow reader closed) arrived meanwhile.
async fn send_until_done(mut sender: Client) -> bool {
    let message = format!(
        r#"{{"type":"message","data":"{}"}}"#,
        "x".repeat(MESSAGE_BYTES - 40)
    );
    let started = Instant::now();
    let mut bye = false;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / PER_SECOND));
    while started.elapsed() < SENDING {
        tick.tick().await;
        sender.send(&message).await;
        // Read what the server says, without waiting.
        while let Some(event) = sender.next_event(Duration::from_millis(1)).await {
            match event {
                Event::Json(value) => bye |= value["type"] == "bye",
                Event::Closed(..) | Event::Ended => return bye,
            }
        }
    }
    bye
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_cannot_pin_memory() {
    let server = std::sync::Arc::new(ChildServer::start(&[]));
    // Joined and idle, then measured: the baseline.
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    for pair in 0..PAIRS {
        let room = format!("slow-{pair}");
        let mut reader = server.connect().await;
        let mut sender = server.connect().await;
        assert_eq!(reader.join(&room).await["type"], "joined");
        assert_eq!(sender.join(&room).await["type"], "joined");
        assert_eq!(reader.recv().await["type"], "other_joined");
        readers.push(reader);
        senders.push(sender);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = server.rss_kib();

    // The readers are never polled again: nothing they are sent is read.
    let sampler = {
        let server = std::sync::Arc::clone(&server);
        tokio::spawn(async move {
            let mut peak = 0;
            let started = Instant::now();
            while started.elapsed() < SENDING + Duration::from_secs(1) {
                peak = peak.max(server.rss_kib());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };
    let byes = join_all(senders.into_iter().map(send_until_done)).await;
    let peak = sampler.await.unwrap();
    let growth = peak.saturating_sub(baseline);
    println!(
        "RSS {baseline} KiB before, {peak} KiB at most while {PAIRS} senders sent \
         {} MiB each to readers that never read: growth {growth} KiB; {} of {PAIRS} slow readers closed",
        (PER_SECOND as usize * MESSAGE_BYTES * SENDING.as_secs() as usize) >> 20,
        byes.iter().filter(|bye| **bye).count()
    );
    assert!(
        growth <= RSS_GROWTH_BOUND_KIB,
        "RSS grew by {growth} KiB (bound {RSS_GROWTH_BOUND_KIB} KiB)"
    );
    assert!(
        byes.iter().all(|bye| *bye),
        "every slow reader is closed and its peer told `bye`: {byes:?}"
    );
    drop(readers);
}
