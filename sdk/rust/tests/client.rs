//! The client against a fake host over `UnixStream::pair()`: handshake, concurrent requests
//! answered out of order, events and acknowledgements, invocations and shutdown, and how the
//! client behaves when the host refuses it, goes away or breaks the framing.

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use modhost_sdk::protocol::*;
use modhost_sdk::{Client, Error, IterOptions, StorageOp, Value};

mod common;
use common::{start, FakeHost};

#[test]
fn handshake_sends_hello_and_exposes_welcome() {
    let (client, _host, hello) = start("example");
    assert_eq!(hello.protocol, [1, 2]);
    assert_eq!(hello.version, "1.2.3");
    assert_eq!(hello.sdk.as_deref(), Some(modhost_sdk::SDK_NAME));
    assert!(modhost_sdk::SDK_NAME.starts_with("modhost-rust/"));
    assert_eq!(client.module_id(), "example");
    assert_eq!(client.welcome().max_frame_bytes, 1 << 20);
    assert_eq!(client.data_dir(), std::path::Path::new("/tmp/data/test"));
    assert!(client.may_call("get_block_height"));
    assert!(!client.may_call("storage_insert"));
    assert_eq!(client.config()["interval"].as_u64(), Some(5));
}

#[test]
fn concurrent_requests_are_answered_out_of_order() {
    let (client, mut host, _) = start("example");
    const N: u64 = 16;
    // The host collects every request, then answers them in reverse order, each with a
    // result derived from its params so a mix-up would show.
    let host_thread = thread::spawn(move || {
        let mut reqs = Vec::new();
        while reqs.len() < N as usize {
            match host.recv() {
                Message::Request(r) => reqs.push(r),
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut ids: Vec<u64> = reqs.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), N as usize, "ids are unique");
        for r in reqs.iter().rev() {
            assert_eq!(r.method, "get_block_by_height");
            let h = r.params["height"].as_u64().unwrap();
            // get_block_by_height answers null for odd heights, a block-like map otherwise.
            let result = if h % 2 == 1 { Value::Nil } else { block_value(h) };
            host.respond(r.id, result);
        }
        host
    });
    let handles: Vec<_> = (0..N)
        .map(|h| {
            let c = client.clone();
            thread::spawn(move || (h, c.get_block_by_height(h)))
        })
        .collect();
    for handle in handles {
        let (h, res) = handle.join().unwrap();
        let block = res.unwrap_or_else(|e| panic!("height {h}: {e}"));
        if h % 2 == 1 {
            assert!(block.is_none());
        } else {
            let b = block.expect("a block");
            assert_eq!(b.height, h);
            assert_eq!(b.transactions.len(), 1);
            assert_eq!(b.transactions[0].outputs[0].value, 5_000_000_000);
        }
    }
    host_thread.join().unwrap();
}

fn block_value(height: u64) -> Value {
    let hash = format!("{height:064x}");
    let header = Value::from_pairs([
        ("hash", hash.clone().into()),
        ("height", height.into()),
        ("version", 0x2000_0000u64.into()),
        ("prev_hash", "00".repeat(32).into()),
        ("merkle_root", "11".repeat(32).into()),
        ("time", 1_700_000_000u64.into()),
        ("bits", 0x207f_ffffu64.into()),
        ("nonce", 0u64.into()),
        ("hex", "00".into()),
    ]);
    let tx = Value::from_pairs([
        ("txid", "aa".repeat(32).into()),
        ("wtxid", "aa".repeat(32).into()),
        ("version", 2u64.into()),
        ("locktime", 0u64.into()),
        (
            "inputs",
            Value::Array(vec![Value::from_pairs([
                ("txid", "00".repeat(32).into()),
                ("vout", 0xffff_ffffu64.into()),
                ("script_sig", "01".into()),
                ("sequence", 0xffff_ffffu64.into()),
                ("witness", Value::Array(vec![])),
                ("coinbase", true.into()),
            ])]),
        ),
        (
            "outputs",
            Value::Array(vec![Value::from_pairs([
                ("value", 5_000_000_000u64.into()),
                ("script_pubkey", "51".into()),
                ("address", Value::Nil),
            ])]),
        ),
        ("size", 100u64.into()),
        ("vsize", 100u64.into()),
        ("weight", 400u64.into()),
        ("hex", "00".into()),
    ]);
    Value::from_pairs([
        ("header", header),
        ("hash", hash.into()),
        ("height", height.into()),
        ("size", 200u64.into()),
        ("weight", 800u64.into()),
        ("tx_count", 1u64.into()),
        ("next_tx_offset", Value::Nil),
        ("transactions", Value::Array(vec![tx])),
        ("hex", "00".into()),
        ("future_field", "ignored".into()),
    ])
}

