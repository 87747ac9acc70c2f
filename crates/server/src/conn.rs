//! The connection layer: accepts TCP connections and serves HTTP/1.1 on them with hyper, with the
//! protections `axum::serve` lacks.
//!
//! - **Header read timeout** (hyper's own): a client that does not finish its request headers in
//!   time is disconnected.
//! - **Idle timeout**: a connection without a request in flight (never sent one, or kept alive after
//!   its last answer) is closed after this long.
//! - **Connection cap**, by default below the process's file-descriptor limit. At the cap a new
//!   connection evicts the connection that has been waiting longest without a request in flight
//!   (half-open connections that never complete a request, idle keep-alive connections), so
//!   slow or silent clients cannot lock real clients out. Only when every connection has a
//!   request in flight is the newcomer refused, with a `503` in the documented shape.
//!
//! - **Body deadline**: a request's whole body must arrive within the body timeout of its headers;
//!   reading it later fails with [`BodyTimedOut`] (answered `408` by [`crate::api::JsonBody`]).
//!   tower-http's body timeout restarts at every chunk, so a body trickling in a byte at a time
//!   would never end: this one is a single deadline.
//!
//! Graceful shutdown: stop accepting, let each connection finish its in-flight request (hyper's
//! graceful shutdown), then return once every connection is closed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

use crate::metrics::Metrics;

/// Descriptors kept free for everything but client connections: the listener, database files
/// and connections, logs. At least this many, or an eighth of the limit if that is more.
const FD_RESERVE_MIN: u64 = 64;

/// Connection-level limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time allowed for a request's headers.
    pub header_timeout: Duration,
    /// Time allowed for a request's whole body, from its headers.
    pub body_timeout: Duration,
    /// Time a connection may stay without a request in flight.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// The process's soft limit on open file descriptors, if known.
pub fn descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own and reads nothing else.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        if rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY {
            // `rlim_t` is not `u64` on every platform.
            #[allow(clippy::unnecessary_cast)]
            return Some(lim.rlim_cur as u64);
        }
    }
    None
}

/// The connection cap for `configured` (0: automatic): never more than the descriptor limit
/// minus a reserve, so that the cap, not the kernel, turns clients away.
pub fn effective_max_connections(configured: usize, fd_limit: Option<u64>) -> usize {
    let by_fds = fd_limit.map(|l| {
        let reserve = FD_RESERVE_MIN.max(l / 8);
        usize::try_from(l.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX)
    });
    match (configured, by_fds) {
        (0, Some(f)) => f,
        (0, None) => 10_000,
        (c, Some(f)) => c.min(f),
        (c, None) => c,
    }
}

/// One open connection's activity. Its service updates it per request with atomics, so answering
/// a request never takes the registry's lock (only opening and closing connections do).
struct Activity {
    /// Requests being answered on it (0 or 1 on HTTP/1.1).
    in_flight: AtomicU32,
    /// When it last had no request in flight (connected, or answered its last request), in
    /// nanoseconds since the registry's epoch.
    waiting_since: AtomicU64,
    /// Closes it (eviction, idle timeout, shutdown).
    kill: Notify,
}

impl Activity {
    fn is_waiting(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

/// Every open connection of one listener.
struct Registry {
    epoch: Instant,
    conns: Mutex<HashMap<u64, Arc<Activity>>>,
    /// Signalled when the last connection closes (for shutdown).
    empty: Notify,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            epoch: Instant::now(),
            conns: Mutex::default(),
            empty: Notify::new(),
        }
    }
}

