use std::fmt;
use std::sync::Weak;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::client::Client;
use crate::connection::Inner;
use crate::error::{Error, Result};
use crate::types::*;
use crate::value::{from_value, Value};

/// An event the module subscribed to.
///
/// Acknowledgement (flow control, docs/protocol.md section 7): an event counts as handled,
/// and is acknowledged to the host, when the next event is taken from the same
/// [`Events`] stream, or earlier when [`Event::ack`] is called. Acks are cumulative.
#[derive(Clone)]
pub struct Event {
    /// Per-module sequence number, from 1.
    pub seq: u64,
    /// The event type, e.g. `"NewBlock"` or `"module:name"`.
    pub type_: String,
    pub payload: Value,
    /// Milliseconds since the epoch, when the event was published.
    pub time: u64,
    /// Events dropped (queue overflow) just before this one; 0 normally.
    pub missed: u64,
    pub(crate) client: Weak<Inner>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("seq", &self.seq)
            .field("type_", &self.type_)
            .field("payload", &self.payload)
            .field("time", &self.time)
            .field("missed", &self.missed)
            .finish()
    }
}

impl PartialEq for Event {
    fn eq(&self, o: &Event) -> bool {
        self.seq == o.seq
            && self.type_ == o.type_
            && self.payload == o.payload
            && self.time == o.time
            && self.missed == o.missed
    }
}

impl Event {
    /// Acknowledges this event and every earlier one now (otherwise that happens when the
    /// next event is taken). Does nothing when already acknowledged or disconnected.
    pub fn ack(&self) {
        if let Some(inner) = self.client.upgrade() {
            let _ = inner.ack_up_to(self.seq);
        }
    }

    /// The payload as a typed value.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T> {
        from_value(self.payload.clone()).map_err(|e| Error::Protocol(format!("{} payload: {e}", self.type_)))
    }

    /// The payload decoded according to the event type.
    pub fn kind(&self) -> Result<EventKind> {
        Ok(match self.type_.as_str() {
            "NewBlock" => EventKind::NewBlock(self.payload_as()?),
            "BlockDisconnected" => EventKind::BlockDisconnected(self.payload_as()?),
            "ChainReorg" => EventKind::ChainReorg(self.payload_as()?),
            "MempoolTransactionAdded" => EventKind::MempoolTransactionAdded(self.payload_as()?),
            "MempoolTransactionRemoved" => EventKind::MempoolTransactionRemoved(self.payload_as()?),
            "ModuleLoaded" => EventKind::ModuleLoaded(self.payload_as()?),
            "ModuleUnloaded" => EventKind::ModuleUnloaded(self.payload_as()?),
            "ModuleCrashed" => EventKind::ModuleCrashed(self.payload_as()?),
            "ModuleRestarted" => EventKind::ModuleRestarted(self.payload_as()?),
            "ConfigLoaded" => EventKind::ConfigLoaded(self.payload_as()?),
            "NodeStartupCompleted" => EventKind::NodeStartupCompleted(self.payload_as()?),
            "NodeShutdown" => EventKind::NodeShutdown(self.payload_as()?),
            "NodeShutdownCompleted" => EventKind::NodeShutdownCompleted(self.payload_as()?),
            other => EventKind::Other {
                type_: other.to_owned(),
                payload: self.payload.clone(),
            },
        })
    }

    fn typed<T: DeserializeOwned>(&self, type_: &str) -> Option<T> {
        if self.type_ == type_ {
            self.payload_as().ok()
        } else {
            None
        }
    }

    /// The payload when this is a `NewBlock` event (and it decodes).
    pub fn new_block(&self) -> Option<NewBlock> {
        self.typed("NewBlock")
    }
    pub fn block_disconnected(&self) -> Option<BlockDisconnected> {
        self.typed("BlockDisconnected")
    }
    pub fn chain_reorg(&self) -> Option<ChainReorg> {
        self.typed("ChainReorg")
    }
    pub fn mempool_transaction_added(&self) -> Option<MempoolTransactionAdded> {
        self.typed("MempoolTransactionAdded")
    }
    pub fn mempool_transaction_removed(&self) -> Option<MempoolTransactionRemoved> {
        self.typed("MempoolTransactionRemoved")
    }
    /// The payload when this is a `BlockTemplateUpdated` event (from the mining provider).
    pub fn block_template_updated(&self) -> Option<BlockTemplateUpdated> {
        self.typed("BlockTemplateUpdated")
    }
}

/// The stream of events, from [`Client::events`]. As an iterator it blocks until the next
/// event and ends (returns `None`) once the host's `shutdown` invocation has been answered,
/// or when the connection closes. Taking an event acknowledges the one taken before it.
pub struct Events {
    pub(crate) client: Client,
}

impl Events {
    /// Like `next()`, but gives up after `timeout`: `Ok(None)` then. `Err(Error::Closed)` when
    /// the stream has ended (shutdown or disconnect).
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Event>> {
        self.client.inner.next_event(Some(timeout))
    }

    /// The next event if one is waiting, without blocking.
    pub fn try_next(&mut self) -> Result<Option<Event>> {
        self.client.inner.next_event(Some(Duration::ZERO))
    }
}

impl Iterator for Events {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.client.inner.next_event(None).ok().flatten()
    }
}
