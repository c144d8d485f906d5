//! The real server on `PgStore` (through `AppState::new`, which takes any
//! `DocStore`; the `--database-url` flag comes with the server work): edits
//! are saved, acknowledged only once PostgreSQL committed them, and still
//! there for a server started afresh on the same database.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quire_client::NativeClient;
use quire_protocol::SessionConfig;
use quire_server::{AppState, Config};
use quire_storage::{DocStore, PgOptions, PgStore};
use quire_tests::WAIT;
use quire_tests::services::Postgres;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, spawn_blocking};

/// A server on 127.0.0.1:0 over a fresh `PgStore` on `url`.
struct PgServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl PgServer {
    async fn start(url: String) -> Self {
        let store = spawn_blocking(move || {
            let options = PgOptions {
                wait_timeout: Duration::from_secs(3),
                connect_timeout: Duration::from_secs(1),
                ..PgOptions::default()
            };
            PgStore::open(&url, options).expect("open the postgres store")
        })
        .await
        .unwrap();
        let unused = std::env::temp_dir().join("quire-unused-sled-folder");
        let mut config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), unused);
        config.room_grace = Duration::from_millis(200);
        let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store: Arc<dyn DocStore> = Arc::new(store);
        let state = AppState::new(config, store);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(quire_server::serve(state, listener, async move {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    fn url(&self, doc: &str) -> String {
        format!("ws://{}/ws/{doc}", self.addr)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the server stops in time")
            .expect("server task")
            .expect("server result");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_on_postgres_are_acknowledged_only_after_commit_and_survive_a_new_server() {
    let mut pg = spawn_blocking(|| Postgres::start().expect("start postgres"))
        .await
        .unwrap();
    let server = PgServer::start(pg.url()).await;

    let client = NativeClient::start(server.url("notes"), SessionConfig::default());
    client.wait_synced(WAIT).await.expect("synced");
    client.push("hello");
    client.wait_saved(WAIT).await.expect("saved once committed");

    // The database goes away: the edit is relayed and kept, not acknowledged.
    pg = spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    client.push(" world");
    let unsaved = client.wait_saved(Duration::from_secs(2)).await;
    assert!(unsaved.is_err(), "acknowledged while PostgreSQL was down");
    assert!(client.status().await.unsaved > 0);
    let reader = NativeClient::start(server.url("notes"), SessionConfig::default());
    reader
        .wait_synced(WAIT)
        .await
        .expect("a second client joins");
    assert_eq!(reader.text(), "hello world", "still relayed");

    pg = spawn_blocking(move || {
        pg.start_again().expect("start postgres again");
        pg
    })
    .await
    .unwrap();
    client
        .wait_saved(WAIT)
        .await
        .expect("saved once PostgreSQL is back");

    client.stop().await;
    reader.stop().await;
    server.stop().await;

    let second = PgServer::start(pg.url()).await;
    let late = NativeClient::start(second.url("notes"), SessionConfig::default());
    late.wait_synced(WAIT)
        .await
        .expect("synced with the new server");
    assert_eq!(
        late.text(),
        "hello world",
        "everything acknowledged is stored"
    );
    late.stop().await;
    second.stop().await;
    drop(spawn_blocking(move || drop(pg)).await);
}
