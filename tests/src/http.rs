//! A real HTTP/1.1 server for the http capability's tests, on a loopback
//! port, with TLS from a test CA made per run: it records every request it
//! receives and answers as the test tells it (a status and body, a
//! redirect, an echo of the request, a huge or a slow body). Threads and
//! blocking I/O; no async runtime.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA made for one test, and a server certificate it signed for
/// `localhost` and `127.0.0.1`.
pub struct TestCa {
    /// The CA certificate, PEM, written to `ca_file`.
    pub ca_pem: String,
    /// Where `ca_pem` is.
    pub ca_file: PathBuf,
    cert: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestCa {
    /// A new CA, its certificate written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "returner-host test CA");
        let ca = ca_params.self_signed(&ca_key).expect("a CA certificate");
        let key = rcgen::KeyPair::generate().expect("a server key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        params.subject_alt_names.push(rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        let cert = params.signed_by(&key, &ca, &ca_key).expect("a server certificate");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("writing ca.pem");
        Self { ca_pem: ca.pem(), ca_file, cert: cert.der().clone(), key_der: key.serialize_der() }
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .expect("a server certificate and key");
        Arc::new(config)
    }
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// Header names (as sent) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Received {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body of {} {} is not JSON ({e}): {}", self.method, self.target, String::from_utf8_lossy(&self.body)))
    }
}

/// What the server answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A status, extra headers and a body.
    Status(u16, Vec<(String, String)>, Vec<u8>),
    /// The request line and headers back as the body (an echo server).
    Echo,
    /// A body of `n` bytes with its Content-Length.
    Huge(u64),
    /// A body of `n` bytes without a Content-Length (chunked).
    HugeChunked(u64),
    /// A status line and headers, then one body byte every `every`, `n` times.
    Slow { every: Duration, n: usize },
    /// Close the connection without answering.
    Hangup,
}

impl Reply {
    /// `status` with a JSON body.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Reply::Status(status, vec![("Content-Type".into(), "application/json".into())], body.to_string().into_bytes())
    }
}

type Handler = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// A running server. Stops when dropped.
pub struct HttpServer {
    port: u16,
    tls: Option<Arc<rustls::ServerConfig>>,
    received: Arc<Mutex<Vec<Received>>>,
    handler: Arc<Mutex<Handler>>,
    running: Option<Running>,
}

struct Running {
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: std::thread::JoinHandle<()>,
}

impl HttpServer {
    /// A server on a free loopback port answering 200 `{}`; TLS with `ca`'s
    /// certificate when given.
    pub fn start(ca: Option<&TestCa>) -> Self {
        let mut server = Self {
            port: crate::free_port(),
            tls: ca.map(TestCa::server_config),
            received: Arc::default(),
            handler: Arc::new(Mutex::new(Arc::new(|_: &Received| Reply::json(200, serde_json::json!({}))))),
            running: None,
        };
        server.resume();
        server
    }

    /// Its base URL, `https://127.0.0.1:PORT` (or `http://`).
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.tls.is_some() { "https" } else { "http" }, self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answer every later request with `f`.
    pub fn answer(&self, f: impl Fn(&Received) -> Reply + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Arc::new(f);
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Forget the requests received so far.
    pub fn clear(&self) {
        self.received.lock().unwrap().clear();
    }

    /// Stop listening and close every connection: the endpoint is down
    /// (connections are refused) until [`HttpServer::resume`].
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(("127.0.0.1", self.port));
            let _ = running.thread.join();
            for c in running.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }

    /// Listen again on the same port.
    pub fn resume(&mut self) {
        assert!(self.running.is_none(), "the server is running");
        let listener = bind_retrying(self.port);
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (tls, received, handler) = (self.tls.clone(), self.received.clone(), self.handler.clone());
        let (stop2, conns2) = (stop.clone(), conns.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if let Ok(clone) = stream.try_clone() {
                    conns2.lock().unwrap().push(clone);
                }
                let (tls, received, handler) = (tls.clone(), received.clone(), handler.clone());
                std::thread::spawn(move || serve(stream, tls, &received, &handler));
            }
        });
        self.running = Some(Running { stop, conns, thread });
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind_retrying(port: u16) -> TcpListener {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return l;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("cannot listen on 127.0.0.1:{port} again")
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

fn serve(stream: TcpStream, tls: Option<Arc<rustls::ServerConfig>>, received: &Mutex<Vec<Received>>, handler: &Mutex<Handler>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let io: Box<dyn Stream> = match tls {
        Some(config) => {
            let Ok(conn) = rustls::ServerConnection::new(config) else { return };
            Box::new(rustls::StreamOwned::new(conn, stream))
        }
        None => Box::new(stream),
    };
    let mut reader = BufReader::new(io);
    loop {
        let Some(request) = read_request(&mut reader) else { return };
        received.lock().unwrap().push(request.clone());
        let reply = (handler.lock().unwrap().clone())(&request);
        if write_reply(reader.get_mut(), &request, reply).is_err() {
            return;
        }
    }
}

fn read_request(r: &mut BufReader<Box<dyn Stream>>) -> Option<Received> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.to_owned(), v.trim().to_owned()));
    }
    let get = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0; n];
        r.read_exact(&mut body).ok()?;
    }
    Some(Received { method, target, headers, body })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_reply(w: &mut Box<dyn Stream>, request: &Received, reply: Reply) -> std::io::Result<()> {
    let head = |status: u16, headers: &[(String, String)], len: Option<u64>| {
        let mut h = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (n, v) in headers {
            h.push_str(&format!("{n}: {v}\r\n"));
        }
        match len {
            Some(n) => h.push_str(&format!("Content-Length: {n}\r\n\r\n")),
            None => h.push_str("Transfer-Encoding: chunked\r\n\r\n"),
        }
        h.into_bytes()
    };
    let no_body = request.method == "HEAD";
    match reply {
        Reply::Status(status, headers, body) => {
            w.write_all(&head(status, &headers, Some(body.len() as u64)))?;
            if !no_body {
                w.write_all(&body)?;
            }
        }
        Reply::Echo => {
            let mut body = format!("{} {}\n", request.method, request.target);
            for (n, v) in &request.headers {
                body.push_str(&format!("{n}: {v}\n"));
            }
            w.write_all(&head(200, &[], Some(body.len() as u64)))?;
            w.write_all(body.as_bytes())?;
        }
        Reply::Huge(n) => {
            w.write_all(&head(200, &[], Some(n)))?;
            let block = vec![b'x'; 64 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(block.len() as u64) as usize;
                w.write_all(&block[..k])?;
                left -= k as u64;
            }
        }
        Reply::HugeChunked(n) => {
            w.write_all(&head(200, &[], None))?;
            let block = vec![b'x'; 64 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(block.len() as u64) as usize;
                w.write_all(format!("{k:x}\r\n").as_bytes())?;
                w.write_all(&block[..k])?;
                w.write_all(b"\r\n")?;
                left -= k as u64;
            }
            w.write_all(b"0\r\n\r\n")?;
        }
        Reply::Slow { every, n } => {
            w.write_all(&head(200, &[], Some(n as u64)))?;
            w.flush()?;
            for _ in 0..n {
                std::thread::sleep(every);
                w.write_all(b"x")?;
                w.flush()?;
            }
        }
        Reply::Hangup => return Err(std::io::Error::other("hung up")),
    }
    w.flush()
}
