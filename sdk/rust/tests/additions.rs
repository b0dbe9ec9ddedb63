//! The SDK additions for the block-template provider and the items the SDK lacked: the light
//! block view (`include_hex: false`), paging through a storage range with a cursor, the
//! mining and governance provider kinds, `quarantined` in ModuleCrashed and the module
//! state, and the BlockTemplateUpdated payload. Each against a fake host over a socketpair.

use std::thread;

use modhost_sdk::{
    BlockOptions, BlockTemplateOptions, Error, IterOptions, ModuleCrashed, ModuleInfo, ProviderKind, Value,
};

mod common;
use common::start;

fn light_block(height: u64) -> Value {
    let hash = format!("{height:064x}");
    // The light view: no "hex" in the block, its header or its transactions.
    let header = Value::from_pairs([
        ("hash", hash.clone().into()),
        ("height", height.into()),
        ("version", 0x2000_0000u64.into()),
        ("prev_hash", "00".repeat(32).into()),
        ("merkle_root", "11".repeat(32).into()),
        ("time", 1_700_000_000u64.into()),
        ("bits", 0x207f_ffffu64.into()),
        ("nonce", 0u64.into()),
    ]);
    let tx = Value::from_pairs([
        ("txid", "aa".repeat(32).into()),
        ("wtxid", "aa".repeat(32).into()),
        ("version", 2u64.into()),
        ("locktime", 0u64.into()),
        ("inputs", Value::Array(vec![])),
        ("outputs", Value::Array(vec![])),
        ("size", 100u64.into()),
        ("vsize", 100u64.into()),
        ("weight", 400u64.into()),
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
    ])
}

#[test]
fn the_light_block_view_sends_include_hex_false_and_decodes_without_hex() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let t = thread::spawn(move || {
        let b = c.get_block_by_height_with(7, BlockOptions::light()).unwrap().unwrap();
        assert_eq!(
            (
                b.height,
                b.hex.as_str(),
                b.header.hex.as_str(),
                b.transactions[0].hex.as_str()
            ),
            (7, "", "", "")
        );
        let b = c
            .get_block_with(&format!("{:064x}", 7), BlockOptions::default())
            .unwrap();
        assert!(b.is_none());
    });
    let r = host.next_request("get_block_by_height");
    assert_eq!(
        r.params,
        Value::from_pairs([
            ("height", 7u64.into()),
            ("include_hex", false.into()),
            ("tx_offset", 0u64.into())
        ])
    );
    host.respond(r.id, light_block(7));
    let r = host.next_request("get_block");
    assert_eq!(
        r.params,
        Value::from_pairs([
            ("hash", format!("{:064x}", 7).into()),
            ("include_hex", true.into()),
            ("tx_offset", 0u64.into())
        ])
    );
    host.respond(r.id, Value::Nil);
    t.join().unwrap();
}

#[test]
fn storage_iter_page_follows_the_cursor_to_the_end_of_the_range() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let t = thread::spawn(move || {
        let opts = IterOptions::new().prefix("k").limit(2);
        let mut keys = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = c.storage_iter_page::<u64>("t", &opts, cursor.as_deref()).unwrap();
            pages += 1;
            keys.extend(page.entries.iter().map(|e| (e.key.clone(), e.value)));
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(pages, 2);
        assert_eq!(
            keys,
            vec![("k1".to_string(), 1), ("k2".to_string(), 2), ("k3".to_string(), 3)]
        );
    });
    let entry = |k: &str, v: u64| Value::from_pairs([("key", k.into()), ("value", v.into())]);
    let r = host.next_request("storage_iter");
    assert_eq!(
        r.params,
        Value::from_pairs([
            ("tree", "t".into()),
            ("prefix", "k".into()),
            ("limit", 2u64.into()),
            ("paged", true.into())
        ])
    );
    host.respond(
        r.id,
        Value::from_pairs([
            ("entries", Value::Array(vec![entry("k1", 1), entry("k2", 2)])),
            ("cursor", "azI".into()),
        ]),
    );
    let r = host.next_request("storage_iter");
    assert_eq!(
        r.params,
        Value::from_pairs([
            ("tree", "t".into()),
            ("prefix", "k".into()),
            ("limit", 2u64.into()),
            ("paged", true.into()),
            ("cursor", "azI".into()),
        ])
    );
    host.respond(
        r.id,
        Value::from_pairs([("entries", Value::Array(vec![entry("k3", 3)])), ("cursor", Value::Nil)]),
    );
    t.join().unwrap();
}

