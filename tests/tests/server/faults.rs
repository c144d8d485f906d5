//! Network faults (through the fault-injecting proxy) and crashes (`kill -9`
//! of a real server process): nothing acknowledged is ever lost, nothing is
//! duplicated, and clients come back by themselves.

use std::time::{Duration, Instant};

use quire_client::NativeClient;
use quire_protocol::{Connection, SessionConfig};
use quire_tests::process::run_cli;
use quire_tests::proxy::FaultProxy;
use quire_tests::{Client, ServerProcess, TestServer, WAIT, eventually};
use yrs::Text;

/// Short backoff so tests do not wait 30 s between attempts.
fn quick() -> SessionConfig {
    SessionConfig {
        backoff_first_ms: 100,
        backoff_max_ms: 1_000,
        ..SessionConfig::default()
    }
}

#[tokio::test]
async fn a_blackholed_link_is_noticed_on_both_sides_and_heals() {
    let interval = Duration::from_millis(300);
    let timeout = Duration::from_millis(400);
    let server = TestServer::start_with(|c| {
        c.ping_interval = interval;
        c.ping_timeout = timeout;
    })
    .await;
    let proxy = FaultProxy::start(server.addr).await;
    let traveller = NativeClient::start(format!("ws://{}/ws/tunnel", proxy.addr()), quick());
    traveller.wait_synced(WAIT).await.unwrap();
    let mut home = Client::connect_synced(server.ws_url("tunnel")).await;
    traveller.push("before. ");
    home.wait_text("before. ").await;
    assert_eq!(server.state.metrics.connections.get(), 2);

    proxy.blackhole();
    let cut_at = Instant::now();
    // Client side: the session notices the silence and goes offline.
    traveller
        .wait_status("offline", WAIT, |s| {
            !matches!(s.connection, Connection::Synced | Connection::Syncing)
        })
        .await
        .unwrap();
    let client_noticed = cut_at.elapsed();
    // Server side: the connection is dropped.
    assert!(eventually(|| server.state.metrics.connections.get() == 1).await);
    let server_noticed = cut_at.elapsed();
    let bound = interval + timeout + Duration::from_millis(500);
    eprintln!(
        "blackhole noticed by client after {client_noticed:?}, by server after {server_noticed:?} (interval + timeout = {:?})",
        interval + timeout
    );
    assert!(client_noticed <= bound, "client took {client_noticed:?}");
    assert!(server_noticed <= bound, "server took {server_noticed:?}");

    // Both sides keep editing while apart.
    traveller.push("offline. ");
    home.push("home. ");
    proxy.heal();
    traveller.network_online();
    traveller.wait_synced(WAIT).await.unwrap();
    traveller.wait_saved(WAIT).await.unwrap();
    home.wait_until("home has the traveller's edit", |c| {
        c.text().contains("offline. ")
    })
    .await;
    let merged = home.text();
    assert_eq!(merged.matches("before. ").count(), 1);
    assert_eq!(merged.matches("offline. ").count(), 1);
    assert_eq!(merged.matches("home. ").count(), 1);
    assert!(
        eventually(|| traveller.text() == merged).await,
        "{} vs {merged}",
        traveller.text()
    );
}

#[tokio::test]
async fn ten_thousand_offline_edits_cross_as_one_update() {
    let server = TestServer::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let client = NativeClient::start(format!("ws://{}/ws/notebook", proxy.addr()), quick());
    client.wait_synced(WAIT).await.unwrap();
    proxy.refuse();
    proxy.cut();
    client
        .wait_status("offline", WAIT, |s| {
            matches!(s.connection, Connection::Offline { .. })
        })
        .await
        .unwrap();
    let text = client.doc().get_or_insert_text("content");
    for i in 0..10_000 {
        client.edit(|txn| {
            let len = text.len(txn);
            text.insert(txn, len, &format!("{i},"));
        });
    }
    assert_eq!(client.status().await.unsaved, 10_000);
    let updates_before = server.state.metrics.updates_in.get();

    proxy.heal();
    client.network_online();
    client.wait_saved(WAIT).await.unwrap();
    assert_eq!(
        server.state.metrics.updates_in.get(),
        updates_before + 1,
        "ten thousand offline edits arrive as one merged update"
    );
    let reader = Client::connect_synced(server.ws_url("notebook")).await;
    assert!(reader.text().starts_with("0,1,2,") && reader.text().ends_with(",9999,"));
}

