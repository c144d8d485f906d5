//! Admission limits (connections in total and per IP address), the
//! client address behind a trusted proxy, and the per-connection rate
//! limits (messages, bytes, and the room time its messages cost).
//!
//! Every TCP connection is admitted as it is accepted, before a byte of it
//! is read: HTTP requests and WebSockets alike hold a place until they
//! end. A connection from a trusted proxy (`--trust-proxy`) counts toward
//! the total at once and toward its real client's address once a request
//! names that client in `X-Forwarded-For` ([`Admitted::attribute`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

/// Counts open connections; taken only when a connection opens or closes.
#[derive(Debug)]
pub struct Admission {
    /// Open connections, watched by shutdown to learn when the last one
    /// ended: each [`Admitted`] counts itself out as it drops.
    open: watch::Sender<usize>,
    /// Open connections per client address.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_total: usize,
    max_per_ip: usize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds its maximum of connections.
    Full(usize),
    /// This address holds its maximum of connections.
    TooManyFromAddress(usize),
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    /// The address it counts against (`None`: only the total, so far).
    ip: Option<IpAddr>,
}

impl Admission {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            open: watch::Sender::new(0),
            per_ip: Mutex::new(HashMap::new()),
            max_total,
            max_per_ip,
        })
    }

    /// Admits a connection from `ip`, counted in the total and for `ip`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        let mut per_ip = self.per_ip();
        self.check_total()?;
        self.count_ip(&mut per_ip, ip)?;
        self.open.send_modify(|open| *open += 1);
        Ok(Admitted {
            admission: self.clone(),
            ip: Some(ip),
        })
    }

    /// Admits a connection counted only in the total until
    /// [`Admitted::attribute`] names its client (a trusted proxy's).
    pub fn admit_unattributed(self: &Arc<Self>) -> Result<Admitted, Refusal> {
        let _per_ip = self.per_ip();
        self.check_total()?;
        self.open.send_modify(|open| *open += 1);
        Ok(Admitted {
            admission: self.clone(),
            ip: None,
        })
    }

    fn per_ip(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_total(&self) -> Result<(), Refusal> {
        if *self.open.borrow() >= self.max_total {
            return Err(Refusal::Full(self.max_total));
        }
        Ok(())
    }

    fn count_ip(&self, per_ip: &mut HashMap<IpAddr, usize>, ip: IpAddr) -> Result<(), Refusal> {
        let count = per_ip.entry(ip).or_default();
        if *count >= self.max_per_ip {
            return Err(Refusal::TooManyFromAddress(self.max_per_ip));
        }
        *count += 1;
        Ok(())
    }
}

impl Admitted {
    /// Counts a connection admitted by [`Admission::admit_unattributed`]
    /// for its client `ip` too (no change if it already counts for one).
    pub fn attribute(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        if self.ip.is_some() {
            return Ok(());
        }
        let admission = &self.admission;
        admission.count_ip(&mut admission.per_ip(), ip)?;
        self.ip = Some(ip);
        Ok(())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per_ip = self.admission.per_ip();
        if let Some(ip) = self.ip
            && let Some(count) = per_ip.get_mut(&ip)
        {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
        drop(per_ip);
        self.admission.open.send_modify(|open| *open -= 1);
    }
}

/// The client a request comes from: its peer, or, when the peer is one of
/// the `trusted` proxies, the nearest address in `X-Forwarded-For` that is
/// not itself a trusted proxy (proxies append the peer they saw, so the
/// entries left of that one are whatever the client claimed).
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    forwarded_for
        .into_iter()
        .flat_map(|list| list.rsplit(','))
        .map_while(|entry| entry.trim().parse::<IpAddr>().ok())
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

impl Admission {
    /// Connections holding a place now.
    pub fn open(&self) -> usize {
        *self.open.borrow()
    }

