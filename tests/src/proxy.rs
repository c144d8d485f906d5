//! A fault-injecting TCP proxy for fault tests.
//!
//! [`FaultProxy`] listens on `127.0.0.1:0` in front of an upstream address
//! (a loopback server). A client connects to the proxy, the proxy connects to
//! the upstream, and bytes are relayed both ways subject to the current fault,
//! which the test may change at any moment and which applies at once to every
//! current and future connection. What a peer (client or server) observes:
//!
//! - **none** ([`FaultProxy::heal`]): a normal relay. End-of-stream (FIN) is
//!   forwarded as a half-close; a reset or I/O error on one side resets the
//!   other.
//! - **cut** ([`FaultProxy::cut`]): a one-off event, not a mode. Every current
//!   connection is reset (`SO_LINGER` 0, then close → RST) on both sides, so
//!   both peers see `ECONNRESET` (or EOF) on their next read. The mode is left
//!   unchanged, so new connections are accepted as before.
//! - **blackhole** ([`FaultProxy::blackhole`]): a dead link. Connections stay
//!   open, no FIN and no RST is sent, but nothing is forwarded in either
//!   direction: the proxy stops reading and writing (so the peers' socket
//!   buffers eventually fill up) and drops whatever it had already read. Only
//!   a heartbeat or timeout lets a peer notice. New connections are accepted
//!   (the handshake completes) but never reach the upstream and get no data.
//!   When the blackhole ends (heal or any other mode), every connection that
//!   lived through it is reset, since its byte streams are desynchronised;
//!   the peers see a reset and reconnect, and new connections relay normally.
//! - **delay** ([`FaultProxy::delay`]): each chunk is forwarded the given
//!   latency after the proxy read it, in each direction, order preserved.
//!   A round trip through the proxy takes at least twice the delay.
//! - **throttle** ([`FaultProxy::throttle`]): throughput is limited to the
//!   given bytes per second, per direction, per connection.
//! - **refuse** ([`FaultProxy::refuse`]): new connections are reset right
//!   after the handshake (connect succeeds, the first read fails with a reset
//!   or EOF). Existing connections keep relaying normally unless also cut.
//!
//! Dropping the proxy closes the listener and ends every relay task.
//! Everything binds to 127.0.0.1; every internal wait is bounded or ends when
//! the proxy is dropped.

use std::future::pending;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until};

/// Relay buffer size per direction.
const BUF: usize = 16 * 1024;
/// Chunks in flight per direction (bounds memory under `delay`).
const QUEUE: usize = 64;
/// How long the proxy waits for the upstream to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The fault mode applied to all current and future connections.
/// (A cut is an event, see [`FaultProxy::cut`].)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Relay normally.
    #[default]
    None,
    /// Forward nothing, close nothing; reset the connections when it ends.
    Blackhole,
    /// Forward each chunk this long after it was read, in each direction.
    Delay(Duration),
    /// Limit each direction of each connection to this many bytes per second
    /// (0 is treated as 1).
    Throttle(u64),
    /// Reset new connections right after accepting them.
    Refuse,
}

/// What the relay tasks watch.
#[derive(Clone, Copy, Debug, Default)]
struct State {
    fault: Fault,
    /// Incremented by every `cut()`.
    cuts: u64,
    /// Incremented every time a blackhole is started.
    blackholes: u64,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    open: AtomicUsize,
}

