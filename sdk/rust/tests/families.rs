//! The typed methods of the files, modules, RPC/CLI, timers, metrics, lightning, network
//! (with HTTP) and mining families against a fake host: each sends its wire method with the params the host's
//! schema expects (checked on the host side, decoded) and decodes a realistic result; and the
//! typed invocation helpers route each kind to their handler with its params decoded.

use std::collections::BTreeMap;
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::Duration;

use modhost_sdk::protocol::*;
use modhost_sdk::*;
use serde::{Deserialize, Serialize};

mod common;
use common::{start, FakeHost};

fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::from_pairs(pairs)
}
fn arr<const N: usize>(items: [Value; N]) -> Value {
    Value::Array(items.into())
}
fn strs(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(*s)).collect())
}

/// A request the fake host expects: method, params, and its answer (a result or an error's
/// code and message).
type Expected<'a> = (&'a str, Value, std::result::Result<Value, (&'a str, &'a str)>);

/// Serves the requests `expected` lists, in order: checks each method and its params, then
/// answers with the given result or error.
fn serve(host: &mut FakeHost, expected: Vec<Expected>) {
    for (method, params, answer) in expected {
        let r = host.next_request(method);
        assert_eq!(r.params, params, "params of {method}");
        match answer {
            Ok(result) => host.respond(r.id, result),
            Err((code, message)) => host.send(&Message::Response(Response {
                id: r.id,
                result: None,
                error: Some(WireError {
                    code: code.into(),
                    message: message.into(),
                    data: None,
                }),
            })),
        }
    }
}

#[test]
fn files() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let t = thread::spawn(move || {
        assert_eq!(c.read_file("reports/a.bin").unwrap(), vec![0, 159, 146, 150]);
        assert_eq!(c.read_file_string("notes.txt").unwrap(), "héllo\n");
        let err = c.read_file_string("reports/a.bin").unwrap_err();
        assert_eq!(err.code(), Some("invalid_params"));
        c.write_file("notes.txt", "héllo\n").unwrap();
        c.write_file("reports/a.bin", [0u8, 159, 146, 150]).unwrap();
        c.append_file("log.txt", b"line\n").unwrap();
        c.delete_file("old.txt").unwrap();
        c.create_directory("reports/2024").unwrap();
        let entries = c.list_directory("").unwrap();
        assert_eq!(
            entries,
            vec![
                DirEntry {
                    name: "link".into(),
                    type_: FileType::Symlink
                },
                DirEntry {
                    name: "notes.txt".into(),
                    type_: FileType::File
                },
                DirEntry {
                    name: "pipe".into(),
                    type_: FileType::Other
                },
                DirEntry {
                    name: "reports".into(),
                    type_: FileType::Directory
                },
                DirEntry {
                    name: "sock".into(),
                    type_: FileType::Other
                },
            ]
        );
        let meta = c.get_file_metadata("notes.txt").unwrap();
        assert_eq!(
            meta,
            FileMetadata {
                path: "notes.txt".into(),
                size: 7,
                is_file: true,
                is_directory: false,
                modified: 1_718_000_000_123,
                created: None
            }
        );
        let dir = c.get_file_metadata(".").unwrap();
        assert_eq!(
            (dir.path.as_str(), dir.is_directory, dir.created),
            ("", true, Some(1_700_000_000_000))
        );
        let err = c.delete_file("../escape").unwrap_err();
        assert_eq!(err.code(), Some("permission_denied"));
    });
    let path = |p: &str| map([("path", p.into())]);
    serve(
        &mut host,
        vec![
            // No encoding: the host answers bytes (MessagePack bin).
            (
                "read_file",
                path("reports/a.bin"),
                Ok(Value::Bin(vec![0, 159, 146, 150])),
            ),
            (
                "read_file",
                map([("path", "notes.txt".into()), ("encoding", "utf8".into())]),
                Ok("héllo\n".into()),
            ),
            (
                "read_file",
                map([("path", "reports/a.bin".into()), ("encoding", "utf8".into())]),
                Err((
                    "invalid_params",
                    "\"reports/a.bin\" is not valid UTF-8; read it without an encoding to get bytes",
                )),
            ),
            // Data always travels as binary, strings as their UTF-8 bytes; no append unless asked.
            (
                "write_file",
                map([
                    ("path", "notes.txt".into()),
                    ("data", Value::Bin("héllo\n".as_bytes().to_vec())),
                ]),
                Ok(true.into()),
            ),
            (
                "write_file",
                map([
                    ("path", "reports/a.bin".into()),
                    ("data", Value::Bin(vec![0, 159, 146, 150])),
                ]),
                Ok(true.into()),
            ),
            (
                "write_file",
                map([
                    ("path", "log.txt".into()),
                    ("data", Value::Bin(b"line\n".to_vec())),
                    ("append", true.into()),
                ]),
                Ok(true.into()),
            ),
            ("delete_file", path("old.txt"), Ok(true.into())),
            ("create_directory", path("reports/2024"), Ok(true.into())),
            (
                "list_directory",
                path(""),
                Ok(arr([
                    map([("name", "link".into()), ("type", "symlink".into())]),
                    map([("name", "notes.txt".into()), ("type", "file".into())]),
                    map([("name", "pipe".into()), ("type", "other".into())]),
                    map([("name", "reports".into()), ("type", "directory".into())]),
                    // A type this SDK does not know.
                    map([("name", "sock".into()), ("type", "socket".into())]),
                ])),
            ),
            (
                "get_file_metadata",
                path("notes.txt"),
                Ok(map([
                    ("path", "notes.txt".into()),
                    ("size", 7u64.into()),
                    ("is_file", true.into()),
                    ("is_directory", false.into()),
                    ("modified", 1_718_000_000_123u64.into()),
                    ("created", Value::Nil),
                ])),
            ),
            (
                "get_file_metadata",
                path("."),
                Ok(map([
                    ("path", "".into()),
                    ("size", 4096u64.into()),
                    ("is_file", false.into()),
                    ("is_directory", true.into()),
                    ("modified", 1_718_000_000_000u64.into()),
                    ("created", 1_700_000_000_000u64.into()),
                ])),
            ),
            (
                "delete_file",
                path("../escape"),
                Err(("permission_denied", "read_filesystem: \"..\" is not allowed")),
            ),
        ],
    );
    t.join().unwrap();
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Quote {
    pair: String,
    price: f64,
}

