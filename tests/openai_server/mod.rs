//! A scripted OpenAI-compatible server on 127.0.0.1 for the provider tests:
//! real sockets, one thread per connection, one request per connection
//! (`Connection: close`), every request recorded.

#![allow(dead_code)] // Each test binary uses a different part of it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;

/// What the server does with the next request.
pub enum Step {
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Read the request, then keep the connection open without a word.
    Hang,
}

impl Step {
    pub fn reply(status: u16, body: impl Into<Vec<u8>>) -> Step {
        Step::Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    /// A successful chat completion with `text` and some usage.
    pub fn answer(text: &str) -> Step {
        let body = serde_json::json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": "test-model",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": 321,
                "completion_tokens": 45,
                "total_tokens": 366,
                "prompt_tokens_details": {"cached_tokens": 300},
                "completion_tokens_details": {"reasoning_tokens": 7}
            }
        });
        Step::reply(200, body.to_string())
    }

    pub fn header(mut self, name: &str, value: &str) -> Step {
        if let Step::Reply { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

struct Shared {
    script: Vec<Step>,
    seen: Vec<Seen>,
}

pub struct Server {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl Server {
    /// Plain http. Requests beyond the script get a 500 (and are recorded).
    pub fn start(script: Vec<Step>) -> Server {
        Self::spawn(script, None)
    }

    /// https with the given certificate.
    pub fn start_tls(script: Vec<Step>, tls: Arc<rustls::ServerConfig>) -> Server {
        Self::spawn(script, Some(tls))
    }

    fn spawn(mut script: Vec<Step>, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        script.reverse(); // popped from the end
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared {
            script,
            seen: Vec::new(),
        }));
        let state = shared.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = state.clone();
                let tls = tls.clone();
                thread::spawn(move || match tls {
                    None => serve(stream, &state),
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg).expect("TLS session");
                        serve(rustls::StreamOwned::new(conn, stream), &state)
                    }
                });
            }
        });
        Server { addr, shared }
    }

    /// The base URL a provider is configured with.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().seen.clone()
    }

    pub fn requests(&self) -> usize {
        self.shared.lock().unwrap().seen.len()
    }
}

/// A port nobody listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn serve<S: Read + Write>(mut stream: S, state: &Mutex<Shared>) {
    let Some(seen) = read_request(&mut stream) else {
        // Not HTTP (a TLS hello on the plain port): answer like a real
        // server would, so the client fails at once instead of waiting.
        let _ = stream.write_all(
            b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        );
        return;
    };
    let step = {
        let mut st = state.lock().unwrap();
        st.seen.push(seen);
        st.script
            .pop()
            .unwrap_or_else(|| Step::reply(500, r#"{"error":{"message":"unexpected request"}}"#))
    };
    match step {
        Step::Hang => loop {
            // Hold the connection open until the test process ends.
            thread::park();
        },
        Step::Reply {
            status,
            headers,
            body,
        } => {
            let mut head = format!("HTTP/1.1 {status} Scripted\r\n");
            for (n, v) in &headers {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
            head.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ));
            // The client may hang up early (oversized body): ignore errors.
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
        }
    }
}

/// Head and body of one request; `None` when it is not HTTP/1.1.
fn read_request<S: Read>(stream: &mut S) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !buf
            .iter()
            .take_while(|b| **b != b' ')
            .all(u8::is_ascii_uppercase)
        {
            return None;
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method,
        path,
        headers,
        body,
    })
}
