//! block-template: the mining provider. It serves block templates to miners over Bitcoin
//! Core's JSON-RPC (`getblocktemplate`, `submitblock`) on a loopback port, built from the
//! host's mining capability (`get_block_template`, `submit_block`), and publishes
//! BlockTemplateUpdated when a new block arrives (at once) or the mempool changes (at most once
//! per `min_update_interval_ms`). The operator designates it as the mining provider
//! (`[modules.providers] mining = "block-template"`); no other module may publish
//! BlockTemplateUpdated.
//!
//! The catch-up contract (docs/module-guide.md): the template it last announced (parent hash,
//! height) is its cursor, in its storage. At start, and after every batch of chain events or
//! dropped events, it reads the template from the host rather than trusting an event, and
//! announces it when its parent differs from the cursor, so a restart, a reorg or missed
//! events never leave miners with a stale announcement, and nothing is announced twice.

mod config;
mod http;
mod rpc;
mod tx;

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use modhost_sdk::{BlockTemplateOptions, Client, Error, HandlerError, ProviderCall, ProviderKind, Value};
use serde::{Deserialize, Serialize};

use crate::config::{Config, CONFIG_SECTION};

const TREE: &str = "announced";
const CURSOR: &str = "last";
const CHAIN_EVENTS: [&str; 3] = ["NewBlock", "BlockDisconnected", "ChainReorg"];
const MEMPOOL_EVENTS: [&str; 2] = ["MempoolTransactionAdded", "MempoolTransactionRemoved"];