/// `block_value(height)` as page `page` of `pages`, one transaction (txid `page` repeated) each.
fn block_page(height: u64, page: u64, pages: u64) -> Value {
    let Value::Map(mut fields) = block_value(height) else {
        unreachable!()
    };
    for (k, v) in fields.iter_mut() {
        match k.as_str() {
            "tx_count" => *v = pages.into(),
            "next_tx_offset" => {
                *v = if page + 1 < pages {
                    (page + 1).into()
                } else {
                    Value::Nil
                }
            }
            "transactions" => {
                let Value::Array(txs) = v else { unreachable!() };
                let Value::Map(tx) = &mut txs[0] else { unreachable!() };
                for (tk, tv) in tx.iter_mut() {
                    if tk == "txid" {
                        *tv = format!("{page:02x}").repeat(32).into();
                    }
                }
            }
            _ => {}
        }
    }
    Value::Map(fields)
}

#[test]
fn the_mempool_txids_are_read_a_page_at_a_time_and_joined() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let reader = thread::spawn(move || c.get_mempool_txids());
    let pages: [(u64, Option<u64>, &str); 3] = [(0, Some(7), "aa"), (7, Some(12), "bb"), (12, None, "cc")];
    for (after, next, txid) in pages {
        let r = host.next_request("get_mempool_txids");
        assert_eq!(
            r.params["after"].as_u64(),
            Some(after),
            "each page is asked after the last one's cursor"
        );
        host.respond(
            r.id,
            Value::from_pairs([
                ("txids", Value::Array(vec![txid.repeat(32).into()])),
                ("next_after", next.map_or(Value::Nil, Value::from)),
                ("count", 3u64.into()),
                ("order", "accepted".into()),
            ]),
        );
    }
    let txids = reader.join().unwrap().unwrap();
    assert_eq!(txids, vec!["aa".repeat(32), "bb".repeat(32), "cc".repeat(32)]);
}

#[test]
fn a_paged_block_is_read_whole_and_a_block_that_changes_between_pages_is_read_again() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let reader = thread::spawn(move || c.get_block_by_height(4));
    // First try: page 0 of block 4, then page 1 names another block (a reorganisation).
    let r = host.next_request("get_block_by_height");
    assert_eq!(r.params["tx_offset"].as_u64(), Some(0));
    assert_eq!(r.params["include_hex"].as_bool(), Some(true));
    host.respond(r.id, block_page(4, 0, 3));
    let r = host.next_request("get_block_by_height");
    assert_eq!(r.params["tx_offset"].as_u64(), Some(1));
    let Value::Map(mut other) = block_page(4, 1, 3) else {
        unreachable!()
    };
    for (k, v) in other.iter_mut() {
        if k == "hash" {
            *v = "ff".repeat(32).into();
        }
    }
    host.respond(r.id, Value::Map(other));
    // Second try: every page of the same block.
    for page in 0..3 {
        let r = host.next_request("get_block_by_height");
        assert_eq!(r.params["height"].as_u64(), Some(4));
        assert_eq!(
            r.params["tx_offset"].as_u64(),
            Some(page),
            "pages are asked in order, from the first again"
        );
        host.respond(r.id, block_page(4, page, 3));
    }
    let block = reader.join().unwrap().unwrap().expect("a block");
    let txids: Vec<String> = block.transactions.iter().map(|t| t.txid.clone()).collect();
    assert_eq!(txids, vec!["00".repeat(32), "01".repeat(32), "02".repeat(32)]);
    assert_eq!(block.tx_count, 3);
    assert_eq!(block.next_tx_offset, None);
}

