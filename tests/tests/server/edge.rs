//! The server's edge against abuse (issue 12, connection side): Host
//! checks against DNS rebinding, header and auth timeouts, every TCP
//! connection under the limits, per-address limits behind a trusted proxy,
//! bounded cold exports, unambiguous tokens, acknowledgements only once
//! durable. Raw TCP clients stand in for slowloris attackers; all are few
//! and every wait is bounded.

use std::time::{Duration, Instant};

use quire_server::auth::{Claims, Permission, TokenKey};
use quire_tests::held_store::HeldStore;
use quire_tests::{Client, TestServer, WAIT, eventually, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const KEY: &str = "edge-secret";

/// Opens a WebSocket to `url` with extra headers; the HTTP status of a refusal.
async fn ws_status(url: &str, headers: &[(&str, &str)]) -> Result<(), u16> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("an answer in time")
    {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("unexpected failure: {other}"),
    }
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut all))
        .await
        .expect("the server closes the connection in time");
    all
}

#[tokio::test]
async fn a_rebinding_host_name_is_refused_and_the_real_ones_pass() {
    let server = TestServer::start_with(|c| c.public_hosts = vec!["docs.example".into()]).await;
    let port = server.addr.port();
    let status = |host: String| async move {
        http::request_with(server.addr, "GET", "/healthz", &[("host", &host)], b"")
            .await
            .status
    };
    assert_eq!(
        status(format!("rebound.attacker.example:{port}")).await,
        421
    );
    assert_eq!(status(format!("127.0.0.1:{port}")).await, 200);
    assert_eq!(status(format!("localhost:{port}")).await, 200);
    assert_eq!(status(format!("[::1]:{port}")).await, 200);
    assert_eq!(status("docs.example".into()).await, 200);
    assert_eq!(status(format!("docs.example:{port}")).await, 200);
    // WebSockets alike: the page's rebound name never reaches a room.
    let url = server.ws_url("notes");
    let rebound = format!("rebound.attacker.example:{port}");
    let origin = format!("http://{rebound}");
    assert_eq!(
        ws_status(&url, &[("host", &rebound), ("origin", &origin)]).await,
        Err(421)
    );
    assert_eq!(
        ws_status(&url, &[("host", &format!("localhost:{port}"))]).await,
        Ok(())
    );
    assert_eq!(ws_status(&url, &[("host", "docs.example")]).await, Ok(()));
    assert_eq!(
        server.live_rooms(),
        1,
        "only the allowed ones opened the room"
    );
}

