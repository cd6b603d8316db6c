//! A camera for the agent to talk to: an axum HTTP server on 127.0.0.1:0 that streams what
//! the test scripts (fixture bytes in chunks with pauses, generated parts, heartbeats, a
//! dropped connection), with Digest or Basic authentication like the real ones; an ONVIF
//! event service; and a minimal RTSP responder for the `OPTIONS` probe.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use firegrid_camera::{CameraSignal, ExtraCodes, Vendor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "secret";
const NONCE: &str = "4e6f6e63652d666f722d66697265677269642d7465737473";

/// What the camera does next on the current event stream.
pub enum Step {
    /// Sends `bytes` in pieces of `chunk` bytes, pausing `pause` between them.
    Chunked { bytes: Vec<u8>, chunk: usize, pause: Duration },
    /// Ends this response cleanly: the camera closes the connection.
    Close,
    /// Breaks this response mid-stream.
    Abort,
}

impl Step {
    /// One vendor part (or ONVIF document) for `signal`, in one piece.
    pub fn signal(vendor: Vendor, signal: CameraSignal) -> Step {
        let bytes = vendor.encode(&signal, &ExtraCodes::new(), 1_763_860_000_000).unwrap();
        Step::Chunked { bytes, chunk: usize::MAX, pause: Duration::ZERO }
    }
}

/// Which authentication the camera asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Digest,
    Basic,
}

struct Shared {
    vendor: Vendor,
    auth: Auth,
    /// Steps for the event stream; each connection takes from the same queue.
    steps: Mutex<mpsc::UnboundedReceiver<Step>>,
    heartbeat: Duration,
    connections: AtomicUsize,
    challenges: AtomicUsize,
    pulls: AtomicUsize,
}

/// The running camera.
pub struct Camera {
    pub addr: SocketAddr,
    steps: mpsc::UnboundedSender<Step>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Camera {
    /// Starts a camera of `vendor` that sends a heartbeat every `heartbeat` while idle.
    pub async fn start(vendor: Vendor, auth: Auth, heartbeat: Duration) -> Camera {
        let (steps, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            vendor,
            auth,
            steps: Mutex::new(rx),
            heartbeat,
            connections: AtomicUsize::new(0),
            challenges: AtomicUsize::new(0),
            pulls: AtomicUsize::new(0),
        });
        let app = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Camera { addr, steps, shared, server }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn send(&self, step: Step) {
        self.steps.send(step).unwrap();
    }

    /// Event streams opened (requests that passed authentication).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Authentication challenges (401 answers) sent.
    pub fn challenges(&self) -> usize {
        self.shared.challenges.load(Ordering::SeqCst)
    }

    /// ONVIF pulls answered.
    pub fn pulls(&self) -> usize {
        self.shared.pulls.load(Ordering::SeqCst)
    }
}

fn authorized(shared: &Shared, method: &Method, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    match shared.auth {
        // base64("admin:secret")
        Auth::Basic => value == "Basic YWRtaW46c2VjcmV0",
        Auth::Digest => {
            let Ok(answer) = digest_auth::AuthorizationHeader::parse(value) else {
                return false;
            };
            let mut expected = answer.clone();
            let context = digest_auth::AuthContext::new_with_method(
                USER,
                PASSWORD,
                answer.uri.as_str(),
                None::<&[u8]>,
                digest_auth::HttpMethod::from(method.as_str()),
            );
            expected.digest(&context);
            answer.nonce == NONCE && answer.username == USER && expected.response == answer.response
        }
    }
}

fn challenge(shared: &Shared) -> Response {
    shared.challenges.fetch_add(1, Ordering::SeqCst);
    let value = match shared.auth {
        Auth::Digest => {
            format!("Digest realm=\"IP Camera(FG001)\", qop=\"auth\", nonce=\"{NONCE}\", stale=\"FALSE\"")
        }
        Auth::Basic => "Basic realm=\"IP Camera\"".to_owned(),
    };
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, value)]).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&shared, &method, &headers) {
        return challenge(&shared);
    }
    let path = uri.path().to_owned();
    match (shared.vendor, path.as_str()) {
        (Vendor::Hikvision, "/ISAPI/Event/notification/alertStream") => {
            stream(shared, "multipart/mixed; boundary=boundary")
        }
        (Vendor::Dahua, "/cgi-bin/eventManager.cgi")
            if uri.query().is_some_and(|q| q.contains("action=attach")) =>
        {
            stream(shared, "multipart/x-mixed-replace; boundary=myboundary")
        }
        (Vendor::Onvif, "/onvif/event_service") => {
            assert!(String::from_utf8_lossy(&body).contains("CreatePullPointSubscription"));
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let address = format!("http://{}/onvif/subscription/1", headers[header::HOST].to_str().unwrap());
            soap(
                firegrid_camera::vendor::onvif::subscription_response(&address, 1_763_860_000_000)
                    .into_bytes(),
            )
        }
        (Vendor::Onvif, "/onvif/subscription/1") => {
            assert!(String::from_utf8_lossy(&body).contains("PullMessages"));
            shared.pulls.fetch_add(1, Ordering::SeqCst);
            // The next scripted document, or an empty answer when the pull times out.
            let mut steps = shared.steps.lock().await;
            let next = tokio::time::timeout(shared.heartbeat, steps.recv()).await;
            match next {
                Ok(Some(Step::Chunked { bytes, .. })) => soap(bytes),
                Ok(Some(Step::Close | Step::Abort)) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                Ok(None) | Err(_) => {
                    soap(firegrid_camera::vendor::onvif::encode(&[], &ExtraCodes::new(), 0).unwrap())
                }
            }
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn soap(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/soap+xml; charset=utf-8")], bytes).into_response()
}

/// A multipart event stream fed from the step queue, with heartbeats while idle.
///
/// Only the newest connection takes steps: a connection the agent abandoned may linger on
/// the server until its next write fails, and must not swallow what the test meant for the
/// new one.
fn stream(shared: Arc<Shared>, content_type: &'static str) -> Response {
    let id = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let heartbeat = shared.vendor.encode(&CameraSignal::heartbeat(), &ExtraCodes::new(), 0).unwrap();
        loop {
            if shared.connections.load(Ordering::SeqCst) != id {
                return;
            }
            let step = {
                let mut steps = shared.steps.lock().await;
                tokio::select! {
                    () = tx.closed() => return,
                    step = tokio::time::timeout(shared.heartbeat, steps.recv()) => step,
                }
            };
            match step {
                Err(_) => {
                    if tx.send(Ok(Bytes::from(heartbeat.clone()))).await.is_err() {
                        return;
                    }
                }
                Ok(None) | Ok(Some(Step::Close)) => return,
                Ok(Some(Step::Abort)) => {
                    // Let what was sent reach the wire first, as it would from a camera.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = tx.send(Err(std::io::Error::other("camera reset"))).await;
                    return;
                }
                Ok(Some(Step::Chunked { bytes, chunk, pause })) => {
                    for piece in bytes.chunks(chunk.max(1)) {
                        if tx.send(Ok(Bytes::copy_from_slice(piece))).await.is_err() {
                            return;
                        }
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A minimal RTSP server: answers every request with `200 OK` and counts `OPTIONS`.
pub struct Rtsp {
    pub port: u16,
    pub options: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Rtsp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Rtsp {
    pub async fn start() -> Rtsp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let options = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&options);
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 512];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    if request.starts_with(b"OPTIONS rtsp://") {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = socket
                        .write_all(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n")
                        .await;
                });
            }
        });
        Rtsp { port, options, task }
    }
}

/// A loopback port nothing listens on (it was free a moment ago).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
