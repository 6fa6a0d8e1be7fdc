//! HTTP behaviour over real sockets: health, metrics, the web client, origin
//! checks and connection caps at the upgrade, the HTTP redirect.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::TestServer;
use tokio_tungstenite::tungstenite::Error as WsError;

fn status_of(result: Result<common::Client, WsError>) -> Option<u16> {
    match result {
        Err(WsError::Http(response)) => Some(response.status().as_u16()),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => None,
    }
}

#[tokio::test]
async fn health_metrics_and_the_web_client_are_served_over_https() {
    let server = TestServer::start().await;
    let http = server.http();
    let health = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok\n");

    let page = http.get(server.url("/?room=abc")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'"));
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let body = page.text().await.unwrap();
    assert!(body.contains("<html"), "{body}");

    let _client = server.connect().await;
    let metrics = server.metrics().await;
    for name in [
        "duet_signaling_connections 1",
        "duet_signaling_connections_total 1",
        "duet_rooms 0",
        "duet_messages_relayed_total",
        "duet_join_latency_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing in\n{metrics}");
    }
}

#[tokio::test]
async fn joins_are_measured_in_the_latency_histogram() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.join("measured").await;
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("duet_join_latency_seconds_count 1"),
        "{metrics}"
    );
    assert!(metrics.contains("duet_rooms 1"), "{metrics}");
}

#[tokio::test]
async fn a_foreign_origin_is_refused_with_403() {
    let server = TestServer::with(|args| {
        args.options.allowed_origins = vec!["https://app.example.org".to_owned()];
    })
    .await;
    let own = format!("https://localhost:{}", server.addr.port());
    assert_eq!(status_of(server.try_connect(Some(&own)).await), None);
    assert_eq!(
        status_of(server.try_connect(Some("https://app.example.org")).await),
        None
    );
    assert_eq!(
        status_of(server.try_connect(Some("https://evil.example")).await),
        Some(403)
    );
    assert_eq!(status_of(server.try_connect(Some("null")).await), Some(403));
    let metrics = server.metrics().await;
    assert!(metrics.contains("duet_upgrades_refused_total{reason=\"origin\"} 2"));
}

#[tokio::test]
async fn connection_caps_refuse_with_429_and_503() {
    let server = TestServer::with(|args| {
        args.options.max_connections_per_ip = Some(2);
        args.options.max_connections = Some(3);
    })
    .await;
    let first = server.connect().await;
    let _second = server.connect().await;
    assert_eq!(status_of(server.try_connect(None).await), Some(429));
    // A closed connection gives its slot back.
    first.close(1000).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(status_of(server.try_connect(None).await), None);

    let total = TestServer::with(|args| {
        args.options.max_connections_per_ip = Some(10);
        args.options.max_connections = Some(1);
    })
    .await;
    let _only = total.connect().await;
    assert_eq!(status_of(total.try_connect(None).await), Some(503));
}

#[tokio::test]
async fn plain_http_redirects_to_https() {
    let server = TestServer::with(|args| {
        args.options.http_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let http_addr = server.server.as_ref().unwrap().http_addr.unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(format!("http://localhost:{}/?room=r1", http_addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(
        response.headers()["location"],
        format!("https://localhost:{}/?room=r1", server.addr.port()).as_str()
    );
}

#[tokio::test]
async fn the_certificate_is_reused_across_runs() {
    let mut first = TestServer::start().await;
    let fingerprint = first.server.as_ref().unwrap().identity.fingerprint.clone();
    let dir = first.data_dir.clone();
    first.stop().await;
    let second = TestServer::with(|args| args.state.data_dir = Some(dir.clone())).await;
    let identity = &second.server.as_ref().unwrap().identity;
    assert!(!identity.generated);
    assert_eq!(identity.fingerprint, fingerprint);
}
