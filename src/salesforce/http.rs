//! HTTP/1.1 to Salesforce: kept-alive connections pooled per origin, TLS by rustls with the
//! webpki roots, and the connect and read timeouts.
//!
//! A connection goes back to the pool when its answer's body has been read to the end, so a
//! long download never holds up another request, and an answer dropped half-read closes its
//! connection instead of leaving unread bytes for the next request.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Request, Response, Uri};
use futures_util::future::BoxFuture;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::salesforce::call::{CallerBodyBroke, UploadStalled};
use crate::salesforce::connect_proxy::{OutboundProxy, Route};
use crate::salesforce::origin::Origin;
use crate::salesforce::settings::{ConnectTo, SalesforceSettings};

/// Why an exchange with Salesforce failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("no connection within {} ms", .0.as_millis())]
    ConnectTimeout(Duration),
    #[error("cannot connect to {origin}: {source}")]
    Connect {
        origin: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Exchange(String),
    #[error("silent for {} s while sending its answer", .0.as_secs_f64())]
    ReadTimeout(Duration),
    /// `salesforce.max_connections_per_origin` connections were busy for the whole wait.
    #[error(
        "all {0} connections to this origin (salesforce.max_connections_per_origin) stayed busy"
    )]
    NoConnectionFree(usize),
    /// The caller's upload went silent, so the request was aborted.
    #[error("{0}")]
    UploadStalled(#[from] UploadStalled),
    /// The caller's upload broke while it streamed.
    #[error("{0}")]
    CallerBody(CallerBodyBroke),
    /// The answer ran past its deadline (`salesforce.max_answer_secs`).
    #[error("the answer ran longer than salesforce.max_answer_secs")]
    AnswerTooLong,
}

impl HttpError {
    fn exchange(error: &hyper::Error) -> HttpError {
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            if let Some(stalled) = cause.downcast_ref::<UploadStalled>() {
                return HttpError::UploadStalled(UploadStalled(stalled.0));
            }
            if let Some(broke) = cause.downcast_ref::<CallerBodyBroke>() {
                return HttpError::CallerBody(broke.clone());
            }
            reason = format!("{reason}: {cause}");
            source = cause.source();
        }
        HttpError::Exchange(reason)
    }
}

/// The client: one pool of connections for every origin.
pub struct Http {
    pool: Arc<Pool>,
    tls: TlsConnector,
    connect_timeout: Duration,
    read_timeout: Duration,
    user_agent: HeaderValue,
    /// The proxy https origins are tunnelled through, if any.
    https_proxy: Option<OutboundProxy>,
    /// `SalesforceSettings::connect_to`: the demo's one origin connected elsewhere.
    connect_to: Option<ConnectTo>,
}

struct Pool {
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
    /// Connections open per origin, idle or busy: one place each.
    places: Mutex<HashMap<Origin, Arc<Semaphore>>>,
    /// `salesforce.max_connections_per_origin`.
    max_per_origin: usize,
    /// Idle connections kept per origin; one given back beyond this is closed.
    per_origin: usize,
    /// An idle connection older than this is closed, not reused: servers (Salesforce's
    /// included) close idle keep-alive connections, and a request sent just as they do fails.
    idle_timeout: Duration,
}

impl Pool {
    fn is_stale(&self, idle: &Idle, now: Instant) -> bool {
        idle.conn.sender.is_closed()
            || now.saturating_duration_since(idle.since) > self.idle_timeout
    }

    /// A place for a new connection to `origin`, if one is free now.
    fn try_place(&self, origin: &Origin) -> Option<OwnedSemaphorePermit> {
        let places = self
            .places
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(origin.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_per_origin)))
            .clone();
        places.try_acquire_owned().ok()
    }
}

/// How long a request waits for a connection to its origin when
/// `salesforce.max_connections_per_origin` are open, before it is refused.
const CONNECTION_WAIT: Duration = Duration::from_millis(100);
/// How often a waiting request looks again for an idle connection or a free place.
const CONNECTION_WAIT_STEP: Duration = Duration::from_millis(5);

