//! # modhost-sdk
//!
//! The Rust SDK for modhost native modules. A module is a program the host starts with a
//! private, already-connected socket on fd 3; this crate speaks the module protocol (version 1,
//! `docs/protocol.md` in the modhost repository) over it: the handshake, requests (many in
//! flight, from any thread), events with acknowledgements, logs, and the host's invocations
//! (shutdown, health, ...). It uses only `std` threads and channels.
//!
//! ```no_run
//! use modhost_sdk::{Client, LogLevel};
//!
//! fn main() -> Result<(), modhost_sdk::Error> {
//!     let client = Client::connect(env!("CARGO_PKG_VERSION"))?;
//!     client.on_shutdown(|s| eprintln!("stopping: {}", s.reason));
//!     client.subscribe_events(&["NewBlock"])?;
//!     client.ready()?;
//!     // Ends after the host's shutdown invocation was answered (or the host went away).
//!     for event in client.events() {
//!         if let Some(block) = event.new_block() {
//!             client.log(LogLevel::Info, &format!("block {}", block.height))?;
//!         }
//!     } // each event is acknowledged when the next one is taken
//!     Ok(())
//! }
//! ```
//!
//! Threads: a reader thread owns the receiving half of the socket and routes responses to
//! their callers, events to the [`Events`] queue, and each invocation to a thread of its own
//! that runs the registered handler (so handlers may make requests).

mod bootstrap;
mod client;
mod connection;
mod error;
mod events;
// Written by host/sdkgen.ts (`modhost docs --write`) in its own layout; rustfmt leaves it alone
// so that the generator's output and the checked-in file stay byte for byte the same.
#[rustfmt::skip]
mod generated;
mod incoming;
mod invocations;
mod parts;
pub mod protocol;
mod requests;
pub mod types;
pub mod value;

pub use bootstrap::Bootstrap;
pub use client::{Client, Shutdown, HANDSHAKE_TIMEOUT, MAX_IN_FLIGHT};
pub use error::{Error, HandlerError, Result};
pub use events::{Event, Events};
pub use protocol::{LogLevel, SDK_NAME};
pub use types::*;
pub use value::{from_value, to_value, Bytes, Value};