/// A fault-injecting TCP proxy; see the [module documentation](self).
pub struct FaultProxy {
    addr: SocketAddr,
    state: watch::Sender<State>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1:0 relaying to `upstream`, with no fault.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fault proxy");
        let addr = listener.local_addr().expect("fault proxy address");
        let (state, watcher) = watch::channel(State::default());
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            open: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, watcher, shared.clone()));
        FaultProxy {
            addr,
            state,
            shared,
            task,
        }
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resets every current connection (RST to both peers). The mode is
    /// unchanged, so new connections are handled as before.
    pub fn cut(&self) {
        self.state.send_modify(|s| s.cuts += 1);
    }

    /// Silences every current and new connection: no data, no FIN, no RST.
    /// Data read meanwhile is dropped; the connections are reset when the
    /// blackhole ends.
    pub fn blackhole(&self) {
        self.set(Fault::Blackhole);
    }

    /// Back to a normal relay (resets connections that lived through a
    /// blackhole).
    pub fn heal(&self) {
        self.set(Fault::None);
    }

    /// Resets new connections right after accepting them; existing ones keep
    /// relaying.
    pub fn refuse(&self) {
        self.set(Fault::Refuse);
    }

    /// Forwards every chunk `latency` after it was read, in each direction.
    pub fn delay(&self, latency: Duration) {
        self.set(Fault::Delay(latency));
    }

    /// Limits each direction of each connection to `bytes_per_sec`.
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.set(Fault::Throttle(bytes_per_sec));
    }

    /// Sets the fault mode (the methods above are shorthands).
    pub fn set(&self, fault: Fault) {
        self.state.send_modify(|s| {
            if fault == Fault::Blackhole {
                s.blackholes += 1;
            }
            s.fault = fault;
        });
    }

    /// The current fault mode.
    pub fn fault(&self) -> Fault {
        self.state.borrow().fault
    }

    /// Connections currently held open by the proxy (relayed, or accepted
    /// during a blackhole).
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Points new connections at another upstream (e.g. a server restarted
    /// on a new port). Existing connections are unaffected.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().expect("upstream lock") = upstream;
    }

    /// The upstream new connections go to.
    pub fn upstream(&self) -> SocketAddr {
        *self.shared.upstream.lock().expect("upstream lock")
    }
}

impl Drop for FaultProxy {
    /// Stops the accept loop; its `JoinSet` aborts every relay task, and the
    /// closed watch channel ends any that are still running.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Closes a socket with a reset (RST) instead of a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Counts a connection as open until dropped.
struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(shared)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(
    listener: TcpListener,
    mut state: watch::Receiver<State>,
    shared: Arc<Shared>,
) {
    // Dropping the set (when this task is aborted) aborts every relay task.
    let mut relays = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    if state.borrow().fault == Fault::Refuse {
                        reset(client);
                        continue;
                    }
                    let open = OpenGuard::new(shared.clone());
                    relays.spawn(relay(client, state.clone(), shared.clone(), open));
                }
                // E.g. out of file descriptors: back off briefly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = relays.join_next(), if !relays.is_empty() => {}
            changed = state.changed() => {
                if changed.is_err() {
                    return; // proxy dropped
                }
            }
        }
    }
}

/// How a connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Both directions finished (FINs forwarded): close normally.
    Closed,
    /// Cut, blackhole ended, or a peer reset/failed: reset both sides.
    Reset,
    /// The proxy was dropped.
    Shutdown,
}

/// The epochs a connection was born in; any change kills it.
#[derive(Clone, Copy, Debug)]
struct Life {
    cuts: u64,
    blackholes: u64,
}

impl Life {
    fn new(state: &State) -> Self {
        let blackholes = if state.fault == Fault::Blackhole {
            // Born inside a blackhole: already dead.
            state.blackholes.wrapping_sub(1)
        } else {
            state.blackholes
        };
        Life {
            cuts: state.cuts,
            blackholes,
        }
    }

    /// No byte may be forwarded any more (cut, or a blackhole happened).
    fn dead(&self, state: &State) -> bool {
        state.cuts != self.cuts || state.blackholes != self.blackholes
    }

    /// The connection must be reset now.
    fn killed(&self, state: &State) -> bool {
        state.cuts != self.cuts
            || (state.blackholes != self.blackholes && state.fault != Fault::Blackhole)
    }

    /// Resolves when the connection must be reset or the proxy is dropped.
    async fn end(self, state: &mut watch::Receiver<State>) -> End {
        loop {
            let killed = self.killed(&state.borrow_and_update());
            if killed {
                return End::Reset;
            }
            if state.changed().await.is_err() {
                return End::Shutdown;
            }
        }
    }

    /// Parks forever if the connection is dead (the killer resets it).
    async fn check(&self, state: &watch::Receiver<State>) {
        let dead = self.dead(&state.borrow());
        if dead {
            pending::<()>().await;
        }
    }
}

