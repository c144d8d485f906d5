//! A Quire node inside the test process: the real server (`serve`) on
//! 127.0.0.1:0 over a `PgStore` on a private PostgreSQL and, for a cluster,
//! a `RedisFanout` on a private Redis — what `quire serve --database-url …
//! --redis-url …` builds, with short timeouts for tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quire_server::fanout::redis::RedisFanout;
use quire_server::fanout::{self, Fanout};
use quire_server::{AppState, Config};
use quire_storage::{DocStore, PgOptions, PgStore};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, spawn_blocking};

/// A running node; [`Node::stop`] shuts it down gracefully.
pub struct Node {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Node {
    /// A node on the database at `pg_url`, fanning out through `redis_url`
    /// if given (one node without it).
    pub async fn start(pg_url: String, redis_url: Option<String>) -> Self {
        Self::start_with(pg_url, redis_url, |_| {}).await
    }

    /// Likewise, after `tune` adjusted the configuration.
    pub async fn start_with(
        pg_url: String,
        redis_url: Option<String>,
        tune: impl FnOnce(&mut Config),
    ) -> Self {
        let fanout: Arc<dyn Fanout> = match redis_url {
            Some(url) => RedisFanout::connect(&url).await.expect("connect to redis"),
            None => fanout::single_node(),
        };
        Self::start_on(pg_url, fanout, tune).await
    }

    /// A node on PostgreSQL at `pg_url` whose fan-out is `fanout`.
    pub async fn start_on(
        pg_url: String,
        fanout: Arc<dyn Fanout>,
        tune: impl FnOnce(&mut Config),
    ) -> Self {
        let unused = std::env::temp_dir().join("quire-unused-sled-folder");
        let mut config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), unused);
        config.room_grace = Duration::from_millis(200);
        tune(&mut config);
        // What `quire serve` asks of the store, with short timeouts.
        let options = PgOptions {
            wait_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(1),
            ..config.pg_options()
        };
        let store = spawn_blocking(move || {
            PgStore::open(&pg_url, options).expect("open the postgres store")
        })
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store: Arc<dyn DocStore> = Arc::new(store);
        let state = AppState::with_fanout(config, store, fanout);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(quire_server::serve(state, listener, async move {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    pub fn url(&self, doc: &str) -> String {
        format!("ws://{}/ws/{doc}", self.addr)
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the server stops in time")
            .expect("server task")
            .expect("server result");
    }
}