#[test]
fn an_unpaged_iterate_sends_no_paging_keys_and_a_page_answer_is_a_protocol_error_there() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let t = thread::spawn(move || {
        let err = c.storage_iter::<u64>("t", &IterOptions::new()).unwrap_err();
        assert!(
            matches!(err, Error::Protocol(ref m) if m.contains("storage_iter")),
            "{err}"
        );
    });
    let r = host.next_request("storage_iter");
    assert_eq!(r.params, Value::from_pairs([("tree", "t".into())]));
    host.respond(
        r.id,
        Value::from_pairs([("entries", Value::Array(vec![])), ("cursor", Value::Nil)]),
    );
    t.join().unwrap();
}

#[test]
fn the_mining_and_governance_provider_kinds_go_on_the_wire_in_lowercase() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let t = thread::spawn(move || {
        c.register_provider(ProviderKind::Mining).unwrap();
        c.register_provider(ProviderKind::Governance).unwrap();
    });
    for kind in ["mining", "governance"] {
        let r = host.next_request("register_provider");
        assert_eq!(r.params, Value::from_pairs([("kind", kind.into())]));
        host.respond(r.id, true.into());
    }
    t.join().unwrap();
}

#[test]
fn module_crashed_carries_quarantined_and_module_info_knows_the_state() {
    let crashed = |q: Option<bool>| {
        let mut pairs = vec![
            ("module", Value::from("m")),
            ("error", "exit 1".into()),
            ("exit_code", 1u64.into()),
            ("signal", Value::Nil),
            ("will_restart", false.into()),
        ];
        if let Some(q) = q {
            pairs.push(("quarantined", q.into()));
        }
        modhost_sdk::from_value::<ModuleCrashed>(Value::from_pairs(pairs)).unwrap()
    };
    assert!(crashed(Some(true)).quarantined);
    // An older host that does not send the field: not quarantined.
    assert!(!crashed(None).quarantined);

    let info: ModuleInfo = modhost_sdk::from_value(Value::from_pairs([
        ("name", "m".into()),
        ("version", "1.0.0".into()),
        ("runtime", "native".into()),
        ("state", "quarantined".into()),
    ]))
    .unwrap();
    assert!(info.is_quarantined() && !info.is_running());
}

#[test]
fn block_template_updated_events_decode() {
    let (client, mut host, _) = start("example");
    let payload = Value::from_pairs([
        ("previous_block_hash", "ab".repeat(32).into()),
        ("height", 102u64.into()),
        ("transaction_count", 3u64.into()),
        ("coinbase_value", 5_000_001_000u64.into()),
        ("reason", "mempool".into()),
    ]);
    host.event(1, "BlockTemplateUpdated", payload, None);
    let mut events = client.events();
    let e = events.next().unwrap();
    let u = e.block_template_updated().unwrap();
    assert_eq!(
        (u.height, u.transaction_count, u.coinbase_value, u.reason.as_str()),
        (102, 3, 5_000_001_000, "mempool")
    );
    assert!(e.new_block().is_none());
    drop(host);
}

#[test]
fn a_transaction_too_big_for_one_message_goes_in_parts_of_one_id() {
    use modhost_sdk::StorageOp;
    let (client, mut host, _) = start("example");
    // 9,000 puts with 70-byte keys: over 1 MiB of strings, more than one message carries.
    let ops: Vec<StorageOp> = (0..9_000u64)
        .map(|i| StorageOp::put(format!("tx:{i:064x}"), &i).unwrap())
        .collect();
    let sent = ops.clone();
    let c = client.clone();
    let t = thread::spawn(move || c.storage_transaction("idx", &sent));
    let mut keys = Vec::new();
    let mut ids = Vec::new();
    loop {
        let r = host.next_request("storage_transaction");
        assert_eq!(r.params["tree"].as_str(), Some("idx"));
        let part = &r.params["part"];
        ids.push(part["id"].as_u64().expect("every part names its transaction"));
        let Value::Array(part_ops) = &r.params["ops"] else {
            panic!("ops is an array")
        };
        keys.extend(part_ops.iter().map(|op| op["key"].as_str().unwrap().to_string()));
        let more = part["more"].as_bool().expect("every part says whether more follow");
        host.respond(r.id, true.into());
        if !more {
            break;
        }
    }
    t.join().unwrap().unwrap();
    assert!(ids.len() > 1, "sent in {} parts", ids.len());
    assert!(ids.iter().all(|id| *id == ids[0]), "one id for every part");
    let expected: Vec<String> = (0..9_000u64).map(|i| format!("tx:{i:064x}")).collect();
    assert_eq!(keys, expected, "every op once, in order");

    // A small transaction is one message without a part.
    let c = client.clone();
    let t = thread::spawn(move || c.storage_transaction("idx", &[StorageOp::delete("k")]));
    let r = host.next_request("storage_transaction");
    assert!(matches!(r.params["part"], Value::Nil), "no part: {:?}", r.params);
    host.respond(r.id, true.into());
    t.join().unwrap().unwrap();
}