/// What to do with a new connection.
enum Admission {
    Admitted(Arc<Activity>),
    Refused,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts and
        // removals), so a poisoned lock is still usable.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Registers connection `id`; at `max`, first evicts the connection waiting longest without
    /// a request in flight, or refuses if every connection has one.
    fn admit(&self, id: u64, max: usize, metrics: &Metrics) -> Admission {
        let mut conns = self.lock();
        if conns.len() >= max {
            let oldest = conns
                .iter()
                .filter(|(_, a)| a.is_waiting())
                .min_by_key(|(_, a)| a.waiting_since.load(Ordering::Acquire))
                .map(|(id, _)| *id);
            match oldest.and_then(|o| conns.remove(&o)) {
                Some(evicted) => {
                    evicted.kill.notify_one();
                    metrics.add_connection_dropped("evicted");
                }
                None => {
                    metrics.add_connection_dropped("refused");
                    return Admission::Refused;
                }
            }
        }
        let activity = Arc::new(Activity {
            in_flight: AtomicU32::new(0),
            waiting_since: AtomicU64::new(self.now()),
            kill: Notify::new(),
        });
        conns.insert(id, activity.clone());
        Admission::Admitted(activity)
    }

    fn remove(&self, id: u64) {
        let mut conns = self.lock();
        conns.remove(&id);
        if conns.is_empty() {
            self.empty.notify_one();
        }
    }

    /// Closes connections that have waited without a request in flight longer than `idle`.
    fn sweep(&self, idle: Duration) {
        let now = self.now();
        let idle = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
        let mut conns = self.lock();
        conns.retain(|_, a| {
            let waited = now.saturating_sub(a.waiting_since.load(Ordering::Acquire));
            let keep = !a.is_waiting() || waited < idle;
            if !keep {
                a.kill.notify_one();
            }
            keep
        });
    }
}

/// Removes a connection from the registry when its task ends, however it ends.
struct Registered {
    id: u64,
    registry: Arc<Registry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// Marks a connection busy while a request is answered.
struct InFlight {
    activity: Arc<Activity>,
    registry: Arc<Registry>,
}

impl InFlight {
    fn start(activity: &Arc<Activity>, registry: &Arc<Registry>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            activity: activity.clone(),
            registry: registry.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The time first, so that a connection seen waiting has its fresh waiting time.
        self.activity
            .waiting_since
            .store(self.registry.now(), Ordering::Release);
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The hyper service of one connection: the router, with the client's address in each request
/// (`ConnectInfo<SocketAddr>`) and the connection marked busy while a request is answered.
#[derive(Clone)]
struct ConnService {
    router: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
    registry: Arc<Registry>,
    body_timeout: Duration,
}

/// Reading a request body past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received in time")]
pub struct BodyTimedOut;

impl BodyTimedOut {
    /// Whether `e` or one of its sources is a [`BodyTimedOut`].
    pub fn caused(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(e);
        while let Some(e) = next {
            if e.is::<BodyTimedOut>() {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// A request body that fails with [`BodyTimedOut`] once its deadline passes. The timer is only
/// made when a read has to wait, so bodies that are already there cost nothing.
struct DeadlineBody {
    inner: Incoming,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        let guard = InFlight::start(&self.activity, &self.registry);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let deadline = tokio::time::Instant::now() + self.body_timeout;
        let req = req.map(|inner| DeadlineBody {
            inner,
            deadline,
            timer: None,
        });
        let router = self.router.clone();
        Box::pin(async move {
            let res = router.oneshot(req).await;
            drop(guard);
            res
        })
    }
}

/// The answer to a connection refused at the cap, written straight to the socket.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 110\r\nretry-after: 1\r\nconnection: close\r\n\r\n\
{\"error\":{\"type\":\"api_error\",\"code\":\"too_many_connections\",\"message\":\"the server is at its connection limit\"}}";

/// Serves `router` on `listener` until `stop` becomes `true`, then shuts down gracefully.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let registry = Arc::new(Registry::default());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let sweeper = {
        let registry = registry.clone();
        let every =
            (limits.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                registry.sweep(limits.idle_timeout);
            }
        })
    };
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => None,
            r = listener.accept() => Some(r),
        };
        let (tcp, peer) = match accepted {
            None => break,
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                // Out of descriptors or a connection reset before it was accepted: keep serving
                // the connections already open and try again shortly.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        next_id = next_id.wrapping_add(1);
        let id = next_id;
        let activity = match registry.admit(id, limits.max_connections, &metrics) {
            Admission::Admitted(a) => a,
            Admission::Refused => {
                let _ = tcp.try_write(REFUSED);
                continue;
            }
        };
        // Small responses must not wait for delayed ACKs (Nagle): answer each write at once.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let registered = Registered {
            id,
            registry: registry.clone(),
        };
        let svc = ConnService {
            router: router.clone(),
            peer,
            activity: activity.clone(),
            registry: registry.clone(),
            body_timeout: limits.body_timeout,
        };
        tokio::spawn(run_connection(
            http.clone(),
            tcp,
            svc,
            activity,
            stop.clone(),
            registered,
        ));
    }
    drop(listener);
    sweeper.abort();
    // Wait until every connection has finished its in-flight request and closed.
    loop {
        let empty = registry.empty.notified();
        if registry.len() == 0 {
            break;
        }
        empty.await;
    }
    Ok(())
}

async fn run_connection(
    http: hyper::server::conn::http1::Builder,
    tcp: TcpStream,
    svc: ConnService,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
    registered: Registered,
) {
    let conn = http.serve_connection(TokioIo::new(tcp), svc);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            // Evicted or idle: dropping the connection closes it.
            _ = activity.kill.notified() => break,
            r = stop.wait_for(|s| *s), if !stopping => {
                drop(r);
                // Without a request in flight there is nothing to finish: close now rather than
                // wait for a slow client's headers.
                if activity.is_waiting() {
                    break;
                }
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    drop(registered);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_descriptor_limit() {
        assert_eq!(effective_max_connections(0, Some(1024)), 896);
        assert_eq!(effective_max_connections(0, Some(256)), 192);
        assert_eq!(effective_max_connections(100, Some(1024)), 100);
        assert_eq!(effective_max_connections(5000, Some(1024)), 896);
        assert_eq!(effective_max_connections(0, None), 10_000);
        assert_eq!(effective_max_connections(0, Some(10)), 1);
    }

    #[test]
    fn the_refusal_is_the_documented_json() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "too_many_connections");
        assert_eq!(v["error"]["type"], "api_error");
    }