#[test]
fn typed_requests_send_the_right_params_and_map_errors() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let t = thread::spawn(move || {
        c.storage_insert("tips", "101", &modhost_sdk::Bytes(vec![1, 2, 3]))
            .unwrap();
        let v: Option<modhost_sdk::Bytes> = c.storage_get("tips", "101").unwrap();
        assert_eq!(v.unwrap().0, vec![1, 2, 3]);
        let missing: Option<String> = c.storage_get("tips", "nope").unwrap();
        assert!(missing.is_none());
        let entries = c
            .storage_iter::<String>("tips", &IterOptions::new().prefix("1").limit(2).reverse(true))
            .unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].key.as_str(), entries[0].value.as_str()), ("101", "abc"));
        c.storage_transaction("tips", &[StorageOp::put("a", &42u32).unwrap(), StorageOp::delete("b")])
            .unwrap();
        let usage = c.storage_usage().unwrap();
        assert_eq!((usage.bytes, usage.keys, usage.trees), (10, 1, 1));
        assert_eq!(usage.quota.unwrap().max_bytes, 64);
        let err = c.storage_insert("tips", "x", &1).unwrap_err();
        assert_eq!(err.code(), Some("permission_denied"));
        assert!(err.to_string().contains("write_storage"), "{err}");
        let err = c.get_block_height().unwrap_err();
        assert!(
            matches!(err, Error::Protocol(ref m) if m.contains("get_block_height")),
            "wrong result type: {err}"
        );
        let raw = c
            .request_raw("anything", &Value::from_pairs([("k", Value::Bool(true))]))
            .unwrap();
        assert_eq!(raw, Value::Nil);
    });

    let r = host.next_request("storage_insert");
    assert_eq!(
        r.params,
        Value::from_pairs([
            ("tree", "tips".into()),
            ("key", "101".into()),
            ("value", Value::Bin(vec![1, 2, 3]))
        ])
    );
    host.respond(r.id, Value::Bool(true));
    let r = host.next_request("storage_get");
    host.respond(r.id, Value::Bin(vec![1, 2, 3]));
    let r = host.next_request("storage_get");
    host.respond(r.id, Value::Nil);
    let r = host.next_request("storage_iter");
    assert_eq!(
        r.params,
        Value::from_pairs([
            ("tree", "tips".into()),
            ("prefix", "1".into()),
            ("reverse", true.into()),
            ("limit", 2u64.into())
        ])
    );
    host.respond(
        r.id,
        Value::Array(vec![Value::from_pairs([
            ("key", "101".into()),
            ("value", "abc".into()),
        ])]),
    );
    let r = host.next_request("storage_transaction");
    assert_eq!(
        r.params["ops"],
        Value::Array(vec![
            Value::from_pairs([("op", "put".into()), ("key", "a".into()), ("value", 42u64.into())]),
            Value::from_pairs([("op", "delete".into()), ("key", "b".into())]),
        ])
    );
    host.respond(r.id, Value::Bool(true));
    let r = host.next_request("storage_usage");
    let quota = Value::from_pairs([
        ("maxBytes", 64u64.into()),
        ("maxKeys", 10u64.into()),
        ("maxTrees", 2u64.into()),
        ("maxValueBytes", 8u64.into()),
        ("maxKeyBytes", 8u64.into()),
    ]);
    host.respond(
        r.id,
        Value::from_pairs([
            ("bytes", 10u64.into()),
            ("keys", 1u64.into()),
            ("trees", 1u64.into()),
            ("quota", quota),
        ]),
    );
    let r = host.next_request("storage_insert");
    host.send(&Message::Response(Response {
        id: r.id,
        result: None,
        error: Some(WireError {
            code: "permission_denied".into(),
            message: "storage_insert requires the \"write_storage\" capability".into(),
            data: Some(Value::from_pairs([("capability", "write_storage".into())])),
        }),
    }));
    let r = host.next_request("get_block_height");
    host.respond(r.id, "not a number".into());
    let r = host.next_request("anything");
    host.send(&Message::Response(Response {
        id: r.id,
        result: None,
        error: None,
    }));
    t.join().unwrap();
}

