//! A whole Quire cluster on loopback: PostgreSQL, Redis, three `quire`
//! nodes and HAProxy (`server/haproxy.cfg`) in front of them. What
//! `cargo xtask cluster` runs and what the HAProxy tests run against.
//!
//! Like [`crate::services`], it uses only `std` and `libc`, so that `xtask`
//! compiles the same file (`#[path = "../../tests/src/cluster.rs"]`).

use std::path::{Path, PathBuf};

use crate::services::{Haproxy, Postgres, QuireNode, Redis, Result, postgres_can_use};

/// Nodes in a cluster (the number `server/haproxy.cfg` names).
pub const NODES: usize = 3;

/// PostgreSQL, Redis, [`NODES`] nodes and HAProxy, each on a free
/// 127.0.0.1 port. Dropping it stops everything: the proxy, the nodes (so
/// they flush), then Redis and PostgreSQL.
pub struct Cluster {
    /// Field order is drop order: the proxy first, the databases last.
    pub proxy: Haproxy,
    pub nodes: Vec<QuireNode>,
    pub redis: Redis,
    pub postgres: Postgres,
}

impl Cluster {
    /// Starts a cluster of `quire` (the binary) with everything under
    /// `dir` (`postgres/`, `redis/`, `node-N/`, `haproxy/`; kept, so a
    /// second start finds the documents again). Each node also gets
    /// `node_args`.
    pub fn start_in(quire: &Path, dir: &Path, node_args: &[&str]) -> Result<Self> {
        let postgres = Postgres::start_in(Self::postgres_dir(dir))?;
        let redis = Redis::start_in(dir.join("redis"))?;
        let mut args: Vec<String> = [
            "--database-url",
            &postgres.url(),
            "--redis-url",
            &redis.url(),
            // HAProxy connects from loopback and names the client in
            // X-Forwarded-For: count connections per client, not per proxy.
            "--trust-proxy",
            "127.0.0.1",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(node_args.iter().map(|a| (*a).to_owned()));
        let nodes = (1..=NODES)
            .map(|n| QuireNode::start_in(quire, dir.join(format!("node-{n}")), &args))
            .collect::<Result<Vec<_>>>()?;
        let addrs: Vec<String> = nodes.iter().map(QuireNode::addr).collect();
        let proxy = Haproxy::start_in(dir.join("haproxy"), &addrs)?;
        Ok(Self {
            proxy,
            nodes,
            redis,
            postgres,
        })
    }

    /// Where clients connect: `http://127.0.0.1:PORT` (rooms at `/ws/DOC`).
    pub fn url(&self) -> String {
        self.proxy.url()
    }

    /// The folders and addresses, for people.
    pub fn describe(&self) -> String {
        let mut lines = vec![
            format!(
                "PostgreSQL  {} (data in {})",
                self.postgres.url(),
                self.postgres.dir().display()
            ),
            format!("Redis       {}", self.redis.url()),
        ];
        for (n, node) in self.nodes.iter().enumerate() {
            lines.push(format!("node {}      http://{}", n + 1, node.addr()));
        }
        lines.push(format!("HAProxy     {}", self.url()));
        lines.join("\n")
    }

    /// PostgreSQL's folder: `dir/postgres`, unless the `postgres` account
    /// cannot reach it (a target dir under `/root`, which is 0700, when
    /// running as root); then a folder of the same name under the temporary
    /// folder, kept too.
    pub fn postgres_dir(dir: &Path) -> PathBuf {
        let wanted = dir.join("postgres");
        if postgres_can_use(&wanted) {
            return wanted;
        }
        let name: String = dir
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        std::env::temp_dir().join(format!("quire-postgres{name}"))
    }
}