fn main() -> ExitCode {
    let client = match Client::connect(env!("CARGO_PKG_VERSION")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("block-template: cannot connect to the host: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&client) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Closed) => ExitCode::SUCCESS,
        Err(e) => {
            client.error(&format!("block-template: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// The template announced last: the cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Announced {
    previous_block_hash: String,
    height: u64,
    transaction_count: u64,
    coinbase_value: u64,
}

fn run(client: &Client) -> Result<(), Error> {
    let (config, addr) = match Config::from_value(client.config()) {
        Ok(c) => c,
        Err(message) => {
            client.error(&format!("block-template: {message}"));
            let _ = client.goodbye(Some(HandlerError::new("bad_config", message)));
            return Ok(());
        }
    };
    let config = Arc::new(config);
    client.storage_open_tree(TREE)?;

    // The port first: a port in use is the operator's to fix, and said before anything else.
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            let message = format!(
                "cannot listen on {addr} ({e}); choose another port with listen in {CONFIG_SECTION}, and check that the module holds network_access (a native module without it has no network)"
            );
            client.error(&format!("block-template: {message}"));
            let _ = client.goodbye(Some(HandlerError::new("listen_failed", message)));
            return Ok(());
        }
    };
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Protocol(format!("local address: {e}")))?;

    // The provider role: the host lets only the designated module register.
    client.on_provider(|call: ProviderCall| -> Result<Value, HandlerError> { Err(call.unknown_method()) });
    client.register_provider(ProviderKind::Mining)?;

    let counters = Arc::new(rpc::Counters::default());
    {
        let (c, counters, config) = (client.clone(), counters.clone(), config.clone());
        thread::Builder::new()
            .name("listener".into())
            .spawn(move || http::serve(listener, config, move |req| rpc::handle(&c, &counters, req)))
            .map_err(|e| Error::Protocol(format!("cannot start the listener thread: {e}")))?;
    }

    client.on_config({
        let c = client.clone();
        move |_new: Value| -> Result<bool, HandlerError> {
            c.warn("block-template: the configuration changed; it takes effect when the module restarts (modhost reload block-template)");
            Ok(true)
        }
    });
    client.on_shutdown({
        let c = client.clone();
        let counters = counters.clone();
        move |s| {
            c.info(&format!(
                "block-template: stopping ({}); served {} templates, {} blocks submitted, {} accepted",
                s.reason,
                counters.templates.load(Ordering::Relaxed),
                counters.submitted.load(Ordering::Relaxed),
                counters.accepted.load(Ordering::Relaxed)
            ))
        }
    });
    let mut types: Vec<&str> = CHAIN_EVENTS.to_vec();
    types.extend(MEMPOOL_EVENTS);
    client.subscribe_events(&types)?;
    client.ready()?;
    client.info(&format!("block-template: serving getblocktemplate and submitblock (Bitcoin Core JSON-RPC over HTTP POST) on http://{bound}/"));

    let mut announcer = Announcer {
        cursor: client.storage_get::<Announced>(TREE, CURSOR)?,
        last_sent: None,
        min_interval: Duration::from_millis(config.min_update_interval_ms),
    };
    // Catch up: whatever happened while we were away is in the template the host gives now.
    if let Err(e) = announcer.announce(client, true) {
        client.warn(&format!("block-template: the first announcement failed: {e}"));
    }

    let mut events = client.events();
    let mut mempool_dirty = false;
    loop {
        let wait = if mempool_dirty {
            announcer.until_next_allowed()
        } else {
            Duration::from_secs(3600)
        };
        let first = match events.next_timeout(wait) {
            Ok(e) => e,
            Err(Error::Closed) => break,
            Err(e) => return Err(e),
        };
        // Take everything already waiting: one template read per batch, however many events.
        let mut chain = false;
        let mut batch = first.into_iter().collect::<Vec<_>>();
        while let Ok(Some(e)) = events.try_next() {
            batch.push(e);
        }
        for e in &batch {
            if e.missed > 0 || CHAIN_EVENTS.contains(&e.type_.as_str()) {
                chain = true;
            } else {
                mempool_dirty = true;
            }
        }
        // Chain events come at the rate of blocks: answered at once, with whatever changed.
        let result = if chain || (mempool_dirty && announcer.until_next_allowed().is_zero()) {
            mempool_dirty = false;
            announcer.announce(client, false)
        } else {
            Ok(())
        };
        match result {
            Ok(()) => {}
            Err(Error::Closed) => break,
            // Logged, not fatal: the next event tries again from the cursor.
            Err(e) => client.warn(&format!("block-template: announcing the template failed: {e}")),
        }
    }
    Ok(())
}

struct Announcer {
    cursor: Option<Announced>,
    last_sent: Option<Instant>,
    min_interval: Duration,
}

impl Announcer {
    fn until_next_allowed(&self) -> Duration {
        self.last_sent
            .map_or(Duration::ZERO, |t| self.min_interval.saturating_sub(t.elapsed()))
    }

    /// Reads the template and publishes BlockTemplateUpdated if it differs from the cursor:
    /// reason "new_block" when its parent changed, "mempool" when only its transactions did
    /// (and `chain_only` is false).
    fn announce(&mut self, client: &Client, chain_only: bool) -> Result<(), Error> {
        let t = client.get_block_template(&BlockTemplateOptions::new())?;
        let now = Announced {
            previous_block_hash: t.previous_block_hash.clone(),
            height: t.height,
            transaction_count: t.transactions.len() as u64,
            coinbase_value: t.coinbase_value,
        };
        let reason = match &self.cursor {
            Some(c) if c.previous_block_hash != now.previous_block_hash => "new_block",
            None => "new_block",
            Some(c)
                if !chain_only
                    && (c.transaction_count, c.coinbase_value) != (now.transaction_count, now.coinbase_value) =>
            {
                "mempool"
            }
            Some(_) => return Ok(()),
        };
        client.publish_event(
            "BlockTemplateUpdated",
            &Value::from_pairs([
                ("previous_block_hash", now.previous_block_hash.clone().into()),
                ("height", now.height.into()),
                ("transaction_count", now.transaction_count.into()),
                ("coinbase_value", now.coinbase_value.into()),
                ("reason", reason.into()),
            ]),
        )?;
        self.last_sent = Some(Instant::now());
        client.storage_insert(TREE, CURSOR, &now)?;
        client.debug(&format!(
            "block-template: announced height {} ({} transactions, {reason})",
            now.height, now.transaction_count
        ));
        self.cursor = Some(now);
        Ok(())
    }
}