#[test]
fn modules() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let t = thread::spawn(move || {
        let q: Quote = c
            .call_module("price-feed", "quote", &Value::from_pairs([("pair", "BTCUSD".into())]))
            .unwrap();
        assert_eq!(
            q,
            Quote {
                pair: "BTCUSD".into(),
                price: 64_000.5
            }
        );
        let n: u64 = c.call_module("counter", "next", &()).unwrap();
        assert_eq!(n, 42);
        let v: Value = c
            .call_module_timeout(
                "slow",
                "work",
                &Quote {
                    pair: "x".into(),
                    price: 1.0,
                },
                Duration::from_millis(2500),
            )
            .unwrap();
        assert!(v.is_nil());
        let err = c.call_module::<_, Value>("price-feed", "nope", &()).unwrap_err();
        assert_eq!(err.code(), Some("unknown_method"));
        c.register_module_api(&["quote", "pairs"]).unwrap();
        c.unregister_module_api().unwrap();
        let all = c.discover_modules().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[0],
            ModuleInfo {
                name: "example".into(),
                version: "1.2.3".into(),
                runtime: "native".into(),
                state: "running".into(),
                description: Some("an example".into()),
                api: vec!["pairs".into(), "quote".into()],
            }
        );
        assert!(all[0].is_running());
        assert_eq!(
            (all[1].description.as_deref(), all[1].api.len(), all[1].is_running()),
            (None, 0, false)
        );
        assert_eq!(
            c.get_module_info("price-feed").unwrap().map(|m| m.state),
            Some("crashed".to_owned())
        );
        assert!(c.get_module_info("ghost").unwrap().is_none());
        assert!(!c.is_module_available("price-feed").unwrap());
    });
    let module_info = |name: &str, state: &str, description: Value, api: Value| {
        map([
            ("name", name.into()),
            ("version", "1.2.3".into()),
            ("runtime", "native".into()),
            ("state", state.into()),
            ("description", description),
            ("api", api),
        ])
    };
    serve(
        &mut host,
        vec![
            (
                "call_module",
                map([
                    ("target", "price-feed".into()),
                    ("method", "quote".into()),
                    ("params", map([("pair", "BTCUSD".into())])),
                ]),
                Ok(map([("pair", "BTCUSD".into()), ("price", 64_000.5.into())])),
            ),
            // `&()` is nil: the callee gets null params.
            (
                "call_module",
                map([
                    ("target", "counter".into()),
                    ("method", "next".into()),
                    ("params", Value::Nil),
                ]),
                Ok(42u64.into()),
            ),
            (
                "call_module",
                map([
                    ("target", "slow".into()),
                    ("method", "work".into()),
                    ("params", map([("pair", "x".into()), ("price", 1.0.into())])),
                    ("timeout_ms", 2500u64.into()),
                ]),
                Ok(Value::Nil),
            ),
            (
                "call_module",
                map([
                    ("target", "price-feed".into()),
                    ("method", "nope".into()),
                    ("params", Value::Nil),
                ]),
                Err((
                    "unknown_method",
                    "module \"price-feed\" has no API method \"nope\"; its API: pairs, quote",
                )),
            ),
            (
                "register_module_api",
                map([("methods", strs(&["quote", "pairs"]))]),
                Ok(true.into()),
            ),
            ("unregister_module_api", Value::map(), Ok(true.into())),
            (
                "discover_modules",
                Value::map(),
                Ok(arr([
                    module_info("example", "running", "an example".into(), strs(&["pairs", "quote"])),
                    module_info("price-feed", "crashed", Value::Nil, strs(&[])),
                ])),
            ),
            (
                "get_module_info",
                map([("module", "price-feed".into())]),
                Ok(module_info("price-feed", "crashed", Value::Nil, strs(&[]))),
            ),
            ("get_module_info", map([("module", "ghost".into())]), Ok(Value::Nil)),
            (
                "is_module_available",
                map([("module", "price-feed".into())]),
                Ok(false.into()),
            ),
        ],
    );
    t.join().unwrap();
}