async fn relay(
    mut client: TcpStream,
    mut state: watch::Receiver<State>,
    shared: Arc<Shared>,
    _open: OpenGuard,
) {
    let life = Life::new(&state.borrow_and_update());

    let upstream_addr = *shared.upstream.lock().expect("upstream lock");
    let watcher = state.clone();
    let connect = async move {
        // Born in a blackhole: never reach the upstream.
        life.check(&watcher).await;
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream_addr)).await
    };
    let mut upstream = tokio::select! {
        biased;
        end = life.end(&mut state) => {
            if end == End::Reset {
                reset(client);
            }
            return;
        }
        connected = connect => match connected {
            Ok(Ok(stream)) => stream,
            _ => {
                reset(client);
                return;
            }
        },
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);

    let end = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let (to_upstream, from_client) = mpsc::channel(QUEUE);
        let (to_client, from_upstream) = mpsc::channel(QUEUE);
        let (w1, w2, w3, w4) = (state.clone(), state.clone(), state.clone(), state.clone());
        let pipes = async move {
            tokio::try_join!(
                read_side(client_read, to_upstream, w1, life),
                write_side(upstream_write, from_client, w2, life),
                read_side(upstream_read, to_client, w3, life),
                write_side(client_write, from_upstream, w4, life),
            )
        };
        tokio::select! {
            biased;
            end = life.end(&mut state) => end,
            done = pipes => if done.is_ok() { End::Closed } else { End::Reset },
        }
    };
    if end == End::Reset {
        reset(client);
        reset(upstream);
    }
}

/// A chunk read from one side, to be written to the other at `due`.
struct Chunk {
    data: Bytes,
    due: Instant,
}

async fn read_side(
    mut from: ReadHalf<'_>,
    to: mpsc::Sender<Chunk>,
    state: watch::Receiver<State>,
    life: Life,
) -> io::Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        // Stop reading while dead, so the peer's buffers fill up.
        life.check(&state).await;
        let limit = match state.borrow().fault {
            Fault::Throttle(bps) => (bps / 20).clamp(1, BUF as u64) as usize,
            _ => BUF,
        };
        let read = from.read(&mut buf[..limit]).await;
        // Whatever happened on a dead connection (data, EOF, error) is
        // swallowed: no byte, FIN or RST crosses a blackhole.
        life.check(&state).await;
        let n = read?;
        if n == 0 {
            return Ok(()); // dropping `to` makes the writer forward the FIN
        }
        let due = match state.borrow().fault {
            Fault::Delay(latency) => Instant::now() + latency,
            _ => Instant::now(),
        };
        let chunk = Chunk {
            data: Bytes::copy_from_slice(&buf[..n]),
            due,
        };
        if to.send(chunk).await.is_err() {
            return Ok(());
        }
    }
}

