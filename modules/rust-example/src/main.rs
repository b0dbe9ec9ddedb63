//! rust-example: a native modhost module written with the Rust SDK.
//!
//! It reads the chain state, opens its storage tree "tips", serves the RPC method
//! `rust-example.last`, subscribes to NewBlock and says ready. For every new block it fetches
//! the block, logs its transaction count, records height -> hash and counts the block in the
//! metric `blocks_seen_total`; every 10 blocks it logs how many entries it stores. When the
//! host asks it to stop, the event stream ends and it exits with status 0.

use std::process::ExitCode;

use modhost_sdk::{Client, Error, HandlerError, IterOptions, LogLevel, MetricKind, RpcCall, Value};

const TREE: &str = "tips";

/// Heights are stored zero-padded so that the tree's key order (UTF-8 bytes) is height order.
fn key(height: u64) -> String {
    format!("{height:010}")
}

fn main() -> ExitCode {
    let client = match Client::connect(env!("CARGO_PKG_VERSION")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rust-example: cannot connect to the host: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&client) {
        Ok(()) => ExitCode::SUCCESS,
        // The host went away: nothing is left to do, and nobody to report to.
        Err(Error::Closed) => ExitCode::SUCCESS,
        Err(e) => {
            client.error(&format!("rust-example: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn run(client: &Client) -> Result<(), Error> {
    let info = client.get_chain_info()?;
    client.info(&format!("rust-example: {} chain at height {}, tip {}", info.chain, info.height, info.tip_hash));

    client.storage_open_tree(TREE)?;
    // The latest entry, if a previous run left some.
    if let Some((height, hash)) = last_recorded(client)? {
        // The embedded regtest chain starts afresh on every host start: say whether the
        // recorded blocks are still on the active chain.
        let same = client.get_block_by_height(height)?.is_some_and(|b| b.hash == hash);
        let status = if same { "on the active chain" } else { "not on the active chain; entries will be overwritten" };
        client.info(&format!("rust-example: resuming; last recorded block {height} ({status})"));
    }

    // `rust-example.last` on the host's RPC server: the handler first, then the registration.
    // (Optional features check the welcome, so the module also runs with fewer grants.)
    client.on_rpc({
        let c = client.clone();
        move |call: RpcCall| -> Result<Value, HandlerError> {
            match call.method.as_str() {
                "last" => Ok(match last_recorded(&c)? {
                    Some((height, hash)) => Value::from_pairs([("height", height.into()), ("hash", hash.into())]),
                    None => Value::Nil,
                }),
                _ => Err(call.unknown_method()),
            }
        }
    });
    if client.may_call("register_rpc_endpoint") {
        // Optional: a host without an RPC server (or a refused name) costs the method, not the module.
        if let Err(e) = client.register_rpc_endpoint("last", "The last block rust-example recorded: {height, hash}, or null") {
            client.warn(&format!("rust-example: RPC method not registered: {e}"));
        }
    }

    client.on_shutdown({
        let c = client.clone();
        move |s| c.info(&format!("rust-example: stopping ({})", s.reason))
    });
    client.subscribe_events(&["NewBlock"])?;
    client.ready()?;

    let mut seen = 0u64;
    // Ends once the host's shutdown invocation has been answered, or if the host goes away.
    for event in client.events() {
        if event.missed > 0 {
            client.warn(&format!("rust-example: {} events were dropped before block event {}", event.missed, event.seq));
        }
        let Some(nb) = event.new_block() else { continue };
        match on_block(client, nb.height, &nb.hash) {
            Ok(()) => {}
            Err(Error::Closed) => return Err(Error::Closed),
            // One failed block is logged, not fatal.
            Err(e) => client.warn(&format!("rust-example: block {}: {e}", nb.height)),
        }
        seen += 1;
        if seen.is_multiple_of(10) {
            let usage = client.storage_usage()?;
            client.log_fields(
                LogLevel::Info,
                &format!("rust-example: {} blocks seen, {} entries stored", seen, usage.keys),
                &modhost_sdk::Value::from_pairs([("bytes", usage.bytes.into()), ("keys", usage.keys.into())]),
            )?;
        }
    }
    client.info(&format!("rust-example: stopped after {seen} blocks"));
    Ok(())
}

/// The highest recorded height and its hash.
fn last_recorded(client: &Client) -> Result<Option<(u64, String)>, Error> {
    let last = client.storage_iter::<String>(TREE, &IterOptions::new().reverse(true).limit(1))?;
    Ok(last.into_iter().next().map(|e| (e.key.parse().unwrap_or(0), e.value)))
}

fn on_block(client: &Client, height: u64, hash: &str) -> Result<(), Error> {
    let block = client
        .get_block(hash)?
        .ok_or_else(|| Error::Protocol(format!("block {hash} announced but not found")))?;
    client.info(&format!("rust-example: block {} has {} txs", block.height, block.transactions.len()));
    client.storage_insert(TREE, &key(height), hash)?;
    if client.may_call("report_metric") {
        client.report_metric("blocks_seen_total", 1, MetricKind::Counter, &[])?;
    }
    Ok(())
}