#[test]
fn rpc_cli_and_timers() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let t = thread::spawn(move || {
        assert_eq!(
            c.register_rpc_endpoint("last", "The last recorded block").unwrap(),
            "example.last"
        );
        assert!(!c.unregister_rpc_endpoint("gone").unwrap());
        let spec = CliSpec::new()
            .about("Recorded blocks")
            .command(CliCommand::new("last").about("The last recorded block"))
            .command(
                CliCommand::new("show")
                    .arg(CliArg::required("height").about("a block height"))
                    .arg(CliArg::optional("format")),
            );
        c.register_cli_spec(&spec).unwrap();
        c.register_cli_spec(&CliSpec::new().name("ex").command(CliCommand::new("ping")))
            .unwrap();
        assert_eq!(c.register_timer(0.5).unwrap(), 7);
        assert_eq!(c.register_timer(60.0).unwrap(), 8);
        assert_eq!(c.schedule_task(0.0).unwrap(), 9);
        assert!(c.cancel_timer(7).unwrap());
        assert!(!c.cancel_timer(1234).unwrap());
        let err = c.register_timer(-1.0).unwrap_err();
        assert_eq!(err.code(), Some("invalid_params"));
    });
    serve(
        &mut host,
        vec![
            (
                "register_rpc_endpoint",
                map([
                    ("method", "last".into()),
                    ("description", "The last recorded block".into()),
                ]),
                Ok("example.last".into()),
            ),
            (
                "unregister_rpc_endpoint",
                map([("method", "gone".into())]),
                Ok(false.into()),
            ),
            (
                "register_cli_spec",
                // Absent optional fields are left out (the host's schema refuses nil for them).
                map([(
                    "spec",
                    map([
                        ("about", "Recorded blocks".into()),
                        (
                            "commands",
                            arr([
                                map([("name", "last".into()), ("about", "The last recorded block".into())]),
                                map([
                                    ("name", "show".into()),
                                    (
                                        "args",
                                        arr([
                                            map([
                                                ("name", "height".into()),
                                                ("required", true.into()),
                                                ("about", "a block height".into()),
                                            ]),
                                            map([("name", "format".into()), ("required", false.into())]),
                                        ]),
                                    ),
                                ]),
                            ]),
                        ),
                    ]),
                )]),
                Ok(true.into()),
            ),
            (
                "register_cli_spec",
                map([(
                    "spec",
                    map([
                        ("name", "ex".into()),
                        ("commands", arr([map([("name", "ping".into())])])),
                    ]),
                )]),
                Ok(true.into()),
            ),
            // Seconds travel as floats, as the TypeScript SDK sends them.
            (
                "register_timer",
                map([("interval_seconds", Value::F64(0.5))]),
                Ok(7u64.into()),
            ),
            (
                "register_timer",
                map([("interval_seconds", Value::F64(60.0))]),
                Ok(8u64.into()),
            ),
            (
                "schedule_task",
                map([("delay_seconds", Value::F64(0.0))]),
                Ok(9u64.into()),
            ),
            ("cancel_timer", map([("timer_id", 7u64.into())]), Ok(true.into())),
            ("cancel_timer", map([("timer_id", 1234u64.into())]), Ok(false.into())),
            (
                "register_timer",
                map([("interval_seconds", Value::F64(-1.0))]),
                Err((
                    "invalid_params",
                    "register_timer: interval_seconds must be greater than 0",
                )),
            ),
        ],
    );
    t.join().unwrap();
}

