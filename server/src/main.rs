//! The `quire` command: run the server, or work on its data folder.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, FromArgMatches, Parser, Subcommand};
use quire_protocol::DocName;
use quire_server::auth::{Claims, Permission, TokenKey};
use quire_server::config::defaults;
use quire_server::document::Document;
use quire_server::fanout::Fanout;
use quire_server::fanout::redis::RedisFanout;
use quire_server::import::{self as file_import, ImportFormat};
use quire_server::snapshot::{self, Format};
use quire_server::{AppState, Config, open_store};
use quire_storage::{DocStore, PgStore};
use std::sync::Arc;
use tracing::{info, warn};

#[derive(Parser)]
#[command(
    name = "quire",
    version,
    about = "Real-time collaborative documents over the y-websocket protocol"
)]
struct Cli {
    /// Folder of the embedded store.
    #[arg(
        long,
        env = "QUIRE_DATA",
        default_value = defaults::DATA,
        global = true
    )]
    data: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(Box<Config>),
    /// Print or save a document (the server must not be running on the folder).
    Export {
        doc: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Add a file to a document, creating it if needed (never replaces):
    /// Markdown, HTML or text blocks are appended; a Yjs update is merged.
    /// The server must not be running on the folder.
    Import {
        doc: String,
        file: PathBuf,
        /// The file's format; by default from its extension (.md .markdown
        /// .html .htm .txt .yjs).
        #[arg(long, value_enum)]
        format: Option<ImportFormat>,
    },
    /// List stored documents.
    Ls,
    /// Print a signed access token (needs --auth-key or QUIRE_AUTH_KEY).
    Token {
        /// Exactly this document (any name, `*` included).
        #[arg(long, required_unless_present = "prefix", conflicts_with = "prefix")]
        doc: Option<String>,
        /// Every document whose name starts with this (`--prefix ''` for all).
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long, value_enum)]
        perm: Permission,
        /// How long it is valid (e.g. 1h, 30m, 7d).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, env = "QUIRE_AUTH_KEY", hide_env_values = true)]
        auth_key: String,
    },
    /// Print a document from a running server once (e.g. `quire cat http://127.0.0.1:8080 notes`).
    #[cfg(feature = "remote")]
    Cat {
        /// The server (http://host:port, ws://host:port, ws://host:port/ws)
        /// or a room URL (ws://host:port/ws/DOC).
        url: String,
        /// The document; optional after a room URL (then it must match).
        doc: Option<String>,
    },
    /// Print a document from a running server, then its changes live, until Ctrl-C.
    #[cfg(feature = "remote")]
    Watch {
        /// The server (http://host:port, ws://host:port, ws://host:port/ws)
        /// or a room URL (ws://host:port/ws/DOC).
        url: String,
        /// The document; optional after a room URL (then it must match).
        doc: Option<String>,
    },
}

/// `quire` alone: `quire serve` with every flag at its default (or its
/// environment variable).
fn serve_by_default() -> Config {
    let command = Config::augment_args(clap::Command::new("quire"));
    Config::from_arg_matches(&command.get_matches_from(["quire"])).unwrap_or_else(|e| e.exit())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUIRE_LOG")
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let command = cli
        .command
        .unwrap_or_else(|| Command::Serve(Box::new(serve_by_default())));
    match command {
        Command::Serve(config) => serve(Config {
            data: cli.data,
            ..(*config).clamped()
        }),
        Command::Export { doc, format, out } => export(cli.data, &doc, format, out),
        Command::Import { doc, file, format } => import(cli.data, &doc, &file, format),
        Command::Ls => list(cli.data),
        Command::Token {
            doc,
            prefix,
            perm,
            ttl,
            auth_key,
        } => {
            let exp = quire_server::auth::now_secs().saturating_add(ttl.as_secs());
            let claims = match (doc, prefix) {
                (Some(doc), None) => Claims::doc(doc, perm, exp),
                (None, Some(prefix)) => Claims::prefix(prefix, perm, exp),
                _ => anyhow::bail!("give exactly one of --doc NAME and --prefix P"),
            };
            println!("{}", TokenKey::new(auth_key).sign(&claims));
            Ok(())
        }
        #[cfg(feature = "remote")]
        Command::Cat { url, doc } => {
            tokio::runtime::Runtime::new()?.block_on(remote::cat(&url, doc.as_deref()))
        }
        #[cfg(feature = "remote")]
        Command::Watch { url, doc } => {
            tokio::runtime::Runtime::new()?.block_on(remote::watch(&url, doc.as_deref()))
        }
    }
}

