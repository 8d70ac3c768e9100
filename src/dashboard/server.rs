//! Requests: limits, auth, routes, security headers; and the accept loop
//! that exits when nobody has connected for `[web] idle_exit`.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use super::auth::Auth;
use super::data::Source;
use super::host::{Allowed, Refusal};
use super::{metrics, pages};
use crate::config::Settings;
use crate::store::Store;
use crate::time;

/// A client must send the first byte of its request within this, and
/// then the whole head within this again (hyper's timer; also between
/// requests on a keep-alive connection). A browser sends it in one packet.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer, keep-alive included.
const CONNECTION_MAX: Duration = Duration::from_secs(60);
/// Connections open at once. When all are taken, a new one closes the one
/// that has waited longest for a request ([`Slots::make_room`]), so silent
/// or dripping clients cannot lock visitors out. Memory decides the number:
/// measured, a silent connection costs about 9 KiB of resident memory and
/// one that sent a byte (hyper's 8 KiB read buffer) 14 KiB, and a flood
/// that reopens what is closed adds the allocator's churn: 48 slots peaked
/// at 6160 KiB under such a flood, 32 stay under the 6 MB goal with the
/// dashboard's own 4.8 MB (README, "Benchmarks").
const MAX_CONNECTIONS: usize = 32;
/// Request line and headers together (hyper answers 431 or 414 beyond).
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 48;

/// What every request needs, for the life of the process.
pub struct App {
    settings: Settings,
    store_path: PathBuf,
    /// Opened on the first request that finds a store (it may appear later).
    store: RefCell<Option<Rc<Store>>>,
    /// The last reason it could not be opened (logged once).
    store_error: RefCell<Option<String>>,
    auth: Option<Auth>,
    host: String,
    /// The names a request may be for (DNS rebinding).
    allowed: Allowed,
    csp: HeaderValue,
}

type Reply = Response<Full<Bytes>>;

impl App {
    pub fn new(settings: Settings, store_path: PathBuf, auth: Option<Auth>) -> App {
        let style_hash = Sha256::digest(pages::STYLE.as_bytes());
        let csp = format!(
            "default-src 'none'; style-src 'sha256-{}'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            base64::engine::general_purpose::STANDARD.encode(style_hash)
        );
        let host = hostname();
        App {
            allowed: Allowed::new(&settings.web, &host),
            settings,
            store_path,
            store: RefCell::new(None),
            store_error: RefCell::new(None),
            auth,
            host,
            csp: HeaderValue::from_str(&csp).expect("ASCII"),
        }
    }

    fn store(&self) -> Result<Rc<Store>, String> {
        if let Some(s) = self.store.borrow().as_ref() {
            return Ok(s.clone());
        }
        match Store::open_read_only(&self.store_path) {
            Ok(Some(s)) => {
                let s = Rc::new(s);
                *self.store.borrow_mut() = Some(s.clone());
                Ok(s)
            }
            Ok(None) => Err(format!(
                "there is no store at {} yet; it appears with the first run of pimainteno.service",
                self.store_path.display()
            )),
            Err(e) => {
                let text = format!("{e:#}");
                // Once per process, not once per page view.
                if self.store_error.replace(Some(text.clone())).as_ref() != Some(&text) {
                    tracing::warn!("{text}");
                }
                Err(text)
            }
        }
    }