#[tokio::test]
async fn a_reconnect_sends_only_what_the_other_side_lacks() {
    let server = TestServer::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let client = NativeClient::start(format!("ws://{}/ws/manual", proxy.addr()), quick());
    client.wait_synced(WAIT).await.unwrap();
    client.push(&"a long manual line\n".repeat(60_000));
    client.wait_saved(WAIT).await.unwrap();

    proxy.cut();
    client
        .wait_status("offline", WAIT, |s| {
            !matches!(s.connection, Connection::Synced)
        })
        .await
        .unwrap();
    client.push("one small offline edit");
    let bytes_in = server.state.metrics.bytes_in.get();
    let bytes_out = server.state.metrics.bytes_out.get();
    client.network_online();
    client.wait_synced(WAIT).await.unwrap();
    client.wait_saved(WAIT).await.unwrap();
    let sent = server.state.metrics.bytes_in.get() - bytes_in;
    let received = server.state.metrics.bytes_out.get() - bytes_out;
    eprintln!("resync of a 1.1 MB document after one edit: {sent} bytes up, {received} bytes down");
    assert!(
        sent < 2_000 && received < 2_000,
        "up {sent}, down {received}"
    );
}

/// Four clients type while the server is killed and restarted 20 times.
/// Whatever the server acknowledged as saved before a kill is on disk after
/// it; in the end everyone converges and nothing is duplicated.
#[tokio::test]
async fn twenty_kill_9_cycles_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let url = format!("ws://127.0.0.1:{port}/ws/crashy");
    let mut server = ServerProcess::start(dir.path(), port, &[]).await;
    let clients: Vec<NativeClient> = (0..4)
        .map(|_| NativeClient::start(url.clone(), quick()))
        .collect();
    let mut typed: Vec<Vec<String>> = vec![Vec::new(); 4];

    for cycle in 0..20 {
        for client in &clients {
            client.wait_synced(WAIT).await.unwrap();
        }
        for (k, client) in clients.iter().enumerate() {
            for i in 0..5 {
                let entry = format!("[{k}.{cycle}.{i}]");
                client.push(&entry);
                typed[k].push(entry);
            }
        }
        // Let some of it be acknowledged, then crash mid-stream.
        tokio::time::sleep(Duration::from_millis(20 + (cycle % 4) * 15)).await;
        let mut acknowledged = Vec::new();
        for (client, entries) in clients.iter().zip(&typed) {
            let saved = entries.len() - client.status().await.unsaved as usize;
            acknowledged.extend_from_slice(&entries[..saved]);
        }
        server.kill_9().await;

        let (status, stdout, stderr) =
            run_cli(dir.path(), &["export", "crashy", "--format", "text"]).await;
        // A kill before the first flush leaves no document at all; that
        // is only wrong if something was acknowledged (checked below).
        let on_disk = if status.success() {
            String::from_utf8(stdout).unwrap()
        } else {
            assert!(stderr.contains("no document named"), "{stderr}");
            String::new()
        };
        for entry in &acknowledged {
            assert_eq!(
                on_disk.matches(entry.as_str()).count(),
                1,
                "cycle {cycle}: acknowledged {entry} lost"
            );
        }
        server = ServerProcess::start(dir.path(), port, &[]).await;
    }

    for client in &clients {
        client.wait_synced(WAIT).await.unwrap();
        client.wait_saved(WAIT).await.unwrap();
    }
    let reader = Client::connect_synced(url.clone()).await;
    let text = reader.text();
    for entry in typed.iter().flatten() {
        assert_eq!(text.matches(entry.as_str()).count(), 1, "{entry} in {text}");
    }
    for client in &clients {
        assert!(
            eventually(|| client.text() == text).await,
            "a client did not converge"
        );
    }
    drop(server);
}

/// Stock clients cannot see application pings; the server checks them with
/// WebSocket ping frames, which every WebSocket stack answers by itself.
#[tokio::test]
async fn a_silent_stock_client_is_dropped_by_websocket_pings() {
    let server = TestServer::start_with(|c| {
        c.ping_interval = Duration::from_millis(200);
        c.ping_timeout = Duration::from_millis(300);
    })
    .await;
    let proxy = FaultProxy::start(server.addr).await;
    let mut stock = Client::connect_synced(format!("ws://{}/ws/pinged", proxy.addr())).await;
    // Several ping rounds pass while the link is healthy: it stays.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(stock.is_connected());
    assert_eq!(server.state.metrics.connections.get(), 1);
    proxy.blackhole();
    assert!(
        eventually(|| server.state.metrics.connections.get() == 0).await,
        "the server noticed the dead link"
    );
    stock.disconnect();
}