#[test]
fn metrics() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let t = thread::spawn(move || {
        c.report_metric("blocks_seen_total", 1, MetricKind::Counter, &[])
            .unwrap();
        c.report_metric("mempool_bytes", 1234.5, MetricKind::Gauge, &[("pool", "main")])
            .unwrap();
        c.report_metric(
            "fee_rate",
            [1.5, 2.0, 10.0],
            MetricKind::Histogram,
            &[("pool", "main"), ("kind", "segwit")],
        )
        .unwrap();
        let mine = c.get_module_metrics("example").unwrap();
        assert_eq!(mine.len(), 2);
        assert_eq!(
            mine[0],
            Metric {
                name: "blocks_seen_total".into(),
                kind: MetricKind::Counter,
                value: MetricValue::Number(3.0),
                labels: BTreeMap::new(),
                timestamp: 1_718_000_000_123,
            }
        );
        assert_eq!(mine[0].value.as_f64(), Some(3.0));
        assert_eq!(mine[1].kind, MetricKind::Histogram);
        let h = mine[1]
            .value
            .histogram()
            .expect("a histogram reads back as its bucket summary");
        assert_eq!(
            (h.count, h.sum, h.buckets.as_slice()),
            (3, 13.5, &[(2.5, 2), (10.0, 3)][..])
        );
        assert_eq!(mine[1].value.observations(), None);
        assert_eq!(mine[1].labels.get("pool").map(String::as_str), Some("main"));
        let all = c.get_all_metrics().unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), vec!["example", "other"]);
        assert_eq!(all["example"], mine);
        assert!(all["other"].is_empty());
    });
    let counter = map([
        ("name", "blocks_seen_total".into()),
        ("kind", "counter".into()),
        ("value", 3u64.into()), // whole numbers come back as integers
        ("labels", Value::map()),
        ("timestamp", 1_718_000_000_123u64.into()),
    ]);
    let histogram = map([
        ("name", "fee_rate".into()),
        ("kind", "histogram".into()),
        // Read back, a histogram is its bucket summary (what the host's metrics service answers).
        (
            "value",
            map([
                ("count", 3u64.into()),
                ("sum", 13.5.into()),
                (
                    "buckets",
                    arr([arr([2.5.into(), 2u64.into()]), arr([10u64.into(), 3u64.into()])]),
                ),
            ]),
        ),
        ("labels", map([("kind", "segwit".into()), ("pool", "main".into())])),
        ("timestamp", 1_718_000_000_124u64.into()),
    ]);
    serve(
        &mut host,
        vec![
            // No labels: the field is left out (the host defaults it to {}).
            (
                "report_metric",
                map([
                    ("name", "blocks_seen_total".into()),
                    ("value", Value::F64(1.0)),
                    ("kind", "counter".into()),
                ]),
                Ok(true.into()),
            ),
            (
                "report_metric",
                map([
                    ("name", "mempool_bytes".into()),
                    ("value", 1234.5.into()),
                    ("kind", "gauge".into()),
                    ("labels", map([("pool", "main".into())])),
                ]),
                Ok(true.into()),
            ),
            (
                "report_metric",
                map([
                    ("name", "fee_rate".into()),
                    ("value", arr([1.5.into(), Value::F64(2.0), Value::F64(10.0)])),
                    ("kind", "histogram".into()),
                    ("labels", map([("pool", "main".into()), ("kind", "segwit".into())])),
                ]),
                Ok(true.into()),
            ),
            (
                "get_module_metrics",
                map([("module", "example".into())]),
                Ok(arr([counter.clone(), histogram.clone()])),
            ),
            (
                "get_all_metrics",
                Value::map(),
                Ok(map([("example", arr([counter, histogram])), ("other", arr([]))])),
            ),
        ],
    );
    t.join().unwrap();
}

