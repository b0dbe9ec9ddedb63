//! __NAME__: a native modhost module written with the Rust SDK (made by `modhost new`).
//!
//! It stores height -> hash of every block of the active chain in its storage tree "blocks"
//! and serves the last one as the RPC method `__NAME__.last`. It follows the catch-up contract
//! of the module guide: its highest stored block is its cursor; at start and on every NewBlock
//! it unwinds stored blocks that left the active chain, then stores cursor + 1 .. tip.

use std::process::ExitCode;

use modhost_sdk::{Client, Error, HandlerError, IterOptions, RpcCall, Value};

const TREE: &str = "blocks";

/// Zero-padded, so that the tree's key order is height order.
fn key(height: u64) -> String {
    format!("{height:010}")
}

fn main() -> ExitCode {
    let client = match Client::connect(env!("CARGO_PKG_VERSION")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("__NAME__: cannot connect to the host: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&client) {
        Ok(()) | Err(Error::Closed) => ExitCode::SUCCESS,
        Err(e) => {
            client.error(&format!("__NAME__: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn run(client: &Client) -> Result<(), Error> {
    client.storage_open_tree(TREE)?;
    sync(client)?;

    client.on_rpc({
        let c = client.clone();
        move |call: RpcCall| -> Result<Value, HandlerError> {
            match call.method.as_str() {
                "last" => Ok(match last(&c)? {
                    Some((height, hash)) => Value::from_pairs([("height", height.into()), ("hash", hash.into())]),
                    None => Value::Nil,
                }),
                _ => Err(call.unknown_method()),
            }
        }
    });
    client.register_rpc_endpoint("last", "The last block __NAME__ stored: {height, hash}, or null")?;
    client.subscribe_events(&["NewBlock"])?;
    client.ready()?;

    // Ends when the host asks the module to stop (or goes away).
    for event in client.events() {
        if event.new_block().is_none() {
            continue;
        }
        match sync(client) {
            Ok(()) => {}
            Err(Error::Closed) => return Err(Error::Closed),
            // Logged, not fatal: the next block retries from the cursor.
            Err(e) => client.warn(&format!("catch-up failed: {e}")),
        }
    }
    Ok(())
}

/// The highest stored height and its hash.
fn last(client: &Client) -> Result<Option<(u64, String)>, Error> {
    let rows = client.storage_iter::<String>(TREE, &IterOptions::new().reverse(true).limit(1))?;
    Ok(rows.into_iter().next().map(|e| (e.key.parse().unwrap_or(0), e.value)))
}

/// Unwind what left the active chain, then store cursor + 1 .. tip (a first start: the tip),
/// each block only if it builds on the one stored before it: otherwise a reorg replaced the
/// cursor while we were catching up, and we unwind again.
fn sync(client: &Client) -> Result<(), Error> {
    'catch_up: loop {
        let mut cursor = last(client)?;
        while let Some((height, hash)) = cursor.clone() {
            if client.get_block_by_height(height)?.is_some_and(|b| b.hash == hash) {
                break;
            }
            client.storage_remove(TREE, &key(height))?;
            client.warn(&format!("block {height} left the active chain: forgotten"));
            cursor = last(client)?;
        }
        let tip = client.get_block_height()?;
        let from = cursor.as_ref().map_or(tip, |(height, _)| height + 1);
        let mut parent = cursor.map(|(_, hash)| hash);
        for height in from..=tip {
            let Some(block) = client.get_block_by_height(height)? else {
                break;
            };
            if parent.as_ref().is_some_and(|p| *p != block.header.prev_hash) {
                continue 'catch_up;
            }
            client.storage_insert(TREE, &key(height), &block.hash)?;
            client.info(&format!(
                "block {height} stored: {} txs, hash {}",
                block.transactions.len(),
                block.hash
            ));
            parent = Some(block.hash);
        }
        return Ok(());
    }
}