/// An open connection and the place under `salesforce.max_connections_per_origin` it holds
/// until it is dropped.
struct Conn {
    sender: SendRequest<Body>,
    _place: OwnedSemaphorePermit,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Http {
    pub fn new(
        settings: &SalesforceSettings,
        https_proxy: Option<OutboundProxy>,
        roots: Arc<RootCertStore>,
    ) -> Http {
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Http {
            https_proxy,
            connect_to: settings.connect_to.clone(),
            pool: Arc::new(Pool {
                idle: Mutex::default(),
                places: Mutex::default(),
                max_per_origin: settings.max_connections_per_origin,
                per_origin: settings.idle_connections_per_origin,
                idle_timeout: settings.idle_timeout_secs,
            }),
            tls: TlsConnector::from(Arc::new(config)),
            connect_timeout: settings.connect_timeout_ms,
            read_timeout: settings.read_timeout_secs,
            user_agent: HeaderValue::from_static(concat!(
                "sfbulk-proxy/",
                env!("CARGO_PKG_VERSION")
            )),
        }
    }

    /// Connections to Salesforce now, idle and open (idle or busy), over every origin.
    pub fn connections(&self) -> (i64, i64) {
        let idle: usize = self
            .pool
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Vec::len)
            .sum();
        let open: usize = self
            .pool
            .places
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|places| self.pool.max_per_origin - places.available_permits())
            .sum();
        (idle as i64, open as i64)
    }

    /// Sends `request` (its URI a path and query) to `origin`, on an idle connection when there
    /// is one. A request an idle connection could not take (Salesforce had just closed it) is
    /// sent once more on a new connection; nothing that may have reached Salesforce is resent.
    pub async fn send(
        &self,
        origin: &Origin,
        mut request: Request<Body>,
    ) -> Result<Response<UpstreamBody>, HttpError> {
        let headers = request.headers_mut();
        headers.insert(header::HOST, origin.host_header().clone());
        headers.insert(header::USER_AGENT, self.user_agent.clone());
        headers
            .entry(header::ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        let (mut conn, reused) = self.obtain(origin).await?;
        let response = match conn.sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut refused) => match refused.take_message() {
                Some(request) if reused => {
                    tracing::debug!(%origin, "an idle connection was closed; using a new one");
                    drop(conn);
                    conn = self.fresh(origin).await?;
                    conn.sender
                        .send_request(request)
                        .await
                        .map_err(|e| HttpError::exchange(&e))?
                }
                _ => return Err(HttpError::exchange(refused.error())),
            },
        };
        let (head, body) = response.into_parts();
        let mut body = UpstreamBody {
            inner: body,
            keep: Some(Checkin {
                pool: self.pool.clone(),
                origin: origin.clone(),
                conn,
            }),
            read_timeout: self.read_timeout,
            silence: None,
            waiting: false,
            deadline: crate::common::request_id::current_deadline(),
        };
        if hyper::body::Body::is_end_stream(&body.inner) {
            body.check_in();
        }
        Ok(Response::from_parts(head, body))
    }

    /// A connection for a request: an idle one (`true`), or a new one when a place is free. At
    /// the limit, the request waits up to [`CONNECTION_WAIT`] for either.
    async fn obtain(&self, origin: &Origin) -> Result<(Conn, bool), HttpError> {
        let deadline = Instant::now() + CONNECTION_WAIT;
        loop {
            if let Some(conn) = self.checkout(origin).await {
                return Ok((conn, true));
            }
            if let Some(place) = self.pool.try_place(origin) {
                return Ok((self.connect(origin, place).await?, false));
            }
            self.wait_for_place(deadline).await?;
        }
    }

    /// A new connection, waiting up to [`CONNECTION_WAIT`] for a place.
    async fn fresh(&self, origin: &Origin) -> Result<Conn, HttpError> {
        let deadline = Instant::now() + CONNECTION_WAIT;
        loop {
            if let Some(place) = self.pool.try_place(origin) {
                return self.connect(origin, place).await;
            }
            self.wait_for_place(deadline).await?;
        }
    }

    async fn wait_for_place(&self, deadline: Instant) -> Result<(), HttpError> {
        if Instant::now() >= deadline {
            return Err(HttpError::NoConnectionFree(self.pool.max_per_origin));
        }
        tokio::time::sleep(CONNECTION_WAIT_STEP).await;
        Ok(())
    }

    /// The most recently used idle connection to `origin` that can take a request.
    async fn checkout(&self, origin: &Origin) -> Option<Conn> {
        loop {
            let idle = self
                .pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(origin)
                .and_then(Vec::pop)?;
            if self.pool.is_stale(&idle, Instant::now()) {
                continue;
            }
            let mut conn = idle.conn;
            // Ready at once, unless the connection is still finishing the answer it was
            // given back after.
            if conn.sender.ready().await.is_ok() {
                return Some(conn);
            }
        }
    }

    /// A TCP connection straight to `origin`, or to where `connect_to` sends it.
    async fn direct(&self, origin: &Origin) -> std::io::Result<TcpStream> {
        match &self.connect_to {
            Some(to) if to.origin == origin.as_str() => TcpStream::connect(to.address).await,
            _ => TcpStream::connect((origin.host(), origin.port())).await,
        }
    }

    /// A new connection to `origin`. Boxed: connecting (with TLS) is a large future, and a
    /// request that reuses a connection should not carry it.
    fn connect<'a>(
        &'a self,
        origin: &'a Origin,
        place: OwnedSemaphorePermit,
    ) -> BoxFuture<'a, Result<Conn, HttpError>> {
        Box::pin(async move {
            let connecting = async {
                let connect_error = |source| HttpError::Connect {
                    origin: origin.to_string(),
                    source,
                };
                if !origin.is_https() {
                    let tcp = self.direct(origin).await.map_err(connect_error)?;
                    let _ = tcp.set_nodelay(true);
                    return handshake(tcp).await;
                }
                let route = self
                    .https_proxy
                    .as_ref()
                    .and_then(|p| Some((p, p.route(origin)?)));
                let tcp = match route {
                    None => self.direct(origin).await,
                    Some((proxy, route)) => tunnel(proxy, route, origin).await,
                }
                .map_err(connect_error)?;
                let _ = tcp.set_nodelay(true);
                let name = ServerName::try_from(origin.host().to_string()).map_err(|e| {
                    connect_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                })?;
                let tls = self.tls.connect(name, tcp).await.map_err(connect_error)?;
                handshake(tls).await
            };
            let sender = tokio::time::timeout(self.connect_timeout, connecting)
                .await
                .map_err(|_| HttpError::ConnectTimeout(self.connect_timeout))??;
            Ok(Conn {
                sender,
                _place: place,
            })
        })
    }
}