fn template_page(id: &str, txs: &[u8], next: Option<&str>) -> Value {
    let tx = |b: u8| {
        Value::from_pairs([
            ("txid", format!("{b:02x}").repeat(32).into()),
            ("wtxid", format!("{b:02x}").repeat(32).into()),
            // Binary on the wire: the SDK makes the hex.
            ("hex", Value::Bin(vec![2, 0, 0, 0, b])),
            ("fee", 100u64.into()),
            ("weight", 400u64.into()),
        ])
    };
    Value::from_pairs([
        ("version", 0x2000_0000u64.into()),
        ("previous_block_hash", "cd".repeat(32).into()),
        ("height", 102u64.into()),
        ("bits", 0x207f_ffffu64.into()),
        ("target", format!("7fffff{}", "0".repeat(58)).into()),
        ("cur_time", 1_718_000_100u64.into()),
        ("min_time", 1_718_000_001u64.into()),
        ("transactions", Value::Array(txs.iter().map(|b| tx(*b)).collect())),
        ("coinbase_value", 5_000_000_300u64.into()),
        ("default_witness_commitment", "6a24aa21a9ed00".into()),
        ("template_id", id.into()),
        ("tx_count", 3u64.into()),
        ("next_page", next.map(Value::from).unwrap_or(Value::Nil)),
    ])
}

#[test]
fn a_block_template_of_several_pages_is_read_whole_with_its_binary_made_hex() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let t = thread::spawn(move || {
        let tpl = c
            .get_block_template(&BlockTemplateOptions::new().coinbase_script("51"))
            .unwrap();
        let hexes: Vec<&str> = tpl.transactions.iter().map(|x| x.hex.as_str()).collect();
        assert_eq!(hexes, ["0200000001", "0200000002", "0200000003"]);
        assert_eq!(
            (tpl.tx_count, tpl.next_page.as_deref(), tpl.template_id.as_str()),
            (3, None, "t-9")
        );
        // A page of another template than the first: an error, not a mixed template.
        let err = c.get_block_template(&BlockTemplateOptions::new()).unwrap_err();
        assert!(matches!(err, Error::Protocol(ref m) if m.contains("template")), "{err}");
    });
    let r = host.next_request("get_block_template");
    assert_eq!(r.params, Value::from_pairs([("coinbase_script", "51".into())]));
    host.respond(r.id, template_page("t-9", &[1, 2], Some("t-9:2")));
    let r = host.next_request("get_block_template");
    assert_eq!(
        r.params,
        Value::from_pairs([("page", "t-9:2".into())]),
        "a later page names only the page"
    );
    host.respond(r.id, template_page("t-9", &[3], None));
    let r = host.next_request("get_block_template");
    host.respond(r.id, template_page("t-10", &[1], Some("t-10:1")));
    let r = host.next_request("get_block_template");
    host.respond(r.id, template_page("t-11", &[2], None));
    t.join().unwrap();
}

#[test]
fn a_blocks_raw_bytes_come_as_binary_and_read_as_hex() {
    let (client, mut host, _) = start("example");
    let c = client.clone();
    let t = thread::spawn(move || {
        let b = c.get_block_by_height(7).unwrap().unwrap();
        assert_eq!((b.hex.as_str(), b.transactions[0].hex.as_str()), ("00ff10", "02ab"));
    });
    let r = host.next_request("get_block_by_height");
    let mut block = light_block(7);
    if let Value::Map(ref mut m) = block {
        m.push(("hex".into(), Value::Bin(vec![0, 0xff, 0x10])));
        for (k, v) in m.iter_mut() {
            if k == "transactions" {
                if let Value::Array(txs) = v {
                    if let Value::Map(tx) = &mut txs[0] {
                        tx.push(("hex".into(), Value::Bin(vec![2, 0xab])));
                    }
                }
            }
        }
    }
    host.respond(r.id, block);
    t.join().unwrap();
}