async fn write_side(
    mut to: WriteHalf<'_>,
    mut from: mpsc::Receiver<Chunk>,
    state: watch::Receiver<State>,
    life: Life,
) -> io::Result<()> {
    // Under throttle: when the previous chunk has finished "transmitting".
    let mut free_at = Instant::now();
    while let Some(chunk) = from.recv().await {
        sleep_until(chunk.due).await;
        life.check(&state).await;
        let fault = state.borrow().fault;
        if let Fault::Throttle(bps) = fault {
            let transmit = Duration::from_secs_f64(chunk.data.len() as f64 / bps.max(1) as f64);
            free_at = free_at.max(Instant::now()) + transmit;
            sleep_until(free_at).await;
            life.check(&state).await;
        }
        let written = to.write_all(&chunk.data).await;
        life.check(&state).await;
        written?;
    }
    life.check(&state).await;
    to.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generous bound for things that should happen promptly.
    const PROMPT: Duration = Duration::from_secs(5);
    /// How long silence must last to count as a blackhole.
    const SILENCE: Duration = Duration::from_millis(300);

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn connect(proxy: &FaultProxy) -> TcpStream {
        tokio::time::timeout(PROMPT, TcpStream::connect(proxy.addr()))
            .await
            .expect("connect timed out")
            .expect("connect")
    }

    /// Writes `msg` and reads it back through the echo server.
    async fn echo(stream: &mut TcpStream, msg: &[u8]) {
        stream.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(PROMPT * 2, stream.read_exact(&mut back))
            .await
            .expect("echo timed out")
            .expect("echo read");
        assert_eq!(back, msg);
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Read {
        Data,
        Closed,
        Silent,
    }

    async fn read_within(stream: &mut TcpStream, within: Duration) -> Read {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => Read::Silent,
            Ok(Ok(0)) | Ok(Err(_)) => Read::Closed,
            Ok(Ok(_)) => Read::Data,
        }
    }

    async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + PROMPT;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn proxy_relays_normally() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut a = connect(&proxy).await;
        echo(&mut a, b"hello").await;
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        echo(&mut a, &big).await;
        assert_eq!(proxy.connections(), 1);
        drop(a);
        wait_until("connection closed", || proxy.connections() == 0).await;
    }

    #[tokio::test]
    async fn proxy_cut_resets_then_accepts() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut a = connect(&proxy).await;
        echo(&mut a, b"before").await;
        proxy.cut();
        assert_eq!(read_within(&mut a, PROMPT).await, Read::Closed);
        wait_until("cut connection gone", || proxy.connections() == 0).await;
        let mut b = connect(&proxy).await;
        echo(&mut b, b"after").await;
        assert_eq!(proxy.connections(), 1);
    }

    #[tokio::test]
    async fn proxy_blackhole_silences_then_heal_resets() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut a = connect(&proxy).await;
        echo(&mut a, b"before").await;

        proxy.blackhole();
        a.write_all(b"lost").await.unwrap();
        assert_eq!(read_within(&mut a, SILENCE).await, Read::Silent);
        // A new connection gets through the handshake but nothing else.
        let mut b = connect(&proxy).await;
        b.write_all(b"lost too").await.unwrap();
        assert_eq!(read_within(&mut b, SILENCE).await, Read::Silent);
        assert_eq!(read_within(&mut a, SILENCE).await, Read::Silent);

        proxy.heal();
        assert_eq!(read_within(&mut a, PROMPT).await, Read::Closed);
        assert_eq!(read_within(&mut b, PROMPT).await, Read::Closed);
        let mut c = connect(&proxy).await;
        echo(&mut c, b"after").await;
    }

    #[tokio::test]
    async fn proxy_delay_adds_latency_in_order() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut a = connect(&proxy).await;
        echo(&mut a, b"warm").await;
        proxy.delay(Duration::from_millis(200));
        let started = Instant::now();
        for part in [&b"one"[..], b"two", b"three"] {
            a.write_all(part).await.unwrap();
        }
        let mut back = [0u8; 11];
        tokio::time::timeout(PROMPT, a.read_exact(&mut back))
            .await
            .expect("delayed echo timed out")
            .unwrap();
        assert_eq!(&back, b"onetwothree");
        // 200 ms each way.
        assert!(started.elapsed() >= Duration::from_millis(400));
    }

    #[tokio::test]
    async fn proxy_throttle_limits_throughput() {
        let proxy = FaultProxy::start(echo_server().await).await;
        proxy.throttle(5_000);
        let mut a = connect(&proxy).await;
        let data = vec![7u8; 5_000];
        let started = Instant::now();
        echo(&mut a, &data).await;
        assert!(started.elapsed() >= Duration::from_millis(800));
    }

    #[tokio::test]
    async fn proxy_refuse_resets_new_connections_only() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut a = connect(&proxy).await;
        echo(&mut a, b"before").await;
        proxy.refuse();
        let mut b = connect(&proxy).await;
        assert_eq!(read_within(&mut b, PROMPT).await, Read::Closed);
        echo(&mut a, b"still fine").await;
        proxy.heal();
        let mut c = connect(&proxy).await;
        echo(&mut c, b"after").await;
    }

    #[tokio::test]
    async fn proxy_set_upstream_redirects_new_connections() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut a = connect(&proxy).await;
        echo(&mut a, b"first").await;
        let second = echo_server().await;
        proxy.set_upstream(second);
        assert_eq!(proxy.upstream(), second);
        let mut b = connect(&proxy).await;
        echo(&mut b, b"second").await;
        echo(&mut a, b"old still works").await;
    }

    #[tokio::test]
    async fn proxy_drop_ends_every_task() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut a = connect(&proxy).await;
        echo(&mut a, b"hi").await;
        proxy.blackhole();
        let _b = connect(&proxy).await;
        let shared = proxy.shared.clone();
        drop(proxy);
        // Only our clone remains once the accept loop and relays are gone.
        wait_until("tasks ended", || Arc::strong_count(&shared) == 1).await;
        assert_eq!(shared.open.load(Ordering::SeqCst), 0);
        assert_eq!(read_within(&mut a, PROMPT).await, Read::Closed);
    }
}
