//! Checks the SDK against docs/protocol-vectors.json: every frame decodes to the vector's
//! message and typed fields; encoding the typed message gives the vector's bytes; the invalid
//! inputs produce the errors the spec requires.

use std::io::Cursor;

use modhost_sdk::protocol::*;
use modhost_sdk::value::decode_value;
use modhost_sdk::{Error, Value};

fn vectors() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol-vectors.json");
    let text = std::fs::read_to_string(path).expect("docs/protocol-vectors.json is readable");
    serde_json::from_str(&text).expect("the vectors are JSON")
}

fn unhex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() & 1, 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The vectors' JSON notation as a Value: `{"$bin": hex}` is binary.
fn json_to_value(j: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match j {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else {
                Value::F64(n.as_f64().unwrap())
            }
        }
        J::String(s) => Value::Str(s.clone()),
        J::Array(a) => Value::Array(a.iter().map(json_to_value).collect()),
        J::Object(o) => {
            if o.len() == 1 {
                if let Some(J::String(h)) = o.get("$bin") {
                    return Value::Bin(unhex(h));
                }
            }
            Value::Map(o.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect())
        }
    }
}

fn sorted(v: Value) -> Value {
    match v {
        Value::Map(mut m) => {
            m.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Map(m.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn body_of(frame: &[u8]) -> Vec<u8> {
    let mut cur = Cursor::new(frame);
    let body = read_frame(&mut cur, DEFAULT_MAX_FRAME_BYTES)
        .expect("a valid frame")
        .expect("not EOF");
    assert_eq!(cur.position() as usize, frame.len(), "one frame, nothing after it");
    assert!(
        read_frame(&mut cur, DEFAULT_MAX_FRAME_BYTES).unwrap().is_none(),
        "clean EOF after the frame"
    );
    body
}

/// Vectors whose bytes rmp-serde cannot reproduce: the host writes integers above 32 bits as
/// int64 (0xd3) even when positive, rmp-serde writes every non-negative integer as an unsigned
/// format (0xcf). Both are valid MessagePack and both peers read both; these frames are only
/// compared as values.
const INT64_VECTORS: &[&str] = &[
    "response_large_integer",
    "event",
    "event_missed",
    "response_block_page_binary",
    "response_block_template_page",
];

#[test]
fn every_vector_decodes_to_its_message() {
    let v = vectors();
    let list = v["vectors"].as_array().unwrap();
    assert!(list.len() >= 16, "all message kinds are covered");
    for vec in list {
        let name = vec["name"].as_str().unwrap();
        let frame = unhex(vec["frame"].as_str().unwrap());
        let body = body_of(&frame);
        let expected = json_to_value(&vec["message"]);
        let decoded = decode_value(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        // serde_json sorts object keys, so maps are compared as sets of entries here; the
        // byte-for-byte test below checks the key order of what the SDK sends.
        assert_eq!(sorted(decoded), sorted(expected.clone()), "{name}: decoded value");
        let msg = decode_message(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        let t = expected["t"].as_str().unwrap();
        assert_eq!(kind(&msg), t, "{name}: kind");
    }
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Hello(_) => "hello",
        Message::Welcome(_) => "welcome",
        Message::Request(_) => "request",
        Message::Response(_) => "response",
        Message::Event(_) => "event",
        Message::Ack(_) => "ack",
        Message::Log(_) => "log",
        Message::Invocation(_) => "invocation",
        Message::InvocationResult(_) => "invocation_result",
        Message::Ready => "ready",
        Message::Goodbye(_) => "goodbye",
    }
}

fn decode_vector(name: &str) -> (Message, Vec<u8>) {
    let v = vectors();
    let vec = v["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("vector {name}"));
    let frame = unhex(vec["frame"].as_str().unwrap());
    (decode_message(&body_of(&frame)).unwrap(), frame)
}

fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Map(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

#[test]
fn typed_fields_of_every_vector() {
    let (m, _) = decode_vector("hello");
    assert_eq!(
        m,
        Message::Hello(Hello {
            protocol: [1, 2],
            module: "example".into(),
            version: "1.0.0".into(),
            sdk: Some("modhost-rust/0.1.0".into())
        })
    );

    let (m, _) = decode_vector("welcome");
    let Message::Welcome(w) = m else { panic!("welcome") };
    assert_eq!(w.protocol, 2);
    assert_eq!(w.host, "modhost/0.1.0");
    assert_eq!(w.module_id, "example");
    assert_eq!(w.grants, vec!["read_chain_state", "subscribe_events=NewBlock"]);
    assert_eq!(w.methods, vec!["get_block_height", "get_config", "subscribe_events"]);
    assert_eq!(w.config, map(&[("interval", Value::UInt(5))]));
    assert_eq!(w.data_dir, "/data/example");
    assert_eq!(w.event_window, 64);
    assert_eq!(w.max_frame_bytes, 16 * 1024 * 1024);

    let (m, _) = decode_vector("request");
    assert_eq!(
        m,
        Message::Request(Request {
            id: 1,
            method: "get_block_height".into(),
            params: Value::map()
        })
    );

    let (m, _) = decode_vector("request_with_params");
    assert_eq!(
        m,
        Message::Request(Request {
            id: 2,
            method: "storage_insert".into(),
            params: map(&[
                ("tree", "t".into()),
                ("key", "k".into()),
                ("value", Value::Bin(vec![1, 2, 3]))
            ]),
        })
    );

    let (m, _) = decode_vector("response");
    assert_eq!(
        m,
        Message::Response(Response {
            id: 1,
            result: Some(Value::UInt(101)),
            error: None
        })
    );

    let (m, _) = decode_vector("response_large_integer");
    let Message::Response(r) = m else { panic!("response") };
    assert_eq!(r.id, 7);
    assert_eq!(r.result.unwrap()["value"].as_u64(), Some(5_000_000_000));

    let (m, _) = decode_vector("response_error");
    let Message::Response(r) = m else { panic!("response") };
    assert_eq!(r.id, 2);
    assert!(r.result.is_none());
    let e = r.error.unwrap();
    assert_eq!(e.code, "permission_denied");
    assert_eq!(e.message, "storage_insert requires the \"write_storage\" capability");
    assert_eq!(e.data, Some(map(&[("capability", "write_storage".into())])));

    let (m, _) = decode_vector("event");
    let Message::Event(ev) = m else { panic!("event") };
    assert_eq!(
        (ev.seq, ev.type_.as_str(), ev.time, ev.missed),
        (1, "NewBlock", 1_700_000_000_000, None)
    );
    let nb: modhost_sdk::NewBlock = modhost_sdk::from_value(ev.payload).unwrap();
    assert_eq!(
        nb,
        modhost_sdk::NewBlock {
            hash: "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206".into(),
            height: 0,
            time: 1_296_688_602,
            tx_count: 1
        }
    );

    let (m, _) = decode_vector("event_missed");
    let Message::Event(ev) = m else { panic!("event") };
    assert_eq!((ev.seq, ev.missed), (9, Some(3)));
    assert_eq!(ev.payload["height"].as_u64(), Some(5));

    let (m, _) = decode_vector("ack");
    assert_eq!(m, Message::Ack(Ack { seq: 1 }));

    let (m, _) = decode_vector("log");
    assert_eq!(
        m,
        Message::Log(LogMessage {
            level: LogLevel::Info,
            message: "started".into(),
            fields: Some(map(&[("height", Value::UInt(101))]))
        })
    );

    let (m, _) = decode_vector("invocation");
    assert_eq!(
        m,
        Message::Invocation(Invocation {
            id: 1,
            kind: "shutdown".into(),
            params: map(&[("reason", "host shutdown".into()), ("timeout_ms", Value::UInt(5000))]),
        })
    );

    let (m, _) = decode_vector("invocation_result");
    assert_eq!(
        m,
        Message::InvocationResult(InvocationResult {
            id: 1,
            result: Some(map(&[("stopped", Value::Bool(true))])),
            error: None
        })
    );

    let (m, _) = decode_vector("invocation_result_error");
    assert_eq!(
        m,
        Message::InvocationResult(InvocationResult {
            id: 2,
            result: None,
            error: Some(WireError {
                code: "unknown_method".into(),
                message: "this module does not handle cli invocations".into(),
                data: None
            }),
        })
    );

    let (m, _) = decode_vector("ready");
    assert_eq!(m, Message::Ready);

    let (m, _) = decode_vector("goodbye");
    assert_eq!(
        m,
        Message::Goodbye(Goodbye {
            error: Some(WireError {
                code: "protocol_error".into(),
                message: "expected hello as the first message, got request".into(),
                data: None
            })
        })
    );
}

#[test]
fn encoding_reproduces_the_vector_bytes() {
    let v = vectors();
    let mut exact = 0;
    let all = v["vectors"].as_array().unwrap();
    for vec in all {
        let name = vec["name"].as_str().unwrap();
        let frame = unhex(vec["frame"].as_str().unwrap());
        let msg = decode_message(&body_of(&frame)).unwrap();
        let encoded = encode_frame(&msg, DEFAULT_MAX_FRAME_BYTES).unwrap();
        if INT64_VECTORS.contains(&name) {
            // Same value, different integer format (see INT64_VECTORS).
            assert_eq!(
                decode_value(&encoded[4..]).unwrap(),
                decode_value(&frame[4..]).unwrap(),
                "{name}"
            );
            assert_ne!(
                encoded, frame,
                "{name}: now matches byte for byte; move it out of INT64_VECTORS"
            );
        } else {
            assert_eq!(hex(&encoded), hex(&frame), "{name}: bytes");
            exact += 1;
        }
    }
    // Every vector outside INT64_VECTORS was reproduced byte for byte above; this guards against
    // the file losing vectors (16 when the hook vectors were added).
    assert!(exact >= 16, "only {exact} vectors reproduced exactly");
}

#[test]
fn module_messages_built_by_hand_match_the_vectors() {
    // What the client itself sends, built the way it builds them.
    let hello = Message::Hello(Hello {
        protocol: [PROTOCOL_MIN, PROTOCOL_MAX],
        module: "example".into(),
        version: "1.0.0".into(),
        sdk: Some(SDK_NAME.into()),
    });
    let (_, frame) = decode_vector("hello");
    assert_eq!(encode_frame(&hello, DEFAULT_MAX_FRAME_BYTES).unwrap(), frame);

    let (_, frame) = decode_vector("ack");
    assert_eq!(
        encode_frame(&Message::Ack(Ack { seq: 1 }), DEFAULT_MAX_FRAME_BYTES).unwrap(),
        frame
    );

    let (_, frame) = decode_vector("ready");
    assert_eq!(encode_frame(&Message::Ready, DEFAULT_MAX_FRAME_BYTES).unwrap(), frame);

    // A request with typed params (a struct with a binary field) is the same bytes as the
    // vector's dynamic one.
    #[derive(serde::Serialize)]
    struct Insert<'a> {
        tree: &'a str,
        key: &'a str,
        value: modhost_sdk::Bytes,
    }
    #[derive(serde::Serialize)]
    struct Req<'a, P> {
        t: &'a str,
        id: u64,
        method: &'a str,
        params: P,
    }
    let req = Req {
        t: "request",
        id: 2,
        method: "storage_insert",
        params: Insert {
            tree: "t",
            key: "k",
            value: vec![1, 2, 3].into(),
        },
    };
    let (_, frame) = decode_vector("request_with_params");
    assert_eq!(encode_frame(&req, DEFAULT_MAX_FRAME_BYTES).unwrap(), frame);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn invalid(name: &str) -> Vec<u8> {
    let v = vectors();
    let vec = v["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("vector {name}"));
    vector_bytes(vec)
}

/// An invalid vector's bytes; one with `fill` has `count` copies of `byte` inserted at `at`.
fn vector_bytes(vec: &serde_json::Value) -> Vec<u8> {
    let mut bytes = unhex(vec["bytes"].as_str().unwrap());
    if let Some(fill) = vec.get("fill") {
        let at = fill["at"].as_u64().unwrap() as usize;
        let byte = unhex(fill["byte"].as_str().unwrap())[0];
        let count = fill["count"].as_u64().unwrap() as usize;
        bytes.splice(at..at, std::iter::repeat_n(byte, count));
    }
    bytes
}

#[test]
fn zero_length_is_a_framing_error() {
    let bytes = invalid("zero_length");
    let err = read_frame(&mut Cursor::new(&bytes), DEFAULT_MAX_FRAME_BYTES).unwrap_err();
    assert!(matches!(err, Error::Framing(_)), "{err}");
}

#[test]
fn oversized_length_is_a_framing_error_without_reading_the_body() {
    let bytes = invalid("oversized_length");
    let mut cur = Cursor::new(&bytes);
    let err = read_frame(&mut cur, DEFAULT_MAX_FRAME_BYTES).unwrap_err();
    assert!(matches!(err, Error::Framing(ref m) if m.contains("exceeds")), "{err}");
    assert_eq!(cur.position(), 4, "only the length was read");
    // The limit is the one from welcome, not a constant.
    let small = [0, 0, 0, 5, 1, 2, 3, 4, 5];
    assert!(matches!(
        read_frame(&mut Cursor::new(&small), 4),
        Err(Error::Framing(_))
    ));
    assert!(read_frame(&mut Cursor::new(&small), 5).unwrap().is_some());
}

#[test]
fn truncated_frame_then_eof_is_a_framing_error() {
    let bytes = invalid("truncated_frame_then_eof");
    let err = read_frame(&mut Cursor::new(&bytes), DEFAULT_MAX_FRAME_BYTES).unwrap_err();
    assert!(
        matches!(err, Error::Framing(ref m) if m.contains("ended inside")),
        "{err}"
    );
    // Also inside the header.
    assert!(matches!(
        read_frame(&mut Cursor::new(&[0u8, 0]), 16),
        Err(Error::Framing(_))
    ));
}

/// A bad body keeps the frame boundary: the next frame still decodes.
fn assert_decode_error_without_desync(name: &str, expect: fn(&Error) -> bool) {
    let mut stream = invalid(name);
    let (_, ack) = decode_vector("ack");
    stream.extend_from_slice(&ack);
    let mut cur = Cursor::new(&stream);
    let body = read_frame(&mut cur, DEFAULT_MAX_FRAME_BYTES).unwrap().unwrap();
    let err = decode_message(&body).unwrap_err();
    assert!(expect(&err), "{name}: {err:?}");
    let next = read_frame(&mut cur, DEFAULT_MAX_FRAME_BYTES).unwrap().unwrap();
    assert_eq!(
        decode_message(&next).unwrap(),
        Message::Ack(Ack { seq: 1 }),
        "{name}: in sync afterwards"
    );
}

#[test]
fn invalid_messagepack_is_a_decode_error_without_desync() {
    assert_decode_error_without_desync(
        "invalid_messagepack",
        |e| matches!(e, Error::Decode(m) if m.contains("0xc1")),
    );
}

#[test]
fn extension_type_is_a_decode_error_without_desync() {
    assert_decode_error_without_desync(
        "extension_type",
        |e| matches!(e, Error::Decode(m) if m.contains("extension")),
    );
}

/// Every invalid vector marked `refused_by: "every receiver"` is outside the protocol's
/// MessagePack subset or over one of its limits (depth, values, `__proto__` keys): the SDK
/// refuses it as the host does, and stays in sync. Those marked `"host"` (max_total_string_bytes)
/// are well-formed MessagePack over a limit of the host alone: the SDK's decoder reads them.
#[test]
fn every_invalid_body_vector_is_refused_by_whom_it_says() {
    let v = vectors();
    let mut every = 0;
    let mut host = 0;
    for vec in v["invalid"].as_array().unwrap() {
        let name = vec["name"].as_str().unwrap();
        let bytes = vector_bytes(vec);
        match vec["refused_by"].as_str() {
            Some("every receiver") => {
                every += 1;
                let mut stream = bytes.clone();
                let (_, ack) = decode_vector("ack");
                stream.extend_from_slice(&ack);
                let mut cur = Cursor::new(&stream);
                let body = read_frame(&mut cur, DEFAULT_MAX_FRAME_BYTES).unwrap().unwrap();
                assert!(decode_message(&body).is_err(), "{name}: the SDK must refuse it");
                let next = read_frame(&mut cur, DEFAULT_MAX_FRAME_BYTES).unwrap().unwrap();
                assert_eq!(
                    decode_message(&next).unwrap(),
                    Message::Ack(Ack { seq: 1 }),
                    "{name}: in sync afterwards"
                );
            }
            Some("host") => {
                host += 1;
                let body = read_frame(&mut Cursor::new(&bytes), DEFAULT_MAX_FRAME_BYTES)
                    .unwrap()
                    .unwrap();
                assert!(decode_value(&body).is_ok(), "{name}: well-formed MessagePack");
            }
            Some(other) => panic!("{name}: unknown refused_by {other:?}"),
            None => {}
        }
    }
    assert!(every >= 11 && host >= 1, "the vectors are all there ({every}, {host})");
}

#[test]
fn unknown_kind_is_a_protocol_error_without_desync() {
    assert_decode_error_without_desync(
        "unknown_kind_with_id",
        |e| matches!(e, Error::Protocol(m) if m.contains("foo")),
    );
    // Its id can still be read, to answer it.
    let bytes = invalid("unknown_kind_with_id");
    assert_eq!(decode_value(&bytes[4..]).unwrap()["id"].as_u64(), Some(5));
}

#[test]
fn strict_decoding() {
    // trailing bytes, non-string keys, bad UTF-8, truncation
    assert!(decode_value(&[0xc0, 0xc0]).is_err());
    assert!(decode_value(&[0x81, 0x01, 0x02]).is_err());
    assert!(decode_value(&[0xa1, 0xff]).is_err());
    assert!(decode_value(&[0x92, 0x01]).is_err());
    assert!(
        decode_value(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err(),
        "a huge declared length does not allocate or panic"
    );
    let mut deep = vec![0x91; 300];
    deep.push(0xc0);
    assert!(decode_value(&deep).is_err(), "nesting is bounded");
}

/// The SDK's decoder follows docs/protocol.md section 3.1 exactly: the host's limits, each
/// named in the error, checked from the header; `__proto__` keys refused, never renamed.
#[test]
fn the_decoder_has_the_hosts_limits() {
    use modhost_sdk::value::{MAX_BINARY_BYTES, MAX_DEPTH, MAX_STRING_BYTES, MAX_VALUES};
    assert_eq!(
        (MAX_DEPTH, MAX_VALUES, MAX_STRING_BYTES, MAX_BINARY_BYTES),
        (72, 65_536, 16 << 20, 16 << 20)
    );
    // 72 nested containers are accepted, 73 are refused naming max_depth.
    let nested = |n: usize| {
        let mut b = vec![0x91; n - 1];
        b.extend_from_slice(&[0x90]);
        b
    };
    assert!(decode_value(&nested(72)).is_ok(), "72 levels are within max_depth");
    let err = decode_value(&nested(73)).unwrap_err();
    assert!(err.message.contains("max_depth = 72"), "{err}");
    // 65,536 values are accepted (an array header and 65,535 nils), one more is refused.
    let values = |n: usize| {
        let mut b = vec![0xdd];
        b.extend_from_slice(&((n - 1) as u32).to_be_bytes());
        b.resize(5 + n - 1, 0xc0);
        b
    };
    assert!(decode_value(&values(65_536)).is_ok());
    let err = decode_value(&values(65_537)).unwrap_err();
    assert!(err.message.contains("max_values = 65536"), "{err}");
    assert_eq!(
        err.offset, 0,
        "refused from the array header, before reading the elements"
    );
    // A map announcing more entries than the budget is refused from its header.
    let mut big_map = vec![0xdf];
    big_map.extend_from_slice(&40_000u32.to_be_bytes());
    assert!(decode_value(&big_map).unwrap_err().message.contains("max_values"));
    // Strings and binary over 16 MiB are refused from the header (no bytes follow here).
    let mut s = vec![0xdb];
    s.extend_from_slice(&((16u32 << 20) + 1).to_be_bytes());
    assert!(decode_value(&s).unwrap_err().message.contains("max_string_bytes"));
    let mut bin = vec![0xc6];
    bin.extend_from_slice(&((16u32 << 20) + 1).to_be_bytes());
    assert!(decode_value(&bin).unwrap_err().message.contains("max_binary_bytes"));
    // max_map_keys: 4,096 distinct keys in one body. A map32 of n keys "k0".."k{n-1}" (nil values).
    let keyed = |n: usize, key: &dyn Fn(usize) -> String| {
        let mut b = vec![0xdf];
        b.extend_from_slice(&(n as u32).to_be_bytes());
        for i in 0..n {
            let k = key(i);
            b.push(0xd9);
            b.push(k.len() as u8);
            b.extend_from_slice(k.as_bytes());
            b.push(0xc0);
        }
        b
    };
    assert!(
        decode_value(&keyed(4096, &|i| format!("k{i}"))).is_ok(),
        "4,096 distinct keys are within max_map_keys"
    );
    let err = decode_value(&keyed(4097, &|i| format!("k{i}"))).unwrap_err();
    assert!(
        err.message.contains("max_map_keys = 4096") && err.message.contains("[key, value] pairs"),
        "{err}"
    );
    // Repeated short keys count once; a key of 65 bytes counts at every appearance.
    assert!(
        decode_value(&keyed(20_000, &|i| format!("{}{}", "s".repeat(62), i % 10))).is_ok(),
        "10 distinct 64-byte keys, 20,000 times"
    );
    assert!(decode_value(&keyed(4096, &|_| "l".repeat(65))).is_ok());
    let err = decode_value(&keyed(4097, &|_| "l".repeat(65))).unwrap_err();
    assert!(err.message.contains("max_map_keys"), "{err}");
    // __proto__ as a key, at the top and nested: refused (as a value it is just a string).
    let top = [&[0x81u8, 0xa9][..], b"__proto__", &[0xc0]].concat();
    let err = decode_value(&top).unwrap_err();
    assert!(err.message.contains("__proto__"), "{err}");
    assert_eq!(err.offset, 1, "the offset of the key");
    let nested = [&[0x81u8, 0xa1, b'a', 0x81, 0xa9][..], b"__proto__", &[0x01]].concat();
    assert!(decode_value(&nested).unwrap_err().message.contains("__proto__"));
    assert!(
        decode_value(&[&[0x91u8, 0xa9][..], b"__proto__"].concat()).is_ok(),
        "a string value __proto__ is data"
    );
    // every integer format, both signs
    for (bytes, v) in [
        (vec![0xd0, 0x80], Value::Int(-128)),
        (vec![0xd1, 0xff, 0x7f], Value::Int(-129)),
        (
            vec![0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            Value::Int(-1),
        ),
        (vec![0xd3, 0, 0, 0, 1, 0x2a, 0x05, 0xf2, 0], Value::UInt(5_000_000_000)),
        (
            vec![0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            Value::UInt(u64::MAX),
        ),
        (vec![0xe0], Value::Int(-32)),
        (vec![0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0], Value::F64(1.5)),
        (vec![0xca, 0x3f, 0xc0, 0, 0], Value::F64(1.5)),
    ] {
        assert_eq!(decode_value(&bytes).unwrap(), v);
    }
}

#[test]
fn unknown_keys_are_ignored_and_order_does_not_matter() {
    // {"id": 3, "extra": [1], "result": true, "t": "response"}
    let body = [
        0x84, 0xa2, b'i', b'd', 0x03, 0xa5, b'e', b'x', b't', b'r', b'a', 0x91, 0x01, 0xa6, b'r', b'e', b's', b'u',
        b'l', b't', 0xc3, 0xa1, b't', 0xa8, b'r', b'e', b's', b'p', b'o', b'n', b's', b'e',
    ];
    assert_eq!(
        decode_message(&body).unwrap(),
        Message::Response(Response {
            id: 3,
            result: Some(Value::Bool(true)),
            error: None
        })
    );
    // {"t": "ready", "later": 1}
    let body = [
        0x82, 0xa1, b't', 0xa5, b'r', b'e', b'a', b'd', b'y', 0xa5, b'l', b'a', b't', b'e', b'r', 0x01,
    ];
    assert_eq!(decode_message(&body).unwrap(), Message::Ready);
}

#[test]
fn sending_more_than_max_frame_bytes_is_refused() {
    let big = Message::Log(LogMessage {
        level: LogLevel::Info,
        message: "x".repeat(100),
        fields: None,
    });
    assert!(matches!(encode_frame(&big, 50), Err(Error::Protocol(m)) if m.contains("max_frame_bytes")));
}

#[test]
fn typed_integers_accept_integral_floats_only() {
    use modhost_sdk::from_value;
    assert_eq!(from_value::<u64>(Value::F64(5e9)).unwrap(), 5_000_000_000);
    assert_eq!(from_value::<i32>(Value::F64(-3.0)).unwrap(), -3);
    assert!(from_value::<u64>(Value::F64(1.5)).is_err());
    assert!(from_value::<u8>(Value::F64(300.0)).is_err());
    assert!(from_value::<u64>(Value::F64(-1.0)).is_err());
    assert_eq!(from_value::<f64>(Value::UInt(7)).unwrap(), 7.0);
}

#[test]
fn values_round_trip_through_typed_structs() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Rec {
        name: String,
        n: i64,
        big: u64,
        ratio: f64,
        tags: Vec<String>,
        blob: modhost_sdk::Bytes,
        maybe: Option<u32>,
        kind: Kind,
    }
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    enum Kind {
        A,
        B(u8),
    }
    let r = Rec {
        name: "x".into(),
        n: -5,
        big: u64::MAX,
        ratio: 0.25,
        tags: vec!["a".into()],
        blob: vec![0, 255].into(),
        maybe: None,
        kind: Kind::B(3),
    };
    let v = modhost_sdk::to_value(&r).unwrap();
    assert_eq!(v["blob"], Value::Bin(vec![0, 255]));
    assert_eq!(v["maybe"], Value::Nil);
    assert_eq!(modhost_sdk::from_value::<Rec>(v).unwrap(), r);
    let v = modhost_sdk::to_value(&Kind::A).unwrap();
    assert_eq!(v, Value::Str("A".into()));
    assert_eq!(modhost_sdk::from_value::<Kind>(v).unwrap(), Kind::A);
}
