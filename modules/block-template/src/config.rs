//! The module's configuration ([modules.module_configs.block-template]), checked at start:
//! each key's range, and a listen address on the loopback only.

use std::net::SocketAddr;

use modhost_sdk::Value;
use serde::Deserialize;

pub const CONFIG_SECTION: &str = "[modules.module_configs.block-template]";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where miners connect: a loopback address and port ("127.0.0.1:8442"; port 0 = any free port).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Connections served at once; one more is answered 503.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest request body (a submitblock of a 4 MB block is about 8,000,100 bytes).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Time a whole request may take to arrive.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// BlockTemplateUpdated for mempool changes at most once per this many ms (new blocks at once).
    #[serde(default = "default_min_update_interval_ms")]
    pub min_update_interval_ms: u64,
}

fn default_listen() -> String {
    "127.0.0.1:8442".into()
}
fn default_max_connections() -> usize {
    8
}
fn default_max_request_bytes() -> usize {
    8_400_000
}
fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_min_update_interval_ms() -> u64 {
    1_000
}

impl Config {
    /// The configuration from the host's (schema-checked) values, with ranges and the
    /// address checked; the error names the key and what to write instead.
    pub fn from_value(v: Value) -> Result<(Config, SocketAddr), String> {
        let v = if v.is_nil() { Value::map() } else { v };
        let c: Config = modhost_sdk::from_value(v).map_err(|e| format!("{CONFIG_SECTION}: {e}"))?;
        let range = |key: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                Err(format!(
                    "{CONFIG_SECTION} {key} = {value} is out of range: use {min} to {max}"
                ))
            } else {
                Ok(())
            }
        };
        range("max_connections", c.max_connections as u64, 1, 1024)?;
        range("max_request_bytes", c.max_request_bytes as u64, 1024, 16 * 1024 * 1024)?;
        range("request_timeout_ms", c.request_timeout_ms, 100, 600_000)?;
        range("min_update_interval_ms", c.min_update_interval_ms, 100, 3_600_000)?;
        let addr: SocketAddr = c.listen.parse().map_err(|_| {
            format!(
                "{CONFIG_SECTION} listen = \"{}\" is not an address and port; write e.g. listen = \"127.0.0.1:8442\"",
                c.listen
            )
        })?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{CONFIG_SECTION} listen = \"{}\" is not a loopback address: the server has no authentication and is for miners on this machine only; use 127.0.0.1 or [::1] (put a proxy with authentication in front for remote miners)",
                c.listen
            ));
        }
        Ok((c, addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: Vec<(&str, Value)>) -> Result<(Config, SocketAddr), String> {
        Config::from_value(Value::from_pairs(pairs))
    }

    #[test]
    fn defaults_ranges_and_loopback_only() {
        let (c, addr) = Config::from_value(Value::Nil).unwrap();
        assert_eq!(
            (addr.to_string().as_str(), c.max_connections, c.min_update_interval_ms),
            ("127.0.0.1:8442", 8, 1000)
        );
        let e = cfg(vec![("listen", "0.0.0.0:8442".into())]).unwrap_err();
        assert!(e.contains("listen") && e.contains("not a loopback address"), "{e}");
        let e = cfg(vec![("listen", "localhost".into())]).unwrap_err();
        assert!(e.contains("not an address and port"), "{e}");
        let e = cfg(vec![("max_connections", 0u64.into())]).unwrap_err();
        assert!(e.contains("max_connections = 0 is out of range"), "{e}");
        let e = cfg(vec![("min_update_interval_ms", 5u64.into())]).unwrap_err();
        assert!(e.contains("min_update_interval_ms"), "{e}");
        let e = cfg(vec![("listn", "127.0.0.1:1".into())]).unwrap_err();
        assert!(e.contains("listn"), "{e}");
        assert!(cfg(vec![("listen", "[::1]:0".into())]).is_ok());
    }
}
