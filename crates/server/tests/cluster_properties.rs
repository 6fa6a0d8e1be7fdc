//! The cluster behaves exactly as one node: the same random sequences of
//! joins, resumes, messages, leaves, garbage and broken connections are played
//! against one `duet serve` and against two nodes on a real `redis-server`
//! (clients spread over both), and every client must see the same thing in
//! both worlds (ids and tokens aside). Bad input sent to one node can then
//! never change what the members on another node see.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{Client, Event, RedisServer, TestServer};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
enum Step {
    Connect,
    Join {
        who: usize,
        room: u8,
        resume_from: Option<usize>,
    },
    Leave(usize),
    Message(usize),
    Garbage(usize, String),
    Disconnect(usize, bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Connect),
        5 => (0..4usize, 0..2u8, prop::option::of(0..4usize))
            .prop_map(|(who, room, resume_from)| Step::Join { who, room, resume_from }),
        1 => (0..4usize).prop_map(Step::Leave),
        3 => (0..4usize).prop_map(Step::Message),
        1 => (0..4usize, "[ -~]{0,12}").prop_map(|(who, text)| Step::Garbage(who, text)),
        2 => (0..4usize, any::<bool>()).prop_map(|(who, clean)| Step::Disconnect(who, clean)),
    ]
}

/// One world: its servers, its clients and what each client saw.
struct World<'a> {
    servers: &'a [TestServer],
    clients: Vec<Option<Client>>,
    /// Per client: every message it got, ids and tokens replaced by their order of appearance.
    seen: Vec<Vec<String>>,
    /// Resume tokens handed out, in order.
    tokens: Vec<String>,
    /// Ids in order of appearance (so both worlds name them alike).
    ids: Vec<String>,
    case: u64,
}

impl World<'_> {
    fn name_of(&mut self, id: &Value) -> String {
        let id = id.as_str().unwrap_or("?").to_owned();
        let index = match self.ids.iter().position(|known| *known == id) {
            Some(index) => index,
            None => {
                self.ids.push(id);
                self.ids.len() - 1
            }
        };
        format!("#{index}")
    }

    /// A message in a form equal across worlds.
    fn describe(&mut self, message: &Value) -> String {
        match message["type"].as_str().unwrap_or("?") {
            "joined" => {
                if let Some(token) = message["resume"].as_str() {
                    self.tokens.push(token.to_owned());
                }
                let peers: Vec<String> = message["peers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|id| self.name_of(id))
                    .collect();
                format!("joined {} peers {peers:?}", self.name_of(&message["id"]))
            }
            "other_joined" | "bye" => {
                format!("{} {}", message["type"], self.name_of(&message["id"]))
            }
            "message" => format!(
                "message from {} {}",
                self.name_of(&message["from"]),
                message["data"]
            ),
            "error" => format!("error {}", message["code"]),
            other => other.to_owned(),
        }
    }

    async fn play(&mut self, step: &Step) {
        let pick = |clients: &Vec<Option<Client>>, who: usize| {
            (!clients.is_empty()).then(|| who % clients.len())
        };
        match step {
            Step::Connect => {
                let server = &self.servers[self.clients.len() % self.servers.len()];
                self.clients.push(Some(server.connect().await));
                self.seen.push(Vec::new());
            }
            Step::Join {
                who,
                room,
                resume_from,
            } => {
                let Some(index) = pick(&self.clients, *who) else {
                    return;
                };
                let mut message = json!({"type": "join", "room": format!("p{}r{room}", self.case)});
                if let Some(from) = resume_from
                    && !self.tokens.is_empty()
                {
                    message["resume"] = json!(self.tokens[from % self.tokens.len()]);
                }
                if let Some(client) = &mut self.clients[index] {
                    client.send_json(message).await;
                }
            }
            Step::Leave(who) => {
                let Some(index) = pick(&self.clients, *who) else {
                    return;
                };
                if let Some(client) = &mut self.clients[index] {
                    client.send_json(json!({"type": "leave"})).await;
                }
            }
            Step::Message(who) => {
                let Some(index) = pick(&self.clients, *who) else {
                    return;
                };
                if let Some(client) = &mut self.clients[index] {
                    client
                        .send_json(json!({"type": "message", "data": {"from": index}}))
                        .await;
                }
            }
            Step::Garbage(who, text) => {
                let Some(index) = pick(&self.clients, *who) else {
                    return;
                };
                if let Some(client) = &mut self.clients[index] {
                    client.send(text).await;
                }
            }
            Step::Disconnect(who, clean) => {
                let Some(index) = pick(&self.clients, *who) else {
                    return;
                };
                if let Some(client) = self.clients[index].take() {
                    if *clean {
                        client.close(1000).await;
                    } else {
                        client.drop_abruptly();
                    }
                    self.seen[index].push("gone".to_owned());
                }
            }
        }
        self.settle().await;
    }

    /// Reads every client until nothing more comes.
    async fn settle(&mut self) {
        loop {
            let mut quiet = true;
            for index in 0..self.clients.len() {
                let Some(client) = &mut self.clients[index] else {
                    continue;
                };
                let wait = Duration::from_millis(if quiet { 60 } else { 5 });
                match client.next_event(wait).await {
                    Some(Event::Json(message)) => {
                        quiet = false;
                        let described = self.describe(&message);
                        self.seen[index].push(described);
                    }
                    Some(other) => {
                        quiet = false;
                        self.seen[index].push(format!("{other:?}"));
                        self.clients[index] = None;
                    }
                    None => {}
                }
            }
            if quiet {
                return;
            }
        }
    }
}

