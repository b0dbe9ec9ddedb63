//! The HTTP side of the JSON-RPC server: one request per connection (answered with
//! `Connection: close`), POST with a Content-Length body only. Every input a client controls
//! is bounded before work proportional to it is done: connections at once
//! (`max_connections`), the request head (a fixed 16 KiB and 64 headers), the body
//! (`max_request_bytes`, checked against Content-Length before the body is read) and the time a
//! request may take to arrive (`request_timeout_ms`, for the whole request, not per read).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::config::{Config, CONFIG_SECTION};

/// The request line and headers: a fixed limit (no client of a JSON-RPC server needs more).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 64;

/// A parsed request.
pub struct Request {
    pub body: Vec<u8>,
}

/// An answer: status and a JSON body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(status: u16, value: &serde_json::Value) -> Answer {
        Answer {
            status,
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }
    /// An HTTP-level refusal, with a JSON-RPC error body a client can show (`id` null).
    pub fn refusal(status: u16, code: i64, message: String) -> Answer {
        Answer::json(
            status,
            &serde_json::json!({ "result": null, "error": { "code": code, "message": message }, "id": null }),
        )
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn write_answer(stream: &mut TcpStream, answer: &Answer) {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        answer.status,
        reason(answer.status),
        answer.body.len()
    );
    // A client that went away is not an error of ours.
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(&answer.body))
        .and_then(|_| stream.flush());
}

/// Accepts connections until the listener fails; each connection on a thread of its own,
/// at most `max_connections` at once (one more is answered 503 and closed at once).
pub fn serve<H>(listener: TcpListener, config: Arc<Config>, handler: H)
where
    H: Fn(Request) -> Answer + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= config.max_connections {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            write_answer(
                &mut stream,
                &Answer::refusal(
                    503,
                    -32000,
                    format!(
                        "block-template: too many connections at once (max_connections = {} in {CONFIG_SECTION}); retry, or ask the operator to raise it",
                        config.max_connections
                    ),
                ),
            );
            continue;
        }
        let (handler, counted, config) = (handler.clone(), active.clone(), config.clone());
        let spawned = thread::Builder::new().name("http".into()).spawn(move || {
            let deadline = Instant::now() + Duration::from_millis(config.request_timeout_ms);
            let (answer, refused) = match read_request(&mut stream, &config, deadline) {
                Ok(req) => (handler(req), false),
                Err(refusal) => (refusal, true),
            };
            let _ = stream.set_write_timeout(Some(Duration::from_millis(config.request_timeout_ms.max(1))));
            write_answer(&mut stream, &answer);
            if refused {
                linger(&mut stream);
            }
            counted.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            // No thread to be had (RLIMIT_NPROC): the connection is dropped, the count restored.
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// After a refusal with the client's bytes unread: closing now would reset the connection and
/// could destroy the answer in flight. Say we are done writing, then read and drop at most
/// 64 KiB for at most 200 ms (bounded, whatever the client sends), then close.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 8192];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Reads into `buf` until the deadline; Err(408 answer) when it passes.
fn read_some(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant, config: &Config) -> Result<usize, Answer> {
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = Answer::refusal(
        408,
        -32000,
        format!(
            "block-template: the request did not arrive within {} ms (request_timeout_ms in {CONFIG_SECTION})",
            config.request_timeout_ms
        ),
    );
    if left.is_zero() {
        return Err(timeout);
    }
    let _ = stream.set_read_timeout(Some(left));
    match stream.read(buf) {
        Ok(n) => Ok(n),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Err(timeout),
        Err(e) => Err(Answer::refusal(
            400,
            -32000,
            format!("block-template: reading the request failed: {e}"),
        )),
    }
}

fn read_request(stream: &mut TcpStream, config: &Config, deadline: Instant) -> Result<Request, Answer> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // The head: read until it parses completely, at most MAX_HEAD_BYTES.
    let (head_len, content_length) = loop {
        if len == buf.len() {
            if buf.len() >= MAX_HEAD_BYTES {
                return Err(Answer::refusal(
                    431,
                    -32000,
                    format!(
                        "block-template: the request line and headers exceed {MAX_HEAD_BYTES} bytes (a fixed limit)"
                    ),
                ));
            }
            buf.resize((buf.len() * 2).min(MAX_HEAD_BYTES), 0);
        }
        let n = read_some(stream, &mut buf[len..], deadline, config)?;
        if n == 0 {
            return Err(Answer::refusal(
                400,
                -32000,
                "block-template: the connection closed before the request was complete".into(),
            ));
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(head_len)) => {
                if req.method != Some("POST") {
                    return Err(Answer::refusal(
                        405,
                        -32600,
                        format!(
                            "block-template: {} is not served; send JSON-RPC requests with POST (getblocktemplate, submitblock)",
                            req.method.unwrap_or("?")
                        ),
                    ));
                }
                let mut content_length = None;
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(Answer::refusal(
                            411,
                            -32600,
                            "block-template: chunked request bodies are not accepted; send the body with a Content-Length".into(),
                        ));
                    }
                    if h.name.eq_ignore_ascii_case("content-length") {
                        let parsed = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<u64>().ok());
                        match (parsed, content_length) {
                            (Some(n), None) => content_length = Some(n),
                            _ => {
                                return Err(Answer::refusal(
                                    400,
                                    -32600,
                                    "block-template: a bad or repeated Content-Length header".into(),
                                ))
                            }
                        }
                    }
                }
                let Some(content_length) = content_length else {
                    return Err(Answer::refusal(
                        411,
                        -32600,
                        "block-template: a POST needs a Content-Length header".into(),
                    ));
                };
                break (head_len, content_length);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Answer::refusal(
                    431,
                    -32000,
                    format!("block-template: more than {MAX_HEADERS} headers (a fixed limit)"),
                ));
            }
            Err(e) => {
                return Err(Answer::refusal(
                    400,
                    -32000,
                    format!("block-template: not an HTTP/1.x request ({e})"),
                ))
            }
        }
    };
    // The body's size is checked before any of it is read (or room made for it).
    if content_length > config.max_request_bytes as u64 {
        return Err(Answer::refusal(
            413,
            -32000,
            format!(
                "block-template: the request body is {content_length} bytes, over max_request_bytes = {} in {CONFIG_SECTION} (a submitblock of a full 4 MB block needs about 8,000,100)",
                config.max_request_bytes
            ),
        ));
    }
    let content_length = content_length as usize;
    let mut body = Vec::with_capacity(content_length);
    body.extend_from_slice(&buf[head_len..len.min(head_len + content_length)]);
    drop(buf);
    let mut chunk = vec![0u8; 64 * 1024];
    while body.len() < content_length {
        let want = (content_length - body.len()).min(chunk.len());
        let n = read_some(stream, &mut chunk[..want], deadline, config)?;
        if n == 0 {
            return Err(Answer::refusal(
                400,
                -32000,
                "block-template: the connection closed before the body was complete".into(),
            ));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Request { body })
}