    fn frame(&self) -> pages::Frame<'_> {
        pages::Frame {
            host: &self.host,
            now_ms: time::now_ms(),
        }
    }

    fn reply(&self, status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
        let mut r = Response::new(Full::new(body.into()));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("ASCII"),
        );
        h.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        // Live data: never from a cache.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    fn html(&self, status: StatusCode, body: String) -> Reply {
        self.reply(status, "text/html; charset=utf-8", body)
    }

    fn json(&self, value: &impl Serialize) -> Reply {
        match serde_json::to_vec_pretty(value) {
            Ok(body) => self.reply(StatusCode::OK, "application/json", body),
            Err(e) => self.error(&anyhow::Error::new(e), true),
        }
    }

    fn plain(&self, status: StatusCode, text: &str) -> Reply {
        self.reply(status, "text/plain; charset=utf-8", format!("{text}\n"))
    }

    fn not_found(&self, api: bool, what: &str) -> Reply {
        if api {
            let mut r = self.json(&serde_json::json!({ "error": what }));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        } else {
            self.html(
                StatusCode::NOT_FOUND,
                pages::message(&self.frame(), "Not found", what),
            )
        }
    }

    fn error(&self, e: &anyhow::Error, api: bool) -> Reply {
        tracing::warn!("{e:#}");
        let text = format!("{e:#}");
        let mut r = if api {
            self.json(&serde_json::json!({ "error": text }))
        } else {
            self.html(
                StatusCode::OK,
                pages::message(&self.frame(), "Cannot read the data", &text),
            )
        };
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    }

    /// The refusal of a request that does not name this dashboard (see
    /// [`super::host`]), judged by the request target's authority when it
    /// has one (it overrides `Host`), else by the one `Host` header, which
    /// HTTP/1.1 requires.
    fn refuse_host<B>(&self, req: &Request<B>, local: IpAddr) -> Option<Reply> {
        let mut hosts = req.headers().get_all(header::HOST).iter();
        let authority = match (req.uri().authority(), hosts.next(), hosts.next()) {
            (Some(a), _, _) => a.as_str(),
            (None, Some(h), None) => match h.to_str() {
                Ok(h) => h,
                Err(_) => return Some(self.bad_host()),
            },
            (None, None, _) if req.version() < hyper::Version::HTTP_11 => return None,
            _ => return Some(self.bad_host()),
        };
        match self.allowed.check(authority, local) {
            Ok(()) => None,
            Err(Refusal::Malformed) => Some(self.bad_host()),
            Err(Refusal::Unknown) => {
                tracing::debug!("refused a request for another host name (421)");
                Some(self.plain(
                    StatusCode::MISDIRECTED_REQUEST,
                    "this dashboard does not answer to that host name; add it to [web] allowed_hosts",
                ))
            }
        }
    }

    fn bad_host(&self) -> Reply {
        self.plain(
            StatusCode::BAD_REQUEST,
            "a request needs one Host header with a host name",
        )
    }

    /// Answer one request that arrived on the local address `local`. Never
    /// panics on input: every path, method and header combination ends in
    /// a status.
    pub fn handle<B>(&self, req: &Request<B>, local: IpAddr) -> Reply {
        if let Some(refused) = self.refuse_host(req, local) {
            return refused;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = self.plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD: the dashboard is read-only",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
            || req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        if has_body {
            return self.plain(StatusCode::PAYLOAD_TOO_LARGE, "requests have no body here");
        }
        let path = req.uri().path();
        if path == "/healthz" {
            return self.plain(StatusCode::OK, "ok");
        }
        if let Some(auth) = &self.auth
            && !auth.allows(
                req.headers()
                    .get(header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
            )
        {
            let mut r = self.plain(
                StatusCode::UNAUTHORIZED,
                "a user name and password are needed",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"PiMainteno\", charset=\"UTF-8\""),
            );
            return r;
        }
        let segments: Option<Vec<String>> = path
            .strip_prefix('/')
            .unwrap_or(path)
            .split('/')
            .map(|s| {
                percent_decode_str(s)
                    .decode_utf8()
                    .ok()
                    .map(|c| c.into_owned())
            })
            .collect();
        let Some(segments) = segments else {
            return self.plain(StatusCode::BAD_REQUEST, "the path is not UTF-8");
        };
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let api = segs.first() == Some(&"api");
        match self.route(&segs) {
            Ok(Some(r)) => r,
            Ok(None) => self.not_found(api, &format!("nothing at {path}")),
            Err(e) => self.error(&e, api),
        }
    }

    fn route(&self, segs: &[&str]) -> anyhow::Result<Option<Reply>> {
        let store = self.store();
        let src = Source {
            settings: &self.settings,
            store: store.as_deref().map_err(Clone::clone),
            store_fault: crate::onfailure::store_fault(
                &crate::onfailure::rundir::RunDir::from_env(),
            ),
        };
        let frame = self.frame();
        let ok = |body: String| Some(self.html(StatusCode::OK, body));
        // Ids are `<owner>/<time key>`: the rest of the path, joined again.
        let rest = |from: usize| segs[from..].join("/");
        Ok(match segs {
            [""] => ok(pages::overview(&frame, &src.overview()?)),
            ["project", name] => src
                .project_page(name)?
                .map(|p| pages::project(&frame, &p))
                .and_then(ok),
            ["unit", name] => src
                .unit_page(name)?
                .map(|p| pages::unit(&frame, &p))
                .and_then(ok),
            ["failure", _, ..] => src
                .failure_page(&rest(1))?
                .map(|p| pages::failure(&frame, &p))
                .and_then(ok),
            ["patch", _, ..] => src
                .patch_page(&rest(1))?
                .map(|p| pages::patch(&frame, &p))
                .and_then(ok),
            ["metrics"] => {
                let body = metrics::render(&src.overview()?, &src.counts()?)?;
                Some(self.reply(StatusCode::OK, metrics::CONTENT_TYPE, body))
            }
            ["api", "v1", "overview"] => Some(self.json(&src.overview()?)),
            ["api", "v1", "projects"] => Some(self.json(&src.projects()?)),
            ["api", "v1", "projects", name] => src.project_page(name)?.map(|p| self.json(&p)),
            ["api", "v1", "units"] => Some(self.json(&src.units()?)),
            ["api", "v1", "units", name] => src.unit_page(name)?.map(|p| self.json(&p)),
            ["api", "v1", "failures", _, ..] => src.failure_page(&rest(3))?.map(|p| self.json(&p)),
            ["api", "v1", "patches", _, ..] => src.patch_page(&rest(3))?.map(|p| self.json(&p)),
            _ => None,
        })
    }
}

