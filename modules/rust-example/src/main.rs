//! rust-example: a native modhost module written with the Rust SDK.
//!
//! It reads the chain state, opens its storage tree "tips", serves the RPC method
//! `rust-example.last`, subscribes to NewBlock and says ready. For every new block it fetches
//! the block, logs its transaction count, records height -> hash and counts the block in the
//! metric `blocks_seen_total`; every 10 blocks it logs how many entries it stores. When the
//! host asks it to stop, the event stream ends and it exits with status 0.
//!
//! It follows the catch-up contract of docs/module-guide.md: its last recorded height -> hash
//! is its cursor. At start and on every NewBlock it first unwinds recorded blocks that are no
//! longer on the active chain (a reorg, found by comparing hashes), then records every block
//! from the cursor to the tip, so blocks mined while it was stopped, or whose events it
//! missed, are recorded too, each once.

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
    client.info(&format!(
        "rust-example: {} chain at height {}, tip {}",
        info.chain, info.height, info.tip_hash
    ));

    client.storage_open_tree(TREE)?;
    // Catch up with what happened while we were stopped (see sync).
    let caught = sync(client)?;
    client.info(&format!(
        "rust-example: caught up: {} blocks recorded, {} unwound",
        caught.recorded, caught.unwound
    ));

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
        if let Err(e) =
            client.register_rpc_endpoint("last", "The last block rust-example recorded: {height, hash}, or null")
        {
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
            client.warn(&format!(
                "rust-example: {} events were dropped before block event {}",
                event.missed, event.seq
            ));
        }
        let Some(nb) = event.new_block() else { continue };
        // Not just this block: everything from our cursor to the tip (a reorg's replacements,
        // blocks whose events were dropped).
        match sync(client) {
            Ok(done) => seen += done.recorded,
            Err(Error::Closed) => return Err(Error::Closed),
            // A failed catch-up is logged, not fatal: the next block retries from the cursor.
            Err(e) => client.warn(&format!("rust-example: block {}: {e}", nb.height)),
        }
        if seen > 0 && seen.is_multiple_of(10) {
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

struct Synced {
    recorded: u64,
    unwound: u64,
}

/// The catch-up contract: unwind recorded blocks no longer on the active chain (their hash
/// differs from the active block at that height), then record every block after the cursor
/// up to the tip, each only if it builds on the one recorded before it (otherwise a reorg
/// replaced the cursor during this catch-up: unwind again). Without a cursor (a first start)
/// it begins at the tip. Each block is recorded once: the cursor is the record itself.
fn sync(client: &Client) -> Result<Synced, Error> {
    let mut done = Synced {
        recorded: 0,
        unwound: 0,
    };
    'catch_up: loop {
        let mut cursor = last_recorded(client)?;
        while let Some((height, hash)) = cursor.clone() {
            if client.get_block_by_height(height)?.is_some_and(|b| b.hash == hash) {
                break;
            }
            client.storage_remove(TREE, &key(height))?;
            client.warn(&format!(
                "rust-example: block {height} {hash} is no longer on the active chain; unwound"
            ));
            done.unwound += 1;
            cursor = last_recorded(client)?;
        }
        let tip = client.get_block_height()?;
        let from = cursor.as_ref().map_or(tip, |(height, _)| height + 1);
        let mut parent = cursor.map(|(_, hash)| hash);
        for height in from..=tip {
            let block = client
                .get_block_by_height(height)?
                .ok_or_else(|| Error::Protocol(format!("block {height} of the active chain not found")))?;
            if parent.as_ref().is_some_and(|p| *p != block.header.prev_hash) {
                continue 'catch_up;
            }
            client.info(&format!(
                "rust-example: block {} has {} txs",
                block.height,
                block.transactions.len()
            ));
            client.storage_insert(TREE, &key(height), &block.hash)?;
            if client.may_call("report_metric") {
                client.report_metric("blocks_seen_total", 1, MetricKind::Counter, &[])?;
            }
            done.recorded += 1;
            parent = Some(block.hash);
        }
        return Ok(done);
    }
}