/// A connection to `origin` through an HTTP proxy's `CONNECT` tunnel (hyper-util's), quoting
/// the proxy's status line when it refuses.
async fn tunnel(
    proxy: &OutboundProxy,
    route: Route,
    origin: &Origin,
) -> std::io::Result<TcpStream> {
    use hyper_util::client::legacy::connect::proxy::Tunnel;
    use tower_service::Service;
    let answer = Arc::new(Mutex::new(Vec::new()));
    let mut tunnel = Tunnel::new(
        route.proxy,
        ProxyDial {
            answer: answer.clone(),
        },
    );
    if let Some(authorization) = route.authorization {
        tunnel = tunnel.with_auth(authorization);
    }
    let target = if origin.host().contains(':') {
        format!("[{}]:{}", origin.host(), origin.port())
    } else {
        format!("{}:{}", origin.host(), origin.port())
    };
    let destination = Uri::try_from(format!("https://{target}/"))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let refused = match tunnel.call(destination).await {
        Ok(tunnelled) => return Ok(tunnelled.into_inner().stream),
        Err(refused) => refused,
    };
    // Reaching the proxy, or talking to it, failed: an io error underneath.
    let io = std::error::Error::source(&refused).and_then(|s| s.downcast_ref::<std::io::Error>());
    if let Some(io) = io {
        return Err(std::io::Error::new(
            io.kind(),
            format!("the proxy {}: {io}", proxy.shown()),
        ));
    }
    let answer = answer.lock().unwrap_or_else(|e| e.into_inner());
    let status_line = String::from_utf8_lossy(&answer);
    let status_line = status_line.lines().next().unwrap_or_default();
    Err(std::io::Error::other(format!(
        "the proxy {} refused CONNECT {target}: {}",
        proxy.shown(),
        if status_line.is_empty() {
            refused.to_string()
        } else {
            crate::common::redact::quotable(status_line)
        }
    )))
}

/// The most of a proxy's answer to `CONNECT` kept, to quote its status line.
const PROXY_ANSWER_KEPT: usize = 1024;

/// Connects to the proxy, for hyper-util's [`Tunnel`](hyper_util::client::legacy::connect::proxy::Tunnel).
struct ProxyDial {
    answer: Arc<Mutex<Vec<u8>>>,
}

