//! The loopback limit: a bare tokio-tungstenite broadcast server with no
//! CRDT and no storage. It relays each sync update frame to every other
//! connection of the same path, answers a sync step 1 with an empty step 2
//! (so clients reach "synced" the same way as with real servers), drops
//! everything else, and pings every 25 s like Quire. Its architecture mirrors
//! Quire's minus the document: one reader and one writer task per
//! connection (the writer sends whatever is queued with one flush), a
//! bounded outbox per connection, a shared room table.
//!
//! Run as a child process (`quire-bench --serve-broadcast 127.0.0.1:0`) so
//! its CPU and memory are measured apart from the load generator's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::ws::EMPTY_STEP2;

type Outbox = mpsc::Sender<Message>;
type Rooms = Arc<Mutex<HashMap<String, Vec<(u64, Outbox)>>>>;

/// Frames that may wait for one connection before it is dropped (as Quire).
const OUTBOX: usize = 4096;
const PING_EVERY: Duration = Duration::from_secs(25);

pub fn run(addr: &str) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        println!("listening on {}", listener.local_addr()?);
        let rooms: Rooms = Arc::default();
        let ids = Arc::new(AtomicU64::new(1));
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(serve(stream, id, rooms.clone()));
                }
                _ = terminate.recv() => return Ok(()),
            }
        }
    })
}

#[allow(clippy::result_large_err)] // tungstenite's callback signature
async fn serve(stream: TcpStream, id: u64, rooms: Rooms) {
    let mut path = String::new();
    let callback = |request: &Request, response: Response| {
        path = request.uri().path().to_owned();
        Ok(response)
    };
    // Small buffers, as a lean server would use (tungstenite's defaults are 128 KiB).
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let Ok(socket) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let (mut sink, mut source) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(OUTBOX);
    rooms
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default()
        .push((id, tx.clone()));
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                message = rx.recv() => match message {
                    Some(message) => {
                        // Everything queued goes out with one flush.
                        if sink.feed(message).await.is_err() {
                            break;
                        }
                        let mut batch = 1;
                        while batch < 256 {
                            let Ok(message) = rx.try_recv() else { break };
                            if sink.feed(message).await.is_err() {
                                break;
                            }
                            batch += 1;
                        }
                        if sink.flush().await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                _ = ping.tick() => if sink.send(Message::Ping(Vec::new().into())).await.is_err() { break },
            }
        }
        let _ = sink.close().await;
    });
    while let Some(Ok(message)) = source.next().await {
        let Message::Binary(frame) = message else {
            if message.is_close() {
                break;
            }
            continue;
        };
        match frame.get(..2) {
            // Sync step 1: "synced" needs a step 2; there is no document.
            Some([0, 0])
                if tx
                    .try_send(Message::Binary(EMPTY_STEP2.to_vec().into()))
                    .is_err() =>
            {
                break;
            }
            // Sync update: relay to the others.
            Some([0, 2]) => {
                let mut slow = Vec::new();
                {
                    let rooms = rooms.lock().unwrap();
                    for (other, outbox) in rooms.get(&path).into_iter().flatten() {
                        if *other != id && outbox.try_send(Message::Binary(frame.clone())).is_err()
                        {
                            slow.push(*other);
                        }
                    }
                }
                if !slow.is_empty() {
                    remove(&rooms, &path, &slow);
                }
            }
            _ => {}
        }
    }
    remove(&rooms, &path, &[id]);
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

fn remove(rooms: &Rooms, path: &str, ids: &[u64]) {
    let mut rooms = rooms.lock().unwrap();
    if let Some(members) = rooms.get_mut(path) {
        members.retain(|(id, _)| !ids.contains(id));
        if members.is_empty() {
            rooms.remove(path);
        }
    }
}