    /// Completes once no admitted connection is left.
    pub async fn all_closed(&self) {
        let mut open = self.open.subscribe();
        // The sender lives in `self`, so the watch cannot close under us.
        let _ = open.wait_for(|&open| open == 0).await;
    }
}

/// Bytes read from one TCP connection so far, counted below the HTTP and
/// WebSocket layers: the difference from what they delivered is what they
/// hold unfinished (a message still arriving).
#[derive(Debug, Default)]
pub struct ReadMeter(std::sync::atomic::AtomicU64);

impl ReadMeter {
    pub fn bytes(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts `bytes` read (for a socket read without [`Metered`]).
    pub fn add(&self, bytes: usize) {
        self.0
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A socket whose reads are counted in a [`ReadMeter`].
#[derive(Debug)]
pub struct Metered<T> {
    inner: T,
    meter: Arc<ReadMeter>,
}

impl<T> Metered<T> {
    pub fn new(inner: T, meter: Arc<ReadMeter>) -> Self {
        Self { inner, meter }
    }

    /// The socket itself (a WebSocket waits on its readiness).
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The socket and its meter, apart (a WebSocket shares the socket with
    /// the room, which writes to it, and counts its reads itself).
    pub fn into_parts(self) -> (T, Arc<ReadMeter>) {
        (self.inner, self.meter)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.meter.add(buf.filled().len() - before);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, bytes)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether a WebSocket message has been arriving for too long: bytes read
/// from the socket beyond the messages delivered (and the read-ahead a
/// message boundary allows) mean one is in progress, and it must complete
/// within the timeout however alive the heartbeat keeps the link.
#[derive(Debug)]
pub struct MessageProgress {
    meter: Arc<ReadMeter>,
    /// Wire bytes of the messages delivered, brought up to the meter (less
    /// the read-ahead) at each data message, which also absorbs the headers
    /// of fragmented messages that are not counted.
    delivered: u64,
    /// Since when a message has been in progress.
    since: Option<Instant>,
    timeout: Duration,
}

/// Bytes read past a message boundary that are not yet a message: the
/// socket's read buffer and a header.
const READ_AHEAD: u64 = 8 * 1024;

impl MessageProgress {
    /// Starts counting from what `meter` read so far (the upgrade request,
    /// an in-band token): all of it was delivered.
    pub fn new(meter: Arc<ReadMeter>, timeout: Duration) -> Self {
        Self {
            delivered: meter.bytes(),
            meter,
            since: None,
            timeout,
        }
    }

    /// A message of `len` payload bytes arrived; `data` unless a control frame.
    pub fn delivered(&mut self, len: usize, data: bool) {
        let len = len as u64;
        let header = 2
            + 4
            + if len < 126 {
                0
            } else if len < 65_536 {
                2
            } else {
                8
            };
        self.delivered += header + len;
        if data {
            self.delivered = self
                .delivered
                .max(self.meter.bytes().saturating_sub(READ_AHEAD));
            self.since = None;
        }
    }

    /// Whether a message has been in progress for longer than the timeout.
    pub fn stalled(&mut self, now: Instant) -> bool {
        if self.meter.bytes().saturating_sub(self.delivered) <= READ_AHEAD {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert(now);
        now.saturating_duration_since(since) >= self.timeout
    }

    /// How often [`Self::stalled`] should be asked.
    pub fn check_every(&self) -> Duration {
        (self.timeout / 4).max(Duration::from_millis(10))
    }
}

/// Time a room spent on one connection's messages (merging, storing and
/// relaying them), added by the room after each message and read by the
/// connection's rate limit: what a connection costs, whatever it sends.
#[derive(Debug, Default)]
pub struct RoomTime(std::sync::atomic::AtomicU64);

impl RoomTime {
    /// Adds `spent` (the room calls it once per message it handled).
    pub fn add(&self, spent: Duration) {
        let nanos = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.0
            .fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
    }

    /// Everything spent so far.
    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// A token bucket that goes into debt instead of refusing: a message larger
/// than the bucket is let through and the sender then waits it off. Used to
/// slow a flooding connection down (by not reading from it) without ever
/// dropping what it sent.
#[derive(Debug)]
pub struct RateLimit {
    /// Units per second.
    rate: f64,
    /// The most units the bucket holds: `burst` seconds' worth.
    capacity: f64,
    /// Units available now; negative while in debt.
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// `rate` units per second, of which a full bucket (after `burst` of
    /// sending less) lets `burst` seconds' worth through at once. The
    /// bucket starts full.
    pub fn new(rate: f64, burst: Duration) -> Self {
        let rate = rate.max(1.0);
        let capacity = (rate * burst.as_secs_f64()).max(1.0);
        Self {
            rate,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// Takes `units`; returns how long the caller must wait before going on.
    pub fn take(&mut self, units: f64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.tokens -= units;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn admission_counts_total_and_per_address_and_frees_on_drop() {
        let admission = Admission::new(3, 2);
        let a = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert_eq!(
            admission.admit(a).unwrap_err(),
            Refusal::TooManyFromAddress(2)
        );
        let _third = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).unwrap_err(), Refusal::Full(3));
        drop(first);
        assert!(admission.admit(a).is_ok());
    }

    #[test]
    fn a_proxied_connection_counts_for_its_client_once_named() {
        let admission = Admission::new(3, 1);
        let client = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
        let mut proxied = admission.admit_unattributed().unwrap();
        let mut other = admission.admit_unattributed().unwrap();
        proxied.attribute(client).unwrap();
        assert_eq!(
            other.attribute(client).unwrap_err(),
            Refusal::TooManyFromAddress(1)
        );
        drop(proxied);
        other.attribute(client).unwrap();
        assert_eq!(admission.admit_unattributed().map(drop), Ok(()));
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let inner: IpAddr = "10.0.0.2".parse().unwrap();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let trusted = [proxy, inner];
        // From a stranger the header is ignored.
        assert_eq!(client_ip(client, Some("1.2.3.4"), &trusted), client);
        // The nearest untrusted entry wins; what the client prepended does not.
        assert_eq!(
            client_ip(proxy, Some("6.6.6.6, 203.0.113.9, 10.0.0.2"), &trusted),
            client
        );
        assert_eq!(client_ip(proxy, None, &trusted), proxy);
        assert_eq!(client_ip(proxy, Some("garbage"), &trusted), proxy);
    }

    #[tokio::test]
    async fn all_closed_completes_when_the_last_connection_drops() {
        let admission = Admission::new(3, 3);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (a, b) = (admission.admit(ip).unwrap(), admission.admit(ip).unwrap());
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move { admission.all_closed().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one connection is still open");
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("signalled by the last drop")
            .unwrap();
    }

    #[test]
    fn rate_limit_allows_a_burst_then_paces() {
        let start = Instant::now();
        let mut limit = RateLimit::new(10.0, Duration::from_secs(1));
        for _ in 0..10 {
            assert_eq!(limit.take(1.0, start), Duration::ZERO);
        }
        let wait = limit.take(1.0, start);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        // After a second the bucket is full again (but no fuller).
        let later = start + Duration::from_secs(5);
        assert_eq!(limit.take(9.0, later), Duration::ZERO);
        // A message bigger than the bucket goes through, then is waited off.
        let wait = limit.take(30.0, later);
        assert!((wait.as_secs_f64() - 2.9).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn a_longer_burst_holds_that_many_seconds_worth() {
        let start = Instant::now();
        let mut limit = RateLimit::new(10.0, Duration::from_secs(10));
        assert_eq!(limit.take(100.0, start), Duration::ZERO, "10 s worth");
        let wait = limit.take(1.0, start);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        // Refilled at the rate, up to the burst: a minute idle is 10 s worth.
        let later = start + Duration::from_secs(60);
        assert_eq!(limit.take(100.0, later), Duration::ZERO);
        assert!(limit.take(1.0, later) > Duration::ZERO);
    }

    #[test]
    fn room_time_adds_up() {
        let spent = RoomTime::default();
        spent.add(Duration::from_micros(30));
        spent.add(Duration::from_micros(12));
        assert_eq!(spent.total(), Duration::from_micros(42));
    }
}