    #[test]
    fn at_the_cap_the_longest_waiting_idle_connection_is_evicted() {
        let r = Registry::default();
        let m = Metrics::default();
        let r = Arc::new(r);
        let Admission::Admitted(a1) = r.admit(1, 2, &m) else {
            panic!()
        };
        std::thread::sleep(Duration::from_millis(2));
        let Admission::Admitted(a2) = r.admit(2, 2, &m) else {
            panic!()
        };
        let _busy2 = InFlight::start(&a2, &r);
        let Admission::Admitted(a3) = r.admit(3, 2, &m) else {
            panic!()
        };
        assert_eq!(r.len(), 2);
        assert!(!r.lock().contains_key(&1));
        // The first was told to close.
        assert!(futures_ready(a1.kill.notified()));
        let busy3 = InFlight::start(&a3, &r);
        assert!(matches!(r.admit(4, 2, &m), Admission::Refused));
        // Once its request is answered, the third is evictable again.
        drop(busy3);
        assert!(a3.is_waiting());
        assert!(matches!(r.admit(5, 2, &m), Admission::Admitted(_)));
        assert!(!r.lock().contains_key(&3));
        let dropped = |reason: &str| {
            m.value(&format!(
                "tally_http_connections_dropped_total{{reason=\"{reason}\"}}"
            ))
        };
        assert_eq!(dropped("evicted"), Some(2.0));
        assert_eq!(dropped("refused"), Some(1.0));
    }

    fn futures_ready(f: impl Future<Output = ()>) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(50), f)
                .await
                .is_ok()
        })
    }
}
