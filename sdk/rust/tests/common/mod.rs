//! The fake host the client tests talk to: the other end of a `UnixStream::pair()`, reading
//! and writing protocol messages by hand.
#![allow(dead_code)] // each test crate uses a part of it

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use modhost_sdk::protocol::*;
use modhost_sdk::{Client, Value};

pub struct FakeHost {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl FakeHost {
    pub fn new(stream: UnixStream) -> FakeHost {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        FakeHost {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    pub fn recv(&mut self) -> Message {
        let body = read_frame(&mut self.reader, DEFAULT_MAX_FRAME_BYTES)
            .expect("a frame")
            .expect("not EOF");
        decode_message(&body).expect("a valid message")
    }

    /// Whatever arrives next, or None at EOF.
    pub fn recv_or_eof(&mut self) -> Option<Message> {
        read_frame(&mut self.reader, DEFAULT_MAX_FRAME_BYTES)
            .expect("no framing error")
            .map(|b| decode_message(&b).unwrap())
    }

    pub fn send(&mut self, m: &Message) {
        self.writer
            .write_all(&encode_frame(m, DEFAULT_MAX_FRAME_BYTES).unwrap())
            .unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Reads hello and answers welcome.
    pub fn handshake(&mut self, module: &str) -> Hello {
        let Message::Hello(h) = self.recv() else {
            panic!("expected hello first")
        };
        assert_eq!(h.module, module);
        self.send(&Message::Welcome(Welcome {
            protocol: 1,
            host: "modhost/test".into(),
            module_id: module.into(),
            grants: vec!["read_chain_state".into()],
            methods: vec!["get_block_height".into(), "storage_get".into()],
            config: Value::from_pairs([("interval", Value::UInt(5))]),
            data_dir: "/tmp/data/test".into(),
            event_window: 64,
            max_frame_bytes: 1 << 20,
        }));
        h
    }

    pub fn respond(&mut self, id: u64, result: Value) {
        self.send(&Message::Response(Response {
            id,
            result: Some(result),
            error: None,
        }));
    }

    pub fn event(&mut self, seq: u64, type_: &str, payload: Value, missed: Option<u64>) {
        self.send(&Message::Event(EventMessage {
            seq,
            type_: type_.into(),
            payload,
            time: 1_700_000_000_000,
            missed,
        }));
    }

    pub fn invoke(&mut self, id: u64, kind: &str, params: Value) {
        self.send(&Message::Invocation(Invocation {
            id,
            kind: kind.into(),
            params,
        }));
    }

    pub fn next_request(&mut self, method: &str) -> Request {
        match self.recv() {
            Message::Request(r) => {
                assert_eq!(r.method, method);
                r
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The next invocation_result (skipping logs).
    pub fn invocation_result(&mut self) -> InvocationResult {
        loop {
            match self.recv() {
                Message::InvocationResult(r) => return r,
                Message::Log(_) => continue,
                other => panic!("expected invocation_result, got {other:?}"),
            }
        }
    }
}

pub fn start(module: &'static str) -> (Client, FakeHost, Hello) {
    let (a, b) = UnixStream::pair().unwrap();
    let host = thread::spawn(move || {
        let mut h = FakeHost::new(b);
        let hello = h.handshake(module);
        (h, hello)
    });
    let client = Client::from_stream(a, module, "1.2.3").expect("handshake");
    let (h, hello) = host.join().unwrap();
    (client, h, hello)
}