/// The machine's name for the page header. uname(2), not
/// /proc/sys/kernel/hostname: the unit's ProcSubset=pid hides /proc/sys.
fn hostname() -> String {
    // SAFETY: utsname is plain data; uname fills it or fails.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "this machine".into();
    }
    // SAFETY: nodename is NUL-terminated by uname.
    let name = unsafe { std::ffi::CStr::from_ptr(uts.nodename.as_ptr()) };
    match name.to_string_lossy().trim() {
        "" => "this machine".into(),
        n => n.to_string(),
    }
}

/// One open connection, as [`Slots`] sees it.
struct Slot {
    id: u64,
    /// When it was accepted, or when its last request head arrived.
    since: Cell<Instant>,
    /// Whether a whole request head has arrived on it.
    served: Cell<bool>,
}

/// The open connections, at most [`MAX_CONNECTIONS`].
#[derive(Default)]
struct Slots {
    open: RefCell<Vec<(Rc<Slot>, tokio::task::AbortHandle)>>,
    next_id: Cell<u64>,
}

impl Slots {
    fn len(&self) -> usize {
        self.open.borrow().len()
    }

    fn remove(&self, id: u64) {
        self.open.borrow_mut().retain(|(s, _)| s.id != id);
    }

    /// With every slot taken, close the connection that has waited longest
    /// for a request, preferring those that never sent a whole one: a
    /// silent or dripping client goes before a visitor's keep-alive
    /// connection, and a visitor who has just sent a request goes last.
    /// (Per-address limits would not do: every local client is 127.0.0.1.)
    /// True when it closed one.
    fn make_room(&self) -> bool {
        let mut closed = false;
        while self.len() >= MAX_CONNECTIONS {
            let victim = {
                let open = self.open.borrow();
                open.iter()
                    .min_by_key(|(s, _)| (s.served.get(), s.since.get()))
                    .map(|(s, task)| (s.id, task.clone()))
            };
            let Some((id, task)) = victim else { break };
            self.remove(id);
            // Dropping the task closes its socket.
            task.abort();
            closed = true;
        }
        closed
    }
}

/// Takes a connection's slot back when its task ends or is aborted.
struct Leave {
    slots: Rc<Slots>,
    id: u64,
    last: Rc<Cell<Instant>>,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.slots.remove(self.id);
        self.last.set(Instant::now());
    }
}

/// Serve until nobody has connected for `idle` (`None`: until killed).
pub async fn serve(listener: TcpListener, app: Rc<App>, idle: Option<Duration>) {
    let slots = Rc::new(Slots::default());
    let last = Rc::new(Cell::new(Instant::now()));
    loop {
        // While connections are open, look again one idle period later.
        let deadline = match idle {
            Some(idle) if slots.len() == 0 => time::deadline(last.get(), idle),
            Some(idle) => time::deadline(Instant::now(), idle),
            None => time::deadline(Instant::now(), Duration::from_secs(86_400)),
        };
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // EMFILE and the like: do not spin on it.
                        tracing::warn!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                last.set(Instant::now());
                let Ok(local) = stream.local_addr().map(|a| a.ip()) else {
                    continue;
                };
                if slots.make_room() {
                    // Let the closed tasks go (their buffers with them)
                    // before more are accepted: a flood of connections
                    // would otherwise keep twice the slots alive at once.
                    tokio::task::yield_now().await;
                }
                // hyper may write head and body separately: without this,
                // Nagle holds the body until the client's delayed ACK (40 ms).
                let _ = stream.set_nodelay(true);
                let id = slots.next_id.get();
                slots.next_id.set(id + 1);
                let slot = Rc::new(Slot {
                    id,
                    since: Cell::new(Instant::now()),
                    served: Cell::new(false),
                });
                let leave = Leave { slots: slots.clone(), id, last: last.clone() };
                let (app, mine) = (app.clone(), slot.clone());
                let task = tokio::task::spawn_local(async move {
                    let _leave = leave;
                    // Nothing is buffered for a client that sends nothing:
                    // hyper allocates its read buffer on its first read.
                    match tokio::time::timeout(HEADER_TIMEOUT, stream.readable()).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                    let service = service_fn(|req: Request<Incoming>| {
                        mine.served.set(true);
                        mine.since.set(Instant::now());
                        let reply = app.handle(&req, local);
                        async move { Ok::<_, Infallible>(reply) }
                    });
                    // Boxed: the task of a silent connection stays small.
                    let conn = Box::pin(http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .max_buf_size(MAX_HEAD)
                        .max_headers(MAX_HEADERS)
                        .serve_connection(TokioIo::new(stream), service));
                    // Errors are the client's (malformed, too large, gone):
                    // hyper has answered what can be answered.
                    let _ = tokio::time::timeout(CONNECTION_MAX, conn).await;
                });
                slots.open.borrow_mut().push((slot, task.abort_handle()));
            }
            _ = tokio::time::sleep_until(deadline.into()), if idle.is_some() => {
                if slots.len() == 0 && last.get().elapsed() >= idle.unwrap_or_default() {
                    return;
                }
            }
        }
    }
}