impl tower_service::Service<Uri> for ProxyDial {
    type Response = TokioIo<KeepsAnswer>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, std::io::Result<TokioIo<KeepsAnswer>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, proxy: Uri) -> Self::Future {
        let answer = self.answer.clone();
        Box::pin(async move {
            let host = proxy.host().unwrap_or_default().trim_matches(['[', ']']);
            let port = proxy.port_u16().unwrap_or(80);
            let stream = TcpStream::connect((host, port)).await?;
            Ok(TokioIo::new(KeepsAnswer { stream, answer }))
        })
    }
}

/// The connection to the proxy, keeping the first bytes it answers.
struct KeepsAnswer {
    stream: TcpStream,
    answer: Arc<Mutex<Vec<u8>>>,
}

impl tokio::io::AsyncRead for KeepsAnswer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        let mut answer = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        let room = PROXY_ANSWER_KEPT.saturating_sub(answer.len());
        let read = &buf.filled()[before..];
        answer.extend_from_slice(&read[..read.len().min(room)]);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for KeepsAnswer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Body>, HttpError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| HttpError::exchange(&e))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "Salesforce connection ended");
        }
    });
    Ok(sender)
}

/// A connection to give back to the pool once its answer has been read.
struct Checkin {
    pool: Arc<Pool>,
    origin: Origin,
    conn: Conn,
}

/// An answer's body: gives its connection back to the pool at its end, and fails if Salesforce
/// is silent for longer than the read timeout.
pub struct UpstreamBody {
    inner: Incoming,
    keep: Option<Checkin>,
    read_timeout: Duration,
    /// Started when a read has to wait; set again at the first wait after a frame, so the time
    /// the reader took between frames (a caller reading slowly, a page held back for its turn)
    /// is never counted as Salesforce's silence.
    silence: Option<Pin<Box<Sleep>>>,
    /// `silence` runs from the current wait (not from a wait before the last frame).
    waiting: bool,
    /// When the caller's answer must have ended (`salesforce.max_answer_secs`): the body fails
    /// then, however its bytes trickle.
    deadline: Option<tokio::time::Instant>,
}

impl UpstreamBody {
    /// When a read waiting from `now` gives up: at the read timeout, or the answer's deadline.
    fn next_wake(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        let silent = now + self.read_timeout;
        self.deadline
            .map_or(silent, |deadline| silent.min(deadline))
    }

    fn check_in(&mut self) {
        let Some(checkin) = self.keep.take() else {
            return;
        };
        let now = Instant::now();
        let mut idle = checkin.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(checkin.origin).or_default();
        // The most recently used connections are taken first, so the oldest wait at the bottom:
        // once the oldest is stale, the stale ones are closed.
        if list
            .first()
            .is_some_and(|oldest| checkin.pool.is_stale(oldest, now))
        {
            list.retain(|idle| !checkin.pool.is_stale(idle, now));
        }
        if list.len() < checkin.pool.per_origin {
            list.push(Idle {
                conn: checkin.conn,
                since: now,
            });
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let now = tokio::time::Instant::now();
                // The last frame of a finished answer goes through whatever the time.
                let last = hyper::body::Body::is_end_stream(&this.inner);
                if !last && this.deadline.is_some_and(|deadline| now >= deadline) {
                    this.keep = None;
                    return Poll::Ready(Some(Err(HttpError::AnswerTooLong)));
                }
                this.waiting = false;
                if hyper::body::Body::is_end_stream(&this.inner) {
                    this.check_in();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.keep = None;
                Poll::Ready(Some(Err(HttpError::exchange(&error))))
            }
            Poll::Ready(None) => {
                this.check_in();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let wake = this.next_wake(tokio::time::Instant::now());
                let silence = this
                    .silence
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(wake)));
                if !this.waiting {
                    this.waiting = true;
                    silence.as_mut().reset(wake);
                }
                ready!(silence.as_mut().poll(cx));
                this.keep = None;
                let too_long = this
                    .deadline
                    .is_some_and(|deadline| tokio::time::Instant::now() >= deadline);
                Poll::Ready(Some(Err(if too_long {
                    HttpError::AnswerTooLong
                } else {
                    HttpError::ReadTimeout(this.read_timeout)
                })))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}