#[test]
fn two_nodes_on_redis_answer_every_sequence_as_one_node_does() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    let url = redis.url();
    // The wall-clock deadlines (join, resume grace, silence) have tests of their
    // own. Here a case of ~25 steps takes 10–20 s, both worlds played in turn, so
    // a deadline that fell inside it would land at a different step in each world
    // (a 4004 at the 10 s join deadline did): none of them fires within a case.
    let patient = |args: &mut duet_server::config::ServeArgs| {
        args.options.join_timeout_secs = Some(600);
        args.options.resume_grace_secs = Some(600);
        args.options.silence_timeout_secs = Some(600);
    };
    let (single, pair) = runtime.block_on(async {
        let single = vec![TestServer::with(patient).await];
        let mut pair = Vec::new();
        for _ in 0..2 {
            let url = url.clone();
            pair.push(
                TestServer::with(move |args| {
                    patient(args);
                    args.options.redis = Some(url);
                })
                .await,
            );
        }
        (single, pair)
    });
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 32,
        max_shrink_iters: 64,
        max_shrink_time: 60_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let case = std::cell::Cell::new(0u64);
    runner
        .run(&prop::collection::vec(step(), 1..28), |steps| {
            case.set(case.get() + 1);
            let case = case.get();
            let (one, two) = runtime.block_on(async {
                let mut one = World {
                    servers: &single,
                    clients: Vec::new(),
                    seen: Vec::new(),
                    tokens: Vec::new(),
                    ids: Vec::new(),
                    case,
                };
                let mut two = World {
                    servers: &pair,
                    clients: Vec::new(),
                    seen: Vec::new(),
                    tokens: Vec::new(),
                    ids: Vec::new(),
                    case,
                };
                for step in &steps {
                    one.play(step).await;
                    two.play(step).await;
                }
                (one.seen, two.seen)
            });
            if std::env::var("DEBUG_WORLDS").is_ok() {
                eprintln!("{steps:?}\n{one:?}\n{two:?}\n");
            }
            prop_assert_eq!(one, two, "steps: {:?}", steps);
            Ok(())
        })
        .unwrap();
    // Both nodes still answer.
    runtime.block_on(async {
        for server in &pair {
            let mut client = server.connect().await;
            client.send_json(json!({"type": "ping"})).await;
            assert_eq!(client.recv().await["type"], "pong");
        }
    });
}
