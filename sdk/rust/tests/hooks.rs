//! Hooks in the Rust SDK against a fake host: register_hook / unregister_hook put the wire
//! params on the wire as capabilities/hooks.ts reads them, and on_hook answers `hook`
//! invocations with {result: "continue" | "modify" | "reject"} as the host checks them.

use std::thread;

use modhost_sdk::types::{HookAnswer, HookCall, HookPoint};
use modhost_sdk::{HandlerError, Value};

mod common;
use common::start;

fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::from_pairs(pairs)
}

#[test]
fn register_hook_sends_point_and_order_and_reads_the_chain() {
    let (client, mut host, _) = start("example");
    let host_thread = thread::spawn(move || {
        let r = host.next_request("register_hook");
        assert_eq!(r.params["point"].as_str(), Some("rpc_dispatch"));
        assert_eq!(r.params["before"][0].as_str(), Some("audit"));
        assert!(r.params.get("after").is_none(), "an empty after is left out");
        host.respond(
            r.id,
            map([
                ("point", "rpc_dispatch".into()),
                ("order", Value::Array(vec!["example".into(), "audit".into()])),
            ]),
        );
        let r = host.next_request("unregister_hook");
        assert_eq!(r.params["point"].as_str(), Some("rpc_dispatch"));
        host.respond(r.id, true.into());
        host
    });
    let reg = client.register_hook(HookPoint::RpcDispatch, &["audit"], &[]).unwrap();
    assert_eq!(reg.point, HookPoint::RpcDispatch);
    assert_eq!(reg.order, vec!["example".to_owned(), "audit".to_owned()]);
    assert!(client.unregister_hook(HookPoint::RpcDispatch).unwrap());
    host_thread.join().unwrap();
}

#[test]
fn on_hook_answers_continue_modify_and_reject() {
    let (client, mut host, _) = start("example");
    client.on_hook(|call: HookCall| -> Result<HookAnswer, HandlerError> {
        match call.point {
            HookPoint::TxSubmit => Ok(HookAnswer::Reject {
                reason: format!("no {}", call.payload["txid"].as_str().unwrap_or("?")),
            }),
            HookPoint::RpcDispatch => Ok(HookAnswer::Modify {
                payload: map([("params", map([("limited", true.into())]))]),
            }),
            _ => Ok(HookAnswer::Continue),
        }
    });
    host.invoke(
        1,
        "hook",
        map([("point", "tx_submit".into()), ("payload", map([("txid", "ab".into())]))]),
    );
    let r = host.invocation_result();
    assert_eq!(
        r.result,
        Some(map([("result", "reject".into()), ("reason", "no ab".into())]))
    );
    host.invoke(
        2,
        "hook",
        map([("point", "rpc_dispatch".into()), ("payload", Value::map())]),
    );
    let r = host.invocation_result();
    assert_eq!(
        r.result,
        Some(map([
            ("result", "modify".into()),
            ("payload", map([("params", map([("limited", true.into())]))]))
        ]))
    );
    host.invoke(
        3,
        "hook",
        map([("point", "module_load".into()), ("payload", Value::map())]),
    );
    assert_eq!(
        host.invocation_result().result,
        Some(map([("result", "continue".into())]))
    );
    // A point this SDK does not know is not handed to the handler.
    host.invoke(
        4,
        "hook",
        map([("point", "mempool_evict".into()), ("payload", Value::map())]),
    );
    assert_eq!(host.invocation_result().error.unwrap().code, "invalid_params");
}
