//! The `quire` command: run the server, or work on its data folder.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use quire_protocol::DocName;
use quire_server::document::Document;
use quire_server::snapshot::{self, Format};
use quire_server::{AppState, Config, open_store};
use quire_storage::DocStore;
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
        default_value = "./quire-data",
        global = true
    )]
    data: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Print or save a document (the server must not be running on the folder).
    Export {
        doc: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Merge a Yjs update file into a document (never replaces).
    Import { doc: String, file: PathBuf },
    /// List stored documents.
    Ls,
}

#[derive(Parser, Clone)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "QUIRE_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Largest WebSocket message or upload, in bytes.
    #[arg(long, env = "QUIRE_MAX_MESSAGE_BYTES", default_value_t = 32 * 1024 * 1024)]
    max_message_bytes: usize,
    /// How long an empty room stays loaded (e.g. 5s, 500ms).
    #[arg(long, env = "QUIRE_ROOM_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    room_grace: Duration,
    /// Longest wait before stored updates are flushed to disk together.
    #[arg(long, env = "QUIRE_COMMIT_WINDOW", default_value = "2ms", value_parser = humantime::parse_duration)]
    commit_window: Duration,
    /// Presence not renewed for this long is removed.
    #[arg(long, env = "QUIRE_AWARENESS_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    awareness_timeout: Duration,
    /// Frames queued for one client before it is cut off as too slow.
    #[arg(long, env = "QUIRE_OUTBOX_CAPACITY", default_value_t = 4096)]
    outbox_capacity: usize,
    /// Rewrite a document's log as one update once it holds this many.
    #[arg(long, env = "QUIRE_COMPACT_AFTER", default_value_t = 1000)]
    compact_after: u64,
    /// How often each connection is checked for life (e.g. 25s, 500ms).
    #[arg(long, env = "QUIRE_PING_INTERVAL", default_value = "25s", value_parser = humantime::parse_duration)]
    ping_interval: Duration,
    /// How long a ping may go unanswered before the connection is dropped.
    #[arg(long, env = "QUIRE_PING_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    ping_timeout: Duration,
    /// Largest document served, in bytes; larger ones are refused with 4413.
    #[arg(long, env = "QUIRE_MAX_DOCUMENT_BYTES", default_value_t = 128 * 1024 * 1024)]
    max_document_bytes: u64,
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
        .unwrap_or_else(|| Command::Serve(ServeArgs::parse_from(["quire"])));
    match command {
        Command::Serve(args) => serve(cli.data, args),
        Command::Export { doc, format, out } => export(cli.data, &doc, format, out),
        Command::Import { doc, file } => import(cli.data, &doc, &file),
        Command::Ls => list(cli.data),
    }
}

fn serve(data: PathBuf, args: ServeArgs) -> anyhow::Result<()> {
    let config = Config {
        max_message_bytes: args.max_message_bytes,
        room_grace: args.room_grace,
        commit_window: args.commit_window,
        awareness_timeout: args.awareness_timeout,
        outbox_capacity: args.outbox_capacity.max(1),
        compact_after: args.compact_after,
        ping_interval: args.ping_interval.max(Duration::from_millis(10)),
        ping_timeout: args.ping_timeout.max(Duration::from_millis(10)),
        max_document_bytes: args.max_document_bytes,
        ..Config::new(args.addr, data)
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let store = open_store(&config)?;
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.addr))?;
        let addr = listener.local_addr()?;
        info!(data = %config.data.display(), "storage ready");
        warn!("no --auth-key: every document is open to anyone who can reach this address");
        info!("Quire listening on http://{addr} (WebSocket rooms at ws://{addr}/ws/<doc>)");
        let state = AppState::new(config, store);
        quire_server::serve(state, listener, shutdown_signal()).await?;
        Ok(())
    })
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
    let bytes = snapshot::render(document.encode_state(), format)?;
    match out {
        Some(path) => std::fs::write(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout().write_all(&bytes)?,
    }
    Ok(())
}

fn import(data: PathBuf, doc: &str, file: &std::path::Path) -> anyhow::Result<()> {
    let doc = DocName::parse(doc)?;
    let update = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let store = open(data)?;
    let mut document = load(store.as_ref(), &doc)?.unwrap_or_default();
    match document
        .apply(&update)
        .context("the file is not a valid Yjs update")?
    {
        Some(delta) => {
            store.append(doc.as_str(), &delta)?;
            store.flush()?;
            println!("imported into {doc}");
        }
        None => println!("{doc} already had everything in {}", file.display()),
    }
    Ok(())
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