#[test]
fn lightning_network_http_and_mining() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let t = thread::spawn(move || {
        assert_eq!(
            c.get_lightning_node_url().unwrap().as_deref(),
            Some("https://ln.example:8080")
        );
        let err = c.get_lightning_node_url().unwrap_err();
        assert_eq!(err.code(), Some("unavailable"));
        assert!(err.to_string().contains("try again later"), "{err}");
        let info: Value = c.get_lightning_info().unwrap();
        assert_eq!(info["alias"].as_str(), Some("node-a"));
        #[derive(Deserialize)]
        struct PaymentState {
            state: String,
            amount_msat: u64,
        }
        let p: PaymentState = c.get_payment_state("pay-1").unwrap();
        assert_eq!((p.state.as_str(), p.amount_msat), ("settled", 21_000));
        c.register_provider(ProviderKind::Payment).unwrap();

        let stats = c.get_network_stats().unwrap();
        assert_eq!(
            stats,
            NetworkStats {
                peer_count: 1,
                hash_rate: 2.0,
                bytes_sent: 5_000_000_000,
                bytes_received: 1024
            }
        );
        let peers = c.get_network_peers().unwrap();
        assert_eq!(
            peers,
            vec![PeerInfo {
                addr: "127.0.0.1:18444".into(),
                transport_type: "tcp".into(),
                services: 1033,
                version: 70016,
                connected_since: 1_718_000_000
            }]
        );

        let res = c
            .http_request(&HttpRequest::get("https://api.example.com/v1/price?pair=BTCUSD"))
            .unwrap();
        assert!(res.is_success());
        assert_eq!((res.status, res.text().unwrap()), (200, "{\"usd\":64000}"));
        assert_eq!(res.header("Content-Type"), Some("application/json"));
        assert_eq!(res.url, "https://api.example.com/v1/price?pair=BTCUSD");
        let req = HttpRequest::post("https://api.example.com/v1/notify", vec![0xff, 0x00])
            .header("content-type", "application/octet-stream")
            .header("x-token", "t")
            .timeout(Duration::from_millis(1500));
        let res = c.http_request(&req).unwrap();
        assert_eq!(
            (res.status, res.body.len(), res.header("location")),
            (302, 0, Some("/elsewhere"))
        );
        assert!(!res.is_success());
        let err = c
            .http_request(&HttpRequest::new("DELETE", "https://other.example.com/"))
            .unwrap_err();
        assert_eq!(err.code(), Some("permission_denied"));

        let t = c.get_block_template(&BlockTemplateOptions::new()).unwrap();
        assert_eq!(
            (
                t.height,
                t.coinbase_value,
                t.transactions.len(),
                t.coinbase_tx.is_none()
            ),
            (102, 5_000_000_180, 1, true)
        );
        assert_eq!(t.transactions[0].fee, 180);
        let t = c
            .get_block_template(&BlockTemplateOptions::new().rule("segwit").coinbase_script("51"))
            .unwrap();
        assert_eq!(t.coinbase_tx.map(|x| x.hex), Some("02000000".to_owned()));
        let r = c.submit_block("0000").unwrap();
        assert_eq!(r.result, SubmitBlockStatus::Rejected);
        assert!(!r.is_accepted());
        assert_eq!(r.reason.as_deref(), Some("high-hash: proof of work failed"));
        let r = c.queue_received_block("0100").unwrap();
        assert!(r.is_accepted());
        assert_eq!(r.hash.as_deref(), Some("ab".repeat(32).as_str()));
        // Bytes as they are, and hex that is not hex sent as text for the host to refuse.
        c.submit_block_bytes(&[9, 9]).unwrap();
        c.submit_transaction_bytes(&[7]).unwrap();
        c.queue_received_block("zz").unwrap();
        let err = c.submit_block("0200").unwrap_err();
        assert!(
            matches!(err, Error::Protocol(ref m) if m.contains("submit_block")),
            "an unknown status is a protocol error: {err}"
        );
    });
    let template = |coinbase: Option<Value>| {
        let mut t = map([
            ("version", 0x2000_0000u64.into()),
            ("previous_block_hash", "cd".repeat(32).into()),
            ("height", 102u64.into()),
            ("bits", 0x207f_ffffu64.into()),
            ("target", format!("7fffff{}", "0".repeat(58)).into()),
            ("cur_time", 1_718_000_100u64.into()),
            ("min_time", 1_718_000_001u64.into()),
            (
                "transactions",
                arr([map([
                    ("txid", "aa".repeat(32).into()),
                    ("wtxid", "bb".repeat(32).into()),
                    ("hex", "0200".into()),
                    ("fee", 180u64.into()),
                    ("weight", 561u64.into()),
                ])]),
            ),
            ("coinbase_value", 5_000_000_180u64.into()),
            ("default_witness_commitment", "6a24aa21a9ed00".into()),
            ("template_id", "t-1".into()),
            ("tx_count", 1u64.into()),
            ("next_page", Value::Nil),
        ]);
        if let Some(cb) = coinbase {
            t.insert("coinbase_tx", cb);
        }
        t
    };
    serve(
        &mut host,
        vec![
            (
                "get_lightning_node_url",
                Value::map(),
                Ok("https://ln.example:8080".into()),
            ),
            (
                "get_lightning_node_url",
                Value::map(),
                Err(("unavailable", "no Lightning provider module is running")),
            ),
            (
                "get_lightning_info",
                Value::map(),
                Ok(map([("alias", "node-a".into()), ("channels", 3u64.into())])),
            ),
            (
                "get_payment_state",
                map([("payment_id", "pay-1".into())]),
                Ok(map([("state", "settled".into()), ("amount_msat", 21_000u64.into())])),
            ),
            ("register_provider", map([("kind", "payment".into())]), Ok(true.into())),
            (
                "get_network_stats",
                Value::map(),
                Ok(map([
                    ("peer_count", 1u64.into()),
                    ("hash_rate", 2u64.into()), // a whole number arrives as an integer
                    ("bytes_sent", 5_000_000_000u64.into()),
                    ("bytes_received", 1024u64.into()),
                ])),
            ),
            (
                "get_network_peers",
                Value::map(),
                Ok(arr([map([
                    ("addr", "127.0.0.1:18444".into()),
                    ("transport_type", "tcp".into()),
                    ("services", 1033u64.into()),
                    ("version", 70016u64.into()),
                    ("connected_since", 1_718_000_000u64.into()),
                ])])),
            ),
            (
                "http_request",
                // Only what was given: no headers, body or timeout.
                map([
                    ("url", "https://api.example.com/v1/price?pair=BTCUSD".into()),
                    ("method", "GET".into()),
                ]),
                Ok(map([
                    ("status", 200u64.into()),
                    (
                        "headers",
                        map([
                            ("content-type", "application/json".into()),
                            ("content-length", "14".into()),
                        ]),
                    ),
                    ("body", Value::Bin(b"{\"usd\":64000}".to_vec())),
                    ("url", "https://api.example.com/v1/price?pair=BTCUSD".into()),
                ])),
            ),
            (
                "http_request",
                map([
                    ("url", "https://api.example.com/v1/notify".into()),
                    ("method", "POST".into()),
                    (
                        "headers",
                        map([
                            ("content-type", "application/octet-stream".into()),
                            ("x-token", "t".into()),
                        ]),
                    ),
                    ("body", Value::Bin(vec![0xff, 0x00])),
                    ("timeout_ms", 1500u64.into()),
                ]),
                Ok(map([
                    ("status", 302u64.into()),
                    ("headers", map([("location", "/elsewhere".into())])),
                    ("body", Value::Bin(vec![])),
                    ("url", "https://api.example.com/v1/notify".into()),
                ])),
            ),
            (
                "http_request",
                map([
                    ("url", "https://other.example.com/".into()),
                    ("method", "DELETE".into()),
                ]),
                Err((
                    "permission_denied",
                    "http_request: network_access does not cover other.example.com:443",
                )),
            ),
            ("get_block_template", Value::map(), Ok(template(None))),
            (
                "get_block_template",
                map([("rules", strs(&["segwit"])), ("coinbase_script", "51".into())]),
                Ok(template(Some(map([
                    ("txid", "ee".repeat(32).into()),
                    // Binary on the wire, hex in the struct (value::hex_from_bin).
                    ("hex", Value::Bin(vec![2, 0, 0, 0])),
                ])))),
            ),
            (
                "submit_block",
                map([("hex", Value::Bin(vec![0, 0]))]),
                Ok(map([
                    ("result", "rejected".into()),
                    ("reason", "high-hash: proof of work failed".into()),
                ])),
            ),
            (
                "queue_received_block",
                map([("hex", Value::Bin(vec![1, 0]))]),
                Ok(map([("result", "accepted".into()), ("hash", "ab".repeat(32).into())])),
            ),
            (
                "submit_block",
                map([("hex", Value::Bin(vec![9, 9]))]),
                Ok(map([("result", "accepted".into())])),
            ),
            (
                "submit_transaction",
                map([("hex", Value::Bin(vec![7]))]),
                Ok("ab".repeat(32).into()),
            ),
            (
                "queue_received_block",
                map([("hex", "zz".into())]),
                Ok(map([("result", "rejected".into())])),
            ),
            (
                "submit_block",
                map([("hex", Value::Bin(vec![2, 0]))]),
                Ok(map([("result", "inconclusive".into())])),
            ),
        ],
    );
    t.join().unwrap();
}