#[test]
fn events_are_acknowledged_when_the_next_is_taken_or_explicitly() {
    let (client, mut host, _) = start("example");
    let nb = |h: u64| {
        Value::from_pairs([
            ("hash", format!("{h:064x}").into()),
            ("height", h.into()),
            ("time", 1u64.into()),
            ("tx_count", 1u64.into()),
        ])
    };
    host.event(1, "NewBlock", nb(1), None);
    host.event(2, "NewBlock", nb(2), None);
    host.event(5, "NewBlock", nb(5), Some(2));
    host.event(6, "other:thing", Value::from_pairs([("x", 1u64.into())]), None);
    // A peer that writes a large integer as a float (against the spec) still gets through.
    host.send(&Message::Log(LogMessage {
        level: LogLevel::Info,
        message: "-".into(),
        fields: None,
    })); // ignored kind for a module
    let float_time = Value::from_pairs([
        ("t", "event".into()),
        ("seq", Value::F64(7.0)),
        ("type", "NewBlock".into()),
        ("payload", nb(7)),
        ("time", Value::F64(1.7e12)),
    ]);
    host.send_raw(&encode_frame(&float_time, DEFAULT_MAX_FRAME_BYTES).unwrap());

    let (tx, rx) = mpsc::channel();
    let c = client.clone();
    let consumer = thread::spawn(move || {
        let mut events = c.events();
        let e1 = events.next().unwrap();
        assert_eq!((e1.seq, e1.new_block().unwrap().height), (1, 1));
        tx.send("took 1").unwrap();
        let e2 = events.next().unwrap(); // acks 1
        assert_eq!(e2.seq, 2);
        let e5 = events.next().unwrap(); // acks 2
        assert_eq!((e5.seq, e5.missed), (5, 2));
        e5.ack(); // explicit: acks 5
        e5.ack(); // no second ack
        let e6 = events.next().unwrap(); // 5 already acked: nothing sent
        assert!(e6.new_block().is_none());
        assert!(
            matches!(e6.kind().unwrap(), modhost_sdk::EventKind::Other { ref type_, .. } if type_ == "other:thing")
        );
        let e7 = events.next().unwrap(); // acks 6
        assert_eq!(
            (e7.seq, e7.time, e7.new_block().unwrap().height),
            (7, 1_700_000_000_000, 7)
        );
        tx.send("took 7").unwrap();
        // Blocks until shutdown ends the stream.
        assert!(events.next().is_none());
        assert!(events.next().is_none(), "stays ended");
    });

    assert_eq!(rx.recv().unwrap(), "took 1");
    let acks: Vec<u64> = (0..4)
        .map(|_| match host.recv() {
            Message::Ack(a) => a.seq,
            other => panic!("expected ack, got {other:?}"),
        })
        .collect();
    assert_eq!(rx.recv().unwrap(), "took 7");
    assert_eq!(acks, vec![1, 2, 5, 6]);
    // The stream ends with shutdown; taking "next" first acks 7.
    host.invoke(
        1,
        "shutdown",
        Value::from_pairs([("reason", "test".into()), ("timeout_ms", 500u64.into())]),
    );
    let mut saw_ack7 = false;
    let result = loop {
        match host.recv() {
            Message::Ack(a) => {
                assert_eq!(a.seq, 7);
                saw_ack7 = true;
            }
            Message::InvocationResult(r) => break r,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(result.id, 1);
    consumer.join().unwrap();
    assert!(saw_ack7 || matches!(host.recv(), Message::Ack(Ack { seq: 7 })));
}

#[test]
fn invocations_and_shutdown() {
    let (client, mut host, _) = start("example");
    let handled = Arc::new(AtomicBool::new(false));
    let h2 = handled.clone();
    client.on_shutdown(move |s| {
        assert_eq!(s.reason, "host shutdown");
        assert_eq!(s.timeout_ms, 5000);
        thread::sleep(Duration::from_millis(50)); // the answer waits for the handler
        h2.store(true, Ordering::SeqCst);
    });
    client.on_invocation("cli", |params: Value| -> Result<Value, (&str, &str)> {
        match params["args"][0].as_str() {
            Some("hello") => Ok(Value::from("world")),
            _ => Err(("invalid_params", "say hello")),
        }
    });
    // A handler may make requests: the reader thread is free while it runs.
    let c = client.clone();
    client.on_invocation("rpc", move |_p: Value| {
        c.get_block_height().map_err(modhost_sdk::HandlerError::from)
    });
    client.on_invocation("timer", |_p: Value| -> Result<(), (&str, &str)> { panic!("boom") });

    host.invoke(1, "health", Value::Nil);
    let r = host.invocation_result();
    assert_eq!(
        (r.id, r.result.clone()),
        (1, Some(Value::from_pairs([("status", Value::from("ok"))])))
    );

    host.invoke(
        2,
        "cli",
        Value::from_pairs([("args", Value::Array(vec!["hello".into()]))]),
    );
    let r = host.invocation_result();
    assert_eq!((r.id, r.result), (2, Some(Value::from("world"))));

    host.invoke(3, "cli", Value::map());
    let r = host.invocation_result();
    assert_eq!(r.error.as_ref().map(|e| e.code.as_str()), Some("invalid_params"));

    host.invoke(4, "module_api", Value::map());
    let r = host.invocation_result();
    let e = r.error.expect("unknown kinds are refused");
    assert_eq!(e.code, "unknown_method");
    assert_eq!(e.message, "this module does not handle module_api invocations");

    host.invoke(5, "rpc", Value::map());
    let Message::Request(req) = host.recv() else {
        panic!("the rpc handler's request")
    };
    assert_eq!(req.method, "get_block_height");
    host.respond(req.id, 101u64.into());
    let r = host.invocation_result();
    assert_eq!((r.id, r.result), (5, Some(Value::UInt(101))));

    host.invoke(6, "timer", Value::map());
    let r = host.invocation_result();
    assert_eq!(r.error.map(|e| e.code), Some("module_error".to_owned()));

    host.invoke(
        7,
        "config",
        Value::from_pairs([("config", Value::from_pairs([("interval", 9u64.into())]))]),
    );
    let r = host.invocation_result();
    assert!(r.error.is_none());
    assert_eq!(client.config()["interval"].as_u64(), Some(9));

    assert!(!client.is_shutting_down());
    let waiter = {
        let c = client.clone();
        thread::spawn(move || c.wait_shutdown())
    };
    host.send_raw(&hex_frame("0000004b84a174aa696e766f636174696f6ea2696401a46b696e64a873687574646f776ea6706172616d7382a6726561736f6ead686f73742073687574646f776eaa74696d656f75745f6d73cd1388"));
    let r = host.invocation_result();
    assert_eq!(r.id, 1);
    assert_eq!(r.result, Some(Value::from_pairs([("stopped", Value::Bool(true))])));
    assert!(handled.load(Ordering::SeqCst), "the handler ran before the answer");
    let sd = waiter.join().unwrap().unwrap();
    assert_eq!(sd.reason, "host shutdown");
    assert!(client.is_shutting_down());
    assert!(client.events().next().is_none(), "the event stream ends after shutdown");
}

#[test]
fn an_answer_that_cannot_be_sent_is_an_error_for_the_caller() {
    let (client, mut host, _) = start("example");
    // The fake host's welcome says max_frame_bytes = 1 MiB.
    client.on_invocation("module_api", |_p: Value| -> Result<Value, (&str, &str)> {
        Ok(Value::from(vec![7u8; 2 << 20]))
    });
    client.on_invocation("health", |_p: Value| -> Result<Value, (&str, &str)> {
        Ok(Value::from("x".repeat((1 << 20) + 1)))
    });
    client.on_invocation("rpc", |_p: Value| -> Result<Value, modhost_sdk::HandlerError> {
        Err(modhost_sdk::HandlerError::new("module_error", "e".repeat(2 << 20)))
    });
    host.invoke(1, "module_api", Value::map());
    let r = host.invocation_result();
    assert_eq!(r.id, 1);
    let e = r.error.expect("an error, not silence");
    assert_eq!(e.code, "result_too_large");
    assert!(e.message.contains("max_frame_bytes"), "{}", e.message);
    // 1 MiB and a byte of strings: over max_total_string_bytes, which the host would refuse.
    host.invoke(4, "health", Value::map());
    let r = host.invocation_result();
    assert_eq!(r.id, 4);
    let e = r.error.expect("an error, not silence");
    assert_eq!(e.code, "result_too_large");
    assert!(e.message.contains("max_total_string_bytes = 1048576"), "{}", e.message);
    assert!(e.message.contains("as binary"), "{}", e.message);
    host.invoke(2, "rpc", Value::map());
    let r = host.invocation_result();
    assert_eq!(
        (r.id, r.error.map(|e| e.code)),
        (2, Some("result_too_large".to_owned()))
    );
    // The connection is still usable.
    host.invoke(3, "health", Value::Nil);
    assert_eq!(host.invocation_result().id, 3);
}

fn hex_frame(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn refused_handshake_is_a_remote_error() {
    let (a, b) = UnixStream::pair().unwrap();
    let host = thread::spawn(move || {
        let mut h = FakeHost::new(b);
        let _ = h.recv();
        h.send(&Message::Goodbye(Goodbye {
            error: Some(WireError {
                code: "protocol_error".into(),
                message: "this channel belongs to module \"a\", not \"b\"".into(),
                data: None,
            }),
        }));
    });
    let err = Client::from_stream(a, "b", "1.0.0").err().expect("refused");
    host.join().unwrap();
    assert_eq!(err.code(), Some("protocol_error"));
    assert!(err.to_string().contains("belongs to module"), "{err}");
}

#[test]
fn host_going_away_fails_pending_requests_and_ends_everything() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let t = thread::spawn(move || c.get_chain_tip());
    let Message::Request(_) = host.recv() else {
        panic!("request")
    };
    drop(host);
    assert!(matches!(t.join().unwrap(), Err(Error::Closed)));
    assert!(matches!(client.wait_shutdown(), Err(Error::Closed)));
    assert!(client.events().next().is_none());
    assert!(client.is_closed());
    assert!(matches!(client.get_chain_tip(), Err(Error::Closed)));
    assert!(matches!(client.ready(), Err(Error::Closed)));
    assert_eq!(client.close_reason().as_deref(), Some("the host closed the connection"));
}

#[test]
fn a_framing_error_from_the_host_closes_the_connection() {
    let (client, mut host, _) = start("example");
    host.send_raw(&[0, 0, 0, 0]);
    assert!(matches!(client.wait_shutdown(), Err(Error::Closed)));
    assert!(client.close_reason().unwrap().contains("zero-length"));
    // The client closed its end: the host sees EOF.
    assert!(host.recv_or_eof().is_none());

    let (client, mut host, _) = start("example");
    host.send_raw(&[0x7f, 0xff, 0xff, 0xff, 0x00]); // above max_frame_bytes from welcome (1 MiB)
    assert!(matches!(client.wait_shutdown(), Err(Error::Closed)));
    assert!(client.close_reason().unwrap().contains("exceeds"));
}

#[test]
fn a_bad_body_from_the_host_is_reported_and_skipped() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let t = thread::spawn(move || c.get_block_height());
    let Message::Request(r) = host.recv() else {
        panic!("request")
    };
    host.send_raw(&[0, 0, 0, 1, 0xc1]); // invalid MessagePack
    host.send_raw(&[0, 0, 0, 3, 0xd4, 0x01, 0x02]); // extension type
    host.send_raw(&[
        0, 0, 0, 11, 0x82, 0xa1, b't', 0xa3, b'f', b'o', b'o', 0xa2, b'i', b'd', 0x05,
    ]); // unknown kind: ignored
    host.respond(r.id, 7u64.into());
    assert_eq!(t.join().unwrap().unwrap(), 7);
    // The two undecodable frames were reported to the host log.
    for _ in 0..2 {
        let Message::Log(l) = host.recv() else { panic!("log") };
        assert_eq!(l.level, LogLevel::Warn);
        assert!(l.message.contains("undecodable"), "{}", l.message);
    }
    assert!(!client.is_closed());
}

#[test]
fn logs_ready_and_goodbye() {
    let (client, mut host, _) = start("example");
    client.ready().unwrap();
    client.log(LogLevel::Info, "started").unwrap();
    client
        .log_fields(
            LogLevel::Debug,
            "with fields",
            &Value::from_pairs([("height", 101u64.into())]),
        )
        .unwrap();
    client.warn("careful");
    // The host keeps 8,192 characters of a message; 3 MB would be refused (max_total_string_bytes).
    client.log(LogLevel::Info, &"é".repeat(1_500_000)).unwrap();
    client.goodbye(Some(("module_error", "done").into())).unwrap();
    assert_eq!(host.recv(), Message::Ready);
    assert_eq!(
        host.recv(),
        Message::Log(LogMessage {
            level: LogLevel::Info,
            message: "started".into(),
            fields: None
        })
    );
    let Message::Log(l) = host.recv() else { panic!("log") };
    assert_eq!(l.fields.unwrap()["height"].as_u64(), Some(101));
    let Message::Log(l) = host.recv() else { panic!("log") };
    assert_eq!((l.level, l.message.as_str()), (LogLevel::Warn, "careful"));
    let Message::Log(l) = host.recv() else { panic!("log") };
    assert_eq!(l.message, "é".repeat(8192), "cut to what the host keeps");
    let Message::Goodbye(g) = host.recv() else {
        panic!("goodbye")
    };
    assert_eq!(g.error.unwrap().code, "module_error");
    assert!(host.recv_or_eof().is_none(), "closed after goodbye");
    assert!(matches!(client.get_chain_tip(), Err(Error::Closed)));
}

#[test]
fn bootstrap_reads_arguments_then_environment() {
    use modhost_sdk::Bootstrap;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let env = vec![
        ("MODULE_ID".to_string(), "from-env".to_string()),
        ("DATA_DIR".to_string(), "/env/dir".to_string()),
        ("MODHOST_FD".to_string(), "7".to_string()),
        ("MODULE_CONFIG_TARGETS".to_string(), "[1,3]".to_string()),
    ];
    let b = Bootstrap::from_parts(&s(&["--module-id", "from-args", "--data-dir=/arg/dir"]), &env);
    assert_eq!(b.module_id.as_deref(), Some("from-args"));
    assert_eq!(b.data_dir.as_deref(), Some(std::path::Path::new("/arg/dir")));
    assert_eq!(b.fd, 7);
    assert_eq!(b.config_env.get("TARGETS").map(String::as_str), Some("[1,3]"));
    let b = Bootstrap::from_parts(&[], &env[..2]);
    assert_eq!(b.module_id.as_deref(), Some("from-env"));
    assert_eq!(b.fd, 3);
    let b = Bootstrap::from_parts(&[], &[]);
    assert_eq!((b.module_id, b.data_dir), (None, None));
}

#[test]
fn every_typed_method_sends_its_method_and_params() {
    let (client, mut host, _) = start("example");
    let tx = "aa".repeat(32);
    let c = client.clone();
    let txid = tx.clone();
    let t = thread::spawn(move || {
        c.get_block(&txid).unwrap();
        c.get_block_header(&txid).unwrap();
        c.get_transaction(&txid).unwrap();
        c.has_transaction(&txid).unwrap();
        c.get_utxo(&txid, 3).unwrap();
        c.get_mempool_transactions().unwrap();
        c.get_mempool_transaction(&txid).unwrap();
        c.get_mempool_entry(&txid).unwrap();
        c.check_transaction_in_mempool(&txid).unwrap();
        assert_eq!(c.get_fee_estimate(6).unwrap(), 2.5);
        assert_eq!(c.submit_transaction("0200").unwrap(), txid);
        c.storage_list_trees().unwrap();
        c.storage_drop_tree("t").unwrap();
        c.storage_contains_key("t", "k").unwrap();
        c.storage_remove("t", "k").unwrap();
        c.subscribe_events(&["NewBlock", "ChainReorg"]).unwrap();
        c.unsubscribe_events(&["ChainReorg"]).unwrap();
        assert_eq!(
            c.publish_event("price", &Value::from_pairs([("usd", 1u64.into())]))
                .unwrap(),
            "example:price"
        );
        c.get_config().unwrap();
    });
    let h = || Value::from_pairs([("hash", tx.clone().into())]);
    let x = || Value::from_pairs([("txid", tx.clone().into())]);
    let t_k = || Value::from_pairs([("tree", "t".into()), ("key", "k".into())]);
    let expected: Vec<(&str, Value, Value)> = vec![
        (
            "get_block",
            Value::from_pairs([
                ("hash", tx.clone().into()),
                ("include_hex", true.into()),
                ("tx_offset", 0u64.into()),
            ]),
            Value::Nil,
        ),
        ("get_block_header", h(), Value::Nil),
        ("get_transaction", x(), Value::Nil),
        ("has_transaction", x(), false.into()),
        (
            "get_utxo",
            Value::from_pairs([("txid", tx.clone().into()), ("vout", 3u64.into())]),
            Value::Nil,
        ),
        // get_mempool_transactions reads the pages of get_mempool_txids.
        (
            "get_mempool_txids",
            Value::from_pairs([("after", 0u64.into())]),
            Value::from_pairs([
                ("txids", Value::Array(vec![])),
                ("next_after", Value::Nil),
                ("count", 0u64.into()),
                ("order", "accepted".into()),
            ]),
        ),
        ("get_mempool_transaction", x(), Value::Nil),
        ("get_mempool_entry", x(), Value::Nil),
        ("check_transaction_in_mempool", x(), true.into()),
        (
            "get_fee_estimate",
            Value::from_pairs([("target_blocks", 6u64.into())]),
            2.5.into(),
        ),
        (
            "submit_transaction",
            // Valid hex travels as binary (max_total_string_bytes).
            Value::from_pairs([("hex", Value::Bin(vec![2, 0]))]),
            tx.clone().into(),
        ),
        ("storage_list_trees", Value::map(), Value::Array(vec!["t".into()])),
        (
            "storage_drop_tree",
            Value::from_pairs([("tree", "t".into())]),
            true.into(),
        ),
        ("storage_contains_key", t_k(), false.into()),
        ("storage_remove", t_k(), false.into()),
        (
            "subscribe_events",
            Value::from_pairs([("types", Value::Array(vec!["NewBlock".into(), "ChainReorg".into()]))]),
            Value::Array(vec![]),
        ),
        (
            "unsubscribe_events",
            Value::from_pairs([("types", Value::Array(vec!["ChainReorg".into()]))]),
            Value::Array(vec![]),
        ),
        (
            "publish_event",
            Value::from_pairs([
                ("name", "price".into()),
                ("payload", Value::from_pairs([("usd", 1u64.into())])),
            ]),
            "example:price".into(),
        ),
        ("get_config", Value::map(), Value::map()),
    ];
    for (method, params, result) in expected {
        let r = host.next_request(method);
        assert_eq!(r.params, params, "{method}");
        host.respond(r.id, result);
    }
    t.join().unwrap();
}