#[tokio::test]
async fn slowloris_requests_are_dropped_after_the_header_timeout() {
    let server = TestServer::start_with(|c| c.header_timeout = Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut trickling = Vec::new();
    for _ in 0..10 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        trickling.push(tcp);
    }
    let silent = TcpStream::connect(server.addr).await.unwrap();
    // One header line every 100 ms, never the blank line that ends them.
    let trickle = async {
        for _ in 0..50 {
            for tcp in &mut trickling {
                if tcp.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(WAIT, trickle).await.unwrap();
    for mut tcp in trickling.into_iter().chain([silent]) {
        read_to_close(&mut tcp).await;
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "all were dropped well before the trickle ended ({took:?})"
    );
    assert!(
        eventually(|| server.state.admission.open() == 0).await,
        "their places are free again"
    );
    // A normal request still works.
    assert_eq!(http::get(server.addr, "/healthz").await.status, 200);
}

#[tokio::test]
async fn idle_http_connections_count_toward_the_per_address_limit() {
    let server = TestServer::start_with(|c| c.max_connections_per_ip = 3).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    assert!(eventually(|| server.state.admission.open() == 3).await);
    assert_eq!(ws_status(&server.ws_url("one"), &[]).await, Err(429));
    let mut refused = TcpStream::connect(server.addr).await.unwrap();
    refused
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut refused).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    drop(idle);
    assert!(eventually(|| server.state.admission.open() == 0).await);
    let _client = Client::connect_synced(server.ws_url("one")).await;
}

#[tokio::test]
async fn a_quire_client_without_a_token_holds_a_place_only_for_the_auth_timeout() {
    let server = TestServer::start_with(|c| {
        c.auth_key = Some(TokenKey::new(KEY));
        c.auth_timeout = Duration::from_millis(300);
    })
    .await;
    let started = Instant::now();
    // Offers quire.v1 (so the server waits for an in-band token), sends nothing.
    let mut silent = Client::new_quire(server.ws_url("vault"));
    silent.connect().await;
    let (code, _) = silent.wait_closed().await;
    assert_eq!(code, 4401);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after the auth timeout, not the old 10 s ({:?})",
        started.elapsed()
    );
    assert!(eventually(|| server.state.admission.open() == 0).await);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_limit_applies_per_forwarded_client() {
    let proxied = TestServer::start_with(|c| {
        c.trust_proxy = vec!["127.0.0.1".parse().unwrap()];
        c.max_connections_per_ip = 1;
    })
    .await;
    let url = proxied.ws_url("shared");
    let (alice, bob) = (
        [("x-forwarded-for", "203.0.113.1")],
        [("x-forwarded-for", "198.51.100.2, 203.0.113.2")],
    );
    let _first = tokio_tungstenite::connect_async({
        let mut r = url.as_str().into_client_request().unwrap();
        r.headers_mut()
            .insert("x-forwarded-for", "203.0.113.1".parse().unwrap());
        r
    })
    .await
    .unwrap();
    assert_eq!(ws_status(&url, &alice).await, Err(429), "alice's second");
    assert_eq!(ws_status(&url, &bob).await, Ok(()), "bob is someone else");

    // From a peer that is not a trusted proxy the header means nothing.
    let direct = TestServer::start_with(|c| c.max_connections_per_ip = 1).await;
    let url = direct.ws_url("shared");
    let _first = Client::connect_synced(url.clone()).await;
    assert_eq!(ws_status(&url, &bob).await, Err(429));
}

#[tokio::test]
async fn cold_exports_are_limited_and_refused_with_retry_after() {
    let server = TestServer::start_with(|c| c.max_cold_exports = 2).await;
    let mut writer = Client::connect_synced(server.ws_url("cold")).await;
    for i in 0..200 {
        writer.push(&format!("line {i}\n"));
    }
    let mut reader = Client::connect_synced(server.ws_url("cold")).await;
    reader
        .wait_until("stored", |c| c.text().ends_with("line 199\n"))
        .await;
    writer.close().await;
    reader.close().await;
    assert!(eventually(|| server.live_rooms() == 0).await, "evicted");

    // Every place taken: the next cold export is turned away, politely.
    let taken = server
        .state
        .cold_exports
        .clone()
        .acquire_many_owned(2)
        .await
        .unwrap();
    let busy = http::get(server.addr, "/api/docs/cold/snapshot?format=text").await;
    assert_eq!(busy.status, 503, "{}", busy.text());
    assert_eq!(busy.header("retry-after"), Some("1"));
    drop(taken);

    // Concurrent GETs: each is either served or told when to come back.
    let gets = (0..12).map(|_| http::get(server.addr, "/api/docs/cold/snapshot?format=text"));
    let answers = futures_util::future::join_all(gets).await;
    let served = answers.iter().filter(|a| a.status == 200).count();
    for answer in &answers {
        match answer.status {
            200 => assert!(answer.text().ends_with("line 199\n")),
            503 => assert_eq!(answer.header("retry-after"), Some("1")),
            other => panic!("unexpected {other}: {}", answer.text()),
        }
    }
    assert!(served >= 1, "some were served");
    assert_eq!(
        server.state.cold_exports.available_permits(),
        2,
        "all places free"
    );
}

#[tokio::test]
async fn a_token_with_a_far_future_expiry_is_served() {
    let server = TestServer::start_with(|c| c.auth_key = Some(TokenKey::new(KEY))).await;
    let token = TokenKey::new(KEY).sign(&Claims::doc("far", Permission::Write, u64::MAX));
    let mut writer =
        Client::connect_synced(format!("{}?token={token}", server.ws_url("far"))).await;
    writer.push("still here");
    let mut reader =
        Client::connect_synced(format!("{}?token={token}", server.ws_url("far"))).await;
    reader.wait_text("still here").await;
    assert!(writer.is_connected());
}

#[tokio::test]
async fn a_document_named_star_is_not_a_wildcard() {
    let server = TestServer::start_with(|c| c.auth_key = Some(TokenKey::new(KEY))).await;
    let exp = quire_server::auth::now_secs() + 600;
    for name in ["*", "a*"] {
        let token = TokenKey::new(KEY).sign(&Claims::doc(name, Permission::Write, exp));
        let own = format!("{}?token={token}", server.ws_url(name));
        let _inside = Client::connect_synced(own).await;
        for other in ["a", "abc", "secret"] {
            let mut outside = Client::new(format!("{}?token={token}", server.ws_url(other)));
            outside.connect().await;
            assert_eq!(
                outside.wait_closed().await.0,
                4403,
                "{name:?} opened {other:?}"
            );
        }
        let list = http::request_with(
            server.addr,
            "GET",
            "/api/docs",
            &[("authorization", &format!("Bearer {token}"))],
            b"",
        )
        .await;
        assert_eq!(list.status, 200);
        let names: Vec<String> = list
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect();
        assert!(names.iter().all(|n| n == name), "{name:?} lists {names:?}");
    }
}

#[tokio::test]
async fn imports_and_deletes_answer_only_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut held = None;
    let server = TestServer::start_on(
        dir.path().join("data"),
        |_| {},
        |sled| {
            let store = HeldStore::new(sled);
            held = Some(store.clone());
            store
        },
    )
    .await;
    let held = held.unwrap();
    let update = {
        use yrs::{ReadTxn, StateVector, Text, Transact};
        let doc = yrs::Doc::new();
        let content = doc.get_or_insert_text("content");
        content.insert(&mut doc.transact_mut(), 0, "imported");
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    };
    let addr = server.addr;
    let import =
        tokio::spawn(
            async move { http::request(addr, "PUT", "/api/docs/d/snapshot", &update).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !import.is_finished(),
        "no answer while the write is not durable"
    );
    held.release();
    let answer = tokio::time::timeout(WAIT, import).await.unwrap().unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());

    held.hold();
    let delete =
        tokio::spawn(async move { http::request(addr, "DELETE", "/api/docs/d", b"").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !delete.is_finished(),
        "no answer while the deletion is not durable"
    );
    held.release();
    let answer = tokio::time::timeout(WAIT, delete).await.unwrap().unwrap();
    assert_eq!(answer.status, 204, "{}", answer.text());
}

/// One client frame: FIN as given, masked with a zero key (allowed, and
/// the payload stays readable).
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        len if len < 126 => frame.push(0x80 | len as u8),
        len if len < 65_536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// The close code in the server frames `wire` holds, if any.
fn close_code_in(wire: &[u8]) -> Option<u16> {
    let mut at = 0;
    while at + 2 <= wire.len() {
        let opcode = wire[at] & 0x0f;
        let (len, header) = match wire[at + 1] & 0x7f {
            126 => (u16::from_be_bytes([wire[at + 2], wire[at + 3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(wire[at + 2..at + 10].try_into().unwrap()) as usize,
                10,
            ),
            len => (len as usize, 2),
        };
        let payload = wire.get(at + header..at + header + len)?;
        if opcode == 0x8 {
            return Some(u16::from_be_bytes([payload[0], payload[1]]));
        }
        at += header + len;
    }
    None
}

#[tokio::test]
async fn a_half_sent_message_times_out_though_the_heartbeat_goes_on() {
    let server = TestServer::start_with(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.ping_timeout = Duration::from_millis(300);
        c.message_timeout = Duration::from_millis(600);
    })
    .await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let upgrade = "GET /ws/trickle HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    // The whole response head, so that only frames are left to read.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    let started = Instant::now();
    // The first fragment of a message that never ends (binary, no FIN)...
    tcp.write_all(&client_frame(false, 0x2, &vec![0u8; 32 * 1024]))
        .await
        .unwrap();
    // ...while pongs keep the heartbeat alive, for up to 5 s.
    let (mut reader, mut writer) = tcp.into_split();
    let heartbeat = tokio::spawn(async move {
        for _ in 0..100 {
            if writer
                .write_all(&client_frame(true, 0xA, b"alive"))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut wire = Vec::new();
    let _ = tokio::time::timeout(WAIT, reader.read_to_end(&mut wire)).await;
    heartbeat.abort();
    let took = started.elapsed();
    assert_eq!(
        close_code_in(&wire),
        Some(4408),
        "closed for the stalled message"
    );
    assert!(
        took < Duration::from_secs(4),
        "closed by the message timeout, not when the heartbeat stopped ({took:?})"
    );
}

#[tokio::test]
async fn quire_token_mints_exact_names_and_prefixes_apart() {
    let dir = tempfile::tempdir().unwrap();
    let key = TokenKey::new(KEY);
    let mint = |args: &'static [&'static str]| {
        let dir = dir.path().to_owned();
        async move {
            let mut all = vec!["token", "--perm", "write", "--auth-key", KEY];
            all.extend_from_slice(args);
            quire_tests::process::run_cli(&dir, &all).await
        }
    };
    let (status, out, _) = mint(&["--doc", "*"]).await;
    assert!(status.success());
    let token = String::from_utf8(out).unwrap();
    let now = quire_server::auth::now_secs();
    assert!(
        key.authorize(Some(token.trim()), "*", Permission::Write, now)
            .is_ok()
    );
    assert!(
        key.authorize(Some(token.trim()), "anything", Permission::Read, now)
            .is_err()
    );

    let (status, out, _) = mint(&["--prefix", "team-"]).await;
    assert!(status.success());
    let token = String::from_utf8(out).unwrap();
    assert!(
        key.authorize(Some(token.trim()), "team-plan", Permission::Write, now)
            .is_ok()
    );
    assert!(
        key.authorize(Some(token.trim()), "other", Permission::Read, now)
            .is_err()
    );

    for ambiguous in [&["--doc", "a", "--prefix", "a"][..], &[][..]] {
        let (status, _, stderr) = mint(ambiguous).await;
        assert!(!status.success(), "{ambiguous:?} must not mint: {stderr}");
    }
}

/// Sends `head` and then `body` a few bytes at a time, every `pause`,
/// until the server answers or closes; returns what it sent.
async fn trickle_request(server: &TestServer, head: &str, body: &[u8], pause: Duration) -> Vec<u8> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = tcp.into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    let chunks: Vec<Vec<u8>> = body.chunks(8).map(<[u8]>::to_vec).collect();
    let trickle = tokio::spawn(async move {
        for chunk in chunks {
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        writer
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, reader.read_to_end(&mut answer)).await;
    trickle.abort();
    answer
}

#[tokio::test]
async fn a_request_body_that_trickles_in_is_refused_with_408_after_the_message_timeout() {
    let server = TestServer::start_with(|c| c.message_timeout = Duration::from_millis(500)).await;
    let body = "# Slow\n\nOne byte after another, for minutes.\n".repeat(40);
    let head = format!(
        "PUT /api/docs/slow/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let started = Instant::now();
    // 8 bytes every 100 ms: the whole body would take about 20 s.
    let answer = trickle_request(&server, &head, body.as_bytes(), Duration::from_millis(100)).await;
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "408, got {answer:?}");
    assert!(
        answer.contains("\"code\":\"timeout\"") && answer.contains("--message-timeout"),
        "the JSON error body names the limit: {answer:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "refused at the timeout, not when the body ended ({took:?})"
    );
    let list = http::get(server.addr, "/api/docs").await;
    assert!(
        !String::from_utf8_lossy(&list.body).contains("\"slow\""),
        "nothing was stored"
    );
    assert!(
        eventually(|| server.state.admission.open() == 0).await,
        "its place is free again"
    );
}

#[tokio::test]
async fn a_body_announced_over_the_limit_is_refused_with_413_before_it_is_sent() {
    let server = TestServer::start_with(|c| c.max_message_bytes = 64 * 1024).await;
    let head = "PUT /api/docs/huge/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                Content-Type: application/octet-stream\r\nContent-Length: 50000000\r\n\r\n";
    let started = Instant::now();
    // Only the headers: the server must not wait for 50 MB that never come.
    let answer = trickle_request(&server, head, b"", Duration::ZERO).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "413, got {answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered from the announced length at once"
    );
}

#[tokio::test]
async fn a_body_that_arrives_in_time_is_imported_as_before() {
    let server = TestServer::start_with(|c| c.message_timeout = Duration::from_secs(5)).await;
    let update = {
        use yrs::{Text, Transact};
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("content");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "typed in a tab");
        txn.encode_update_v1()
    };
    let head = format!(
        "PUT /api/docs/copy/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        update.len()
    );
    // Slow but within the timeout: a few chunks 20 ms apart.
    let answer = trickle_request(&server, &head, &update, Duration::from_millis(20)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 20"),
        "imported, got {answer:?}"
    );
    let text = http::get(server.addr, "/api/docs/copy/snapshot?format=text").await;
    assert_eq!(String::from_utf8_lossy(&text.body), "typed in a tab");
}