#[derive(Deserialize)]
struct QuoteParams {
    pair: String,
}

#[test]
fn typed_invocation_helpers_route_each_kind() {
    let (client, mut host, _) = start("example");
    client.on_module_api(|call: ModuleApiCall| -> Result<Value, HandlerError> {
        match call.method.as_str() {
            "quote" => {
                let p: QuoteParams = call.params_as()?;
                Ok(map([
                    ("pair", p.pair.into()),
                    ("for", call.caller.into()),
                    ("depth", call.depth.into()),
                ]))
            }
            _ => Err(call.unknown_method()),
        }
    });
    client.on_rpc(|call: RpcCall| -> Result<Value, HandlerError> {
        match call.method.as_str() {
            "echo" => Ok(call.params),
            _ => Err(call.unknown_method()),
        }
    });
    client.on_cli(|call: CliCall| -> Result<String, HandlerError> {
        match call.command.as_str() {
            "greet" => Ok(format!("hello {}", call.args.join(" "))),
            _ => Err(call.unknown_command()),
        }
    });
    let (timer_tx, timer_rx) = mpsc::channel();
    let timer_tx = Mutex::new(timer_tx);
    client.on_timer(move |id: u64| -> Result<(), HandlerError> {
        timer_tx.lock().unwrap().send(id).unwrap();
        if id == 13 {
            return Err(HandlerError::new("module_error", "timer 13 failed"));
        }
        Ok(())
    });
    client.on_provider(|call: ProviderCall| -> Result<Value, HandlerError> {
        match (call.kind, call.method.as_str()) {
            (ProviderKind::Lightning, "getNodeUrl") => Ok("https://ln.example:8080".into()),
            (ProviderKind::Payment, "getPaymentState") => Ok(map([
                ("payment_id", call.payment_id().unwrap_or("?").into()),
                ("state", "pending".into()),
            ])),
            _ => Err(call.unknown_method()),
        }
    });
    let seen_config = std::sync::Arc::new(Mutex::new(None));
    {
        let seen = seen_config.clone();
        let c = client.clone();
        client.on_config(move |config: Value| -> Result<(), HandlerError> {
            // The SDK stored the new configuration before calling the handler.
            assert_eq!(c.config(), config);
            *seen.lock().unwrap() = Some(config);
            Ok(())
        });
    }

    let mut ask = |id: u64, kind: &str, params: Value| {
        host.invoke(id, kind, params);
        let r = host.invocation_result();
        assert_eq!(r.id, id);
        r
    };

    let r = ask(
        1,
        "module_api",
        map([
            ("caller", "wallet".into()),
            ("method", "quote".into()),
            ("params", map([("pair", "BTCUSD".into())])),
            ("depth", 2u64.into()),
        ]),
    );
    assert_eq!(
        r.result,
        Some(map([
            ("pair", "BTCUSD".into()),
            ("for", "wallet".into()),
            ("depth", 2u64.into())
        ]))
    );
    let r = ask(
        2,
        "module_api",
        map([
            ("caller", "wallet".into()),
            ("method", "quote".into()),
            ("params", Value::Nil),
            ("depth", 1u64.into()),
        ]),
    );
    let e = r.error.expect("nil params do not fit QuoteParams");
    assert_eq!(e.code, "invalid_params");
    assert!(e.message.starts_with("quote: "), "{}", e.message);
    let r = ask(
        3,
        "module_api",
        map([
            ("caller", "wallet".into()),
            ("method", "nope".into()),
            ("params", Value::Nil),
            ("depth", 1u64.into()),
        ]),
    );
    let e = r.error.unwrap();
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("unknown_method", "this module's API has no method nope")
    );
    // The host always sends caller and method; without them the handler is not called.
    let r = ask(4, "module_api", map([("method", "quote".into())]));
    let e = r.error.unwrap();
    assert_eq!(e.code, "invalid_params");
    assert!(
        e.message.contains("malformed module_api invocation") && e.message.contains("caller"),
        "{}",
        e.message
    );

    let r = ask(
        5,
        "rpc",
        map([("method", "echo".into()), ("params", arr([1u64.into(), "two".into()]))]),
    );
    assert_eq!(r.result, Some(arr([1u64.into(), "two".into()])));
    let r = ask(6, "rpc", map([("method", "other".into()), ("params", Value::map())]));
    assert_eq!(r.error.unwrap().message, "no handler for RPC method other");

    let r = ask(
        7,
        "cli",
        map([("command", "greet".into()), ("args", strs(&["a", "b"]))]),
    );
    assert_eq!(r.result, Some("hello a b".into()));
    let r = ask(8, "cli", map([("command", "greet".into())]));
    assert_eq!(r.result, Some("hello ".into()), "args default to none");
    let r = ask(9, "cli", map([("command", "other".into()), ("args", strs(&[]))]));
    assert_eq!(r.error.unwrap().code, "unknown_method");

    let r = ask(10, "timer", map([("id", 12u64.into())]));
    assert!(r.error.is_none());
    let r = ask(11, "timer", map([("id", 13u64.into())]));
    assert_eq!(r.error.unwrap().message, "timer 13 failed");
    let r = ask(12, "timer", Value::Nil);
    assert_eq!(
        r.error.unwrap().code,
        "invalid_params",
        "a timer without an id does not reach the handler"
    );
    assert_eq!(timer_rx.try_iter().collect::<Vec<_>>(), vec![12, 13]);

    let r = ask(
        13,
        "provider",
        map([
            ("kind", "lightning".into()),
            ("method", "getNodeUrl".into()),
            ("params", Value::map()),
        ]),
    );
    assert_eq!(r.result, Some("https://ln.example:8080".into()));
    let r = ask(
        14,
        "provider",
        map([
            ("kind", "payment".into()),
            ("method", "getPaymentState".into()),
            ("params", map([("payment_id", "p-9".into())])),
        ]),
    );
    assert_eq!(
        r.result,
        Some(map([("payment_id", "p-9".into()), ("state", "pending".into())]))
    );
    let r = ask(
        15,
        "provider",
        map([
            ("kind", "lightning".into()),
            ("method", "getInfo".into()),
            ("params", Value::map()),
        ]),
    );
    assert_eq!(
        r.error.unwrap().message,
        "this module does not provide lightning.getInfo"
    );

    let new_config = map([("interval", 9u64.into()), ("targets", arr([1u64.into(), 3u64.into()]))]);
    let r = ask(16, "config", map([("config", new_config.clone())]));
    assert!(r.error.is_none(), "answered with the handler's () (nil)");
    assert_eq!(seen_config.lock().unwrap().take(), Some(new_config.clone()));
    assert_eq!(client.config(), new_config);

    // health still has its default answer; a later on_invocation replaces a typed helper.
    let r = ask(17, "health", Value::Nil);
    assert_eq!(r.result, Some(map([("status", "ok".into())])));
    client.on_invocation("rpc", |_p: Value| -> Result<&str, HandlerError> { Ok("raw") });
    let r = ask(18, "rpc", map([("method", "echo".into()), ("params", Value::map())]));
    assert_eq!(r.result, Some("raw".into()));
}