/// `quire cat` and `quire watch`: a native Quire client on a running
/// server. Only the binary has them (feature `remote`, on by default), so
/// the server library never depends on the client crate.
#[cfg(feature = "remote")]
mod remote {
    use std::io::Write;
    use std::time::Duration;

    use anyhow::{Context, bail};
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
    use quire_client::NativeClient;
    use quire_protocol::session::Presence;
    use quire_protocol::{Connection, DocName, SessionConfig, SessionEvent};
    use yrs::types::Delta;
    use yrs::{Observable, Out};

    /// How long `cat` waits for the first sync.
    const SYNC_TIMEOUT: Duration = Duration::from_secs(15);
    /// How long the first look at the URL may take.
    const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

    /// What `quire cat`/`watch` accept, for error messages.
    const ACCEPTED: &str = "give the server as http://host:port, ws://host:port or \
        ws://host:port/ws (then the document), or a room URL ws://host:port/ws/DOC";

    /// The room URL for `server` and `doc`. `server` is the server
    /// (`http://host:port`, `https://`, `ws://`, `wss://`, or `host:port`),
    /// the base URL a Yjs app uses (`ws://host:port/ws`), or a room URL
    /// (`ws://host:port/ws/DOC`, then `doc` may be left out, and must name
    /// the same document if given). Any other path is where the server is
    /// mounted (`https://example.org/quire` → `wss://example.org/quire/ws/DOC`).
    /// A query (`?token=…`) is kept.
    pub fn room_url(server: &str, doc: Option<&str>) -> anyhow::Result<String> {
        let (scheme, rest) = match server.split_once("://") {
            Some(("http" | "ws", rest)) => ("ws", rest),
            Some(("https" | "wss", rest)) => ("wss", rest),
            Some((other, _)) => bail!("{server}: unknown scheme {other}://; {ACCEPTED}"),
            None => ("ws", server),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if host.is_empty() {
            bail!("{server}: no host; {ACCEPTED}");
        }
        let path = path.trim_end_matches('/');
        let (base, named) = match path.rsplit_once("/ws/") {
            Some((mount, segment)) if !segment.is_empty() && !segment.contains('/') => {
                let name = percent_decode_str(segment)
                    .decode_utf8()
                    .with_context(|| format!("{server}: the document name is not UTF-8"))?;
                (format!("{mount}/ws"), Some(name.into_owned()))
            }
            _ if path == "/ws" || path.ends_with("/ws") => (path.to_owned(), None),
            _ => (format!("{path}/ws"), None),
        };
        let name = match (named, doc) {
            (Some(named), Some(doc)) if named != doc => bail!(
                "{server} names the document {named:?} but the argument says {doc:?}; give one of them"
            ),
            (Some(named), _) => named,
            (None, Some(doc)) => doc.to_owned(),
            (None, None) => bail!(
                "which document? {server} names none: add it (quire cat URL DOC) or give its room URL ws://host:port/ws/DOC"
            ),
        };
        let doc = DocName::parse(&name)?;
        let segment = utf8_percent_encode(doc.as_str(), NOT_UNRESERVED);
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        Ok(format!("{scheme}://{host}{base}/{segment}{query}"))
    }

    /// Everything but RFC 3986's unreserved characters is percent-encoded.
    const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');

    /// Looks at `url` once before the client starts: a server that answers
    /// the upgrade with an HTTP error (404: no room there) fails at once,
    /// saying what was tried, instead of being retried until the sync
    /// timeout. A server not reachable yet is left to the client's retries.
    async fn probe(url: &str) -> anyhow::Result<()> {
        use tokio_tungstenite::tungstenite::Error;
        let attempt = tokio::time::timeout(PROBE_TIMEOUT, tokio_tungstenite::connect_async(url));
        match attempt.await {
            Ok(Ok((mut socket, _))) => {
                let _ = socket.close(None).await;
                Ok(())
            }
            Ok(Err(Error::Http(response))) => {
                let status = response.status();
                match status.as_u16() {
                    // Busy (too many connections, documents): the client retries.
                    429 | 503 => Ok(()),
                    404 => bail!(
                        "tried {url}: the server answered 404 Not Found, so there is no \
                         Quire room at that path; {ACCEPTED}"
                    ),
                    _ => bail!("tried {url}: the server answered {status}"),
                }
            }
            Ok(Err(_)) | Err(_) => Ok(()),
        }
    }

    async fn start(server: &str, doc: Option<&str>) -> anyhow::Result<(NativeClient, String)> {
        let url = room_url(server, doc)?;
        probe(&url).await?;
        Ok((
            NativeClient::start(url.clone(), SessionConfig::default()),
            url,
        ))
    }

    async fn synced(client: &NativeClient, url: &str) -> anyhow::Result<()> {
        let status = client
            .wait_status("synced", SYNC_TIMEOUT, |s| {
                matches!(
                    s.connection,
                    Connection::Synced | Connection::Stopped { .. }
                )
            })
            .await
            .with_context(|| format!("could not reach the server at {url}"))?;
        if let Connection::Stopped { code, reason } = status.connection {
            bail!("the server refused: {reason} (close code {code})");
        }
        Ok(())
    }

    pub async fn cat(server: &str, doc: Option<&str>) -> anyhow::Result<()> {
        let (client, url) = start(server, doc).await?;
        synced(&client, &url).await?;
        // The text whichever model the document uses (rich or plain).
        let text = quire_protocol::rich::plain_text(&yrs::Transact::transact(client.doc()));
        std::io::stdout().write_all(text.as_bytes())?;
        client.stop().await;
        Ok(())
    }

    pub async fn watch(server: &str, doc: Option<&str>) -> anyhow::Result<()> {
        let (client, url) = start(server, doc).await?;
        let mut events = client.take_all_events().context("event stream")?;
        synced(&client, &url).await?;
        let text = client.doc().get_or_insert_text("content");
        text.observe("quire-watch", |txn, event| {
            let mut position = 0u32;
            let mut lines = Vec::new();
            for delta in event.delta(txn) {
                match delta {
                    Delta::Retain(n, _) => position += n,
                    Delta::Inserted(Out::Any(yrs::Any::String(s)), _) => {
                        lines.push(format!("@{position} +{s:?}"));
                        position += s.len() as u32;
                    }
                    Delta::Inserted(other, _) => lines.push(format!("@{position} +{other:?}")),
                    Delta::Deleted(n) => lines.push(format!("@{position} -{n}")),
                }
            }
            let mut out = std::io::stdout().lock();
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
        });
        // Printed once the observer is in place, so that no change made
        // after the marker can be missed.
        let mut out = std::io::stdout();
        writeln!(out, "{}", client.text())?;
        writeln!(
            out,
            "--- live changes (@byte offset +inserted / -bytes deleted) ---"
        )?;
        out.flush()?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                event = events.recv() => match event {
                    Ok(SessionEvent::Status(status)) => eprintln!("[status] {:?}, {} unsaved", status.connection, status.unsaved),
                    Ok(SessionEvent::Presence(Presence::Joined { client, state })) => eprintln!("[joined] {client} {state}"),
                    Ok(SessionEvent::Presence(Presence::Left { client })) => eprintln!("[left] {client}"),
                    Ok(SessionEvent::Event { name, payload, sender_name, .. }) => eprintln!("[{name}] {sender_name}: {payload}"),
                    Ok(SessionEvent::ServerError { code, message }) => eprintln!("[error {code}] {message}"),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        client.stop().await;
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::room_url;

        #[test]
        fn room_urls_from_server_addresses() {
            let url = |server, doc| room_url(server, doc).unwrap();
            assert_eq!(
                url("http://127.0.0.1:8080", Some("notes")),
                "ws://127.0.0.1:8080/ws/notes"
            );
            assert_eq!(url("ws://h:1/", Some("a b")), "ws://h:1/ws/a%20b");
            assert_eq!(url("https://x.org", Some("é")), "wss://x.org/ws/%C3%A9");
            assert_eq!(url("127.0.0.1:9", Some("d")), "ws://127.0.0.1:9/ws/d");
            assert!(room_url("http://h", Some("..")).is_err());
        }

        /// Issue 13, fix 2: `ws://host:port/ws`, the base URL a Yjs app
        /// uses, became `ws://host:port/ws/ws/DOC`.
        #[test]
        fn the_base_url_of_a_yjs_app_and_room_urls_are_accepted() {
            let url = |server, doc| room_url(server, doc).unwrap();
            assert_eq!(url("ws://h:1/ws", Some("n")), "ws://h:1/ws/n");
            assert_eq!(url("ws://h:1/ws/", Some("n")), "ws://h:1/ws/n");
            assert_eq!(url("ws://h:1/ws/a%20b", None), "ws://h:1/ws/a%20b");
            assert_eq!(url("ws://h:1/ws/a%20b", Some("a b")), "ws://h:1/ws/a%20b");
            assert_eq!(url("ws://h:1/ws/ws", None), "ws://h:1/ws/ws");
            assert_eq!(
                url("https://x.org/quire", Some("n")),
                "wss://x.org/quire/ws/n"
            );
            assert_eq!(
                url("wss://x.org/quire/ws/n?token=t", None),
                "wss://x.org/quire/ws/n?token=t"
            );
            let err = |server, doc| room_url(server, doc).unwrap_err().to_string();
            assert!(err("ws://h:1/ws/a", Some("b")).contains("names the document"));
            assert!(err("ws://h:1/ws", None).contains("which document"));
            assert!(err("ftp://h:1", Some("n")).contains("unknown scheme"));
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    config.check().map_err(anyhow::Error::msg)?;
    // Before any thread starts: what evicted documents freed goes back.
    quire_server::memory::fix_allocator_thresholds();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(quire_server::memory::BLOCKING_THREAD_KEEP_ALIVE)
        .build()?;
    runtime.block_on(async move {
        let (store, fanout) = open_cluster(&config).await?;
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.addr))?;
        let addr = listener.local_addr()?;
        match &config.database_url {
            None => info!(data = %config.data.display(), "storage ready"),
            Some(_) => info!("storage ready on PostgreSQL"),
        }
        if config.auth_key.is_none() {
            warn!("NO --auth-key: Quire runs OPEN; anyone who can reach {addr} can read, change and delete every document");
        } else {
            info!("access tokens required (--auth-key set)");
        }
        info!("Quire listening on http://{addr} (WebSocket rooms at ws://{addr}/ws/<doc>)");
        let state = AppState::with_fanout(config, store, fanout);
        quire_server::serve(state, listener, shutdown_signal()).await?;
        Ok(())
    })
}

/// The store and fan-out the flags ask for: sled and one node by default;
/// PostgreSQL with `--database-url`; Redis Streams with `--redis-url`.
async fn open_cluster(config: &Config) -> anyhow::Result<(Arc<dyn DocStore>, Arc<dyn Fanout>)> {
    let store: Arc<dyn DocStore> = match config.database_url.clone() {
        None => open_store(config)?,
        Some(url) => {
            let options = config.pg_options();
            let store = tokio::task::spawn_blocking(move || PgStore::open(&url, options))
                .await?
                .context("cannot open the PostgreSQL store")?;
            Arc::new(store)
        }
    };
    let fanout = match &config.redis_url {
        None => quire_server::fanout::single_node(),
        Some(url) => RedisFanout::connect(url)
            .await
            .map_err(anyhow::Error::msg)?,
    };
    Ok((store, fanout))
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

fn open(data: PathBuf) -> anyhow::Result<std::sync::Arc<quire_storage::SledStore>> {
    Ok(open_store(&Config::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        data,
    ))?)
}

fn load(store: &dyn DocStore, doc: &DocName) -> anyhow::Result<Option<Document>> {
    let Some(stored) = store.load(doc.as_str())? else {
        return Ok(None);
    };
    let document = Document::from_updates(stored.updates.iter().map(Vec::as_slice))
        .with_context(|| format!("stored document {doc} does not merge"))?;
    Ok(Some(document))
}

fn export(data: PathBuf, doc: &str, format: Format, out: Option<PathBuf>) -> anyhow::Result<()> {
    let doc = DocName::parse(doc)?;
    let store = open(data)?;
    let Some(document) = load(store.as_ref(), &doc)? else {
        bail!("no document named {doc:?}");
    };
    let bytes = snapshot::render_document(&document, format, doc.as_str())?;
    match out {
        Some(path) => std::fs::write(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout().write_all(&bytes)?,
    }
    Ok(())
}

/// Files from this size on get a progress bar (on a terminal).
const PROGRESS_FROM_BYTES: u64 = 1024 * 1024;

fn import(
    data: PathBuf,
    doc: &str,
    file: &std::path::Path,
    format: Option<ImportFormat>,
) -> anyhow::Result<()> {
    let doc = DocName::parse(doc)?;
    let format = match format.or_else(|| ImportFormat::from_path(file)) {
        Some(format) => format,
        None => bail!(
            "cannot tell the format of {} from its extension; give --format markdown, html, text or yjs",
            file.display()
        ),
    };
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let progress = ImportProgress::new(size);
    let contents = progress.read(file)?;
    let store = open(data)?;
    progress.stage("parsing and converting");
    let mut document = load(store.as_ref(), &doc)?.unwrap_or_default();
    let update = match format {
        ImportFormat::Yjs => contents,
        _ => file_import::to_update(Some(&document.encode_state()?), format, &contents)
            .with_context(|| format!("cannot import {}", file.display()))?,
    };
    let applied = document
        .apply(&update)
        .context("the file is not a valid Yjs update")?;
    if !applied.changed() {
        progress.done();
        println!("{doc} already had everything in {}", file.display());
        return Ok(());
    }
    progress.stage("writing");
    for entry in applied.into_log_entries(&update) {
        store.append(doc.as_str(), &entry)?;
    }
    store.flush()?;
    progress.done();
    println!("imported {} into {doc}", file.display());
    Ok(())
}

/// `quire import`'s progress: a byte bar while reading, then a spinner per
/// stage. Drawn on standard error only when it is a terminal and the file
/// is big.
struct ImportProgress {
    bar: indicatif::ProgressBar,
}

impl ImportProgress {
    fn new(size: u64) -> Self {
        use std::io::IsTerminal;
        let target = if size >= PROGRESS_FROM_BYTES && std::io::stderr().is_terminal() {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        };
        let bar = indicatif::ProgressBar::with_draw_target(Some(size), target);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:24} [{bar:40}] {bytes}/{total_bytes} {elapsed}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message("reading");
        Self { bar }
    }

    /// Reads `file`, advancing the bar.
    fn read(&self, file: &std::path::Path) -> anyhow::Result<Vec<u8>> {
        use std::io::Read;
        let mut reader = std::fs::File::open(file)
            .map(|f| self.bar.wrap_read(f))
            .with_context(|| format!("cannot read {}", file.display()))?;
        let mut contents = Vec::with_capacity(self.bar.length().unwrap_or(0) as usize);
        reader
            .read_to_end(&mut contents)
            .with_context(|| format!("cannot read {}", file.display()))?;
        Ok(contents)
    }

    fn stage(&self, name: &'static str) {
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
            self.bar.set_style(style);
        }
        self.bar.set_message(name);
        self.bar
            .enable_steady_tick(std::time::Duration::from_millis(120));
    }

    fn done(&self) {
        self.bar.finish_and_clear();
    }
}

fn list(data: PathBuf) -> anyhow::Result<()> {
    let store = open(data)?;
    let docs = store.list()?;
    if docs.is_empty() {
        println!("no documents");
    }
    for info in docs {
        let modified = std::time::UNIX_EPOCH + Duration::from_millis(info.modified_ms);
        println!(
            "{}\t{} bytes\t{} updates\t{}",
            info.name,
            info.bytes,
            info.updates,
            humantime::format_rfc3339_seconds(modified)
        );
    }
    Ok(())
}
