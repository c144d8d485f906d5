//! Admission limits (connections in total and per IP address) and the
//! per-connection rate limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    ip: IpAddr,
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

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if *self.open.borrow() >= self.max_total {
            return Err(Refusal::Full(self.max_total));
        }
        let count = per_ip.entry(ip).or_default();
        if *count >= self.max_per_ip {
            return Err(Refusal::TooManyFromAddress(self.max_per_ip));
        }
        *count += 1;
        self.open.send_modify(|open| *open += 1);
        Ok(Admitted {
            admission: self.clone(),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per_ip = self
            .admission
            .per_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.admission.open.send_modify(|open| *open -= 1);
    }
}

impl Admission {
    /// Completes once no admitted connection is left.
    pub async fn all_closed(&self) {
        let mut open = self.open.subscribe();
        // The sender lives in `self`, so the watch cannot close under us.
        let _ = open.wait_for(|&open| open == 0).await;
    }
}

/// A token bucket that goes into debt instead of refusing: a message larger
/// than the bucket is let through and the sender then waits it off. Used to
/// slow a flooding connection down (by not reading from it) without ever
/// dropping what it sent.
#[derive(Debug)]
pub struct RateLimit {
    /// Units per second (and the burst: one second's worth).
    rate: f64,
    /// Units available now; negative while in debt.
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub fn per_second(rate: f64) -> Self {
        Self {
            rate: rate.max(1.0),
            tokens: rate.max(1.0),
            last: Instant::now(),
        }
    }

    /// Takes `units`; returns how long the caller must wait before going on.
    pub fn take(&mut self, units: f64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
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
        let mut limit = RateLimit::per_second(10.0);
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
}