/// Every method of the host's catalogue has a typed method: generated.rs (written from the
/// catalogue by `modhost docs --write`; the repository's docs test fails when it is stale) has
/// every one but those in HAND_WRITTEN, and requests.rs must have those.
#[test]
fn every_catalogue_method_has_a_typed_method() {
    // Without whitespace: rustfmt may break `self.request(` and the method's name over lines.
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    let generated = squash(include_str!("../src/generated.rs"));
    let client = squash(include_str!("../src/requests.rs"));
    assert!(
        CATALOGUE_METHODS.len() >= 60,
        "only {} methods in CATALOGUE_METHODS",
        CATALOGUE_METHODS.len()
    );
    let calls = |src: &str, m: &str| {
        src.contains(&format!("self.request(\"{m}\""))
            || src.contains(&format!("self.request_raw(\"{m}\""))
            || src.contains(&format!("self.block_pages(\"{m}\""))
            // A method the SDK reads through another's pages (MethodDef.via): its own typed method.
            || src.contains(&format!("pubfn{m}("))
    };
    for m in CATALOGUE_METHODS {
        if HAND_WRITTEN.contains(m) {
            assert!(
                calls(&client, m),
                "{m} is listed in HAND_WRITTEN but src/requests.rs has no typed method calling it"
            );
        } else {
            assert!(
                calls(&generated, m),
                "{m} has no generated typed method in src/generated.rs"
            );
        }
    }
    for m in HAND_WRITTEN {
        assert!(
            CATALOGUE_METHODS.contains(m),
            "HAND_WRITTEN names {m}, which is not in the catalogue"
        );
    }
}
