//! The JSON-RPC methods, as Bitcoin Core answers them: `getblocktemplate` (BIP22/23 fields,
//! segwit rules) and `submitblock` (null when the block was accepted, else a reason string;
//! an undecodable block is error -22 "Block decode failed"). Requests in JSON-RPC 1.0 style
//! get Core's legacy envelope ({result, error, id}, HTTP 500 on error); "jsonrpc": "2.0"
//! requests get a 2.0 answer (HTTP 200).

use std::collections::HashMap;

use modhost_sdk::{BlockTemplate, BlockTemplateOptions, Client, SubmitBlockStatus};
use serde_json::{json, Value as Json};

use crate::http::{Answer, Request};
use crate::tx;

// Bitcoin Core's error codes (src/rpc/protocol.h).
pub const RPC_INVALID_REQUEST: i64 = -32600;
pub const RPC_METHOD_NOT_FOUND: i64 = -32601;
pub const RPC_PARSE_ERROR: i64 = -32700;
pub const RPC_MISC_ERROR: i64 = -1;
pub const RPC_TYPE_ERROR: i64 = -3;
pub const RPC_INVALID_PARAMETER: i64 = -8;
pub const RPC_DESERIALIZATION_ERROR: i64 = -22;

/// A block is at most 4,000,000 bytes (weight 4,000,000, every byte at least weight 1).
pub const MAX_BLOCK_HEX: usize = 8_000_000;

pub struct RpcError {
    pub code: i64,
    pub message: String,
}

fn err(code: i64, message: impl Into<String>) -> RpcError {
    RpcError {
        code,
        message: message.into(),
    }
}

/// What the server counts (logged now and then, and at exit).
#[derive(Default)]
pub struct Counters {
    pub templates: std::sync::atomic::AtomicU64,
    pub submitted: std::sync::atomic::AtomicU64,
    pub accepted: std::sync::atomic::AtomicU64,
}

pub fn handle(client: &Client, counters: &Counters, req: Request) -> Answer {
    let parsed: Json = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => {
            return envelope(
                false,
                Json::Null,
                Err(err(RPC_PARSE_ERROR, format!("Parse error: {e}"))),
            )
        }
    };
    let Json::Object(obj) = parsed else {
        let what = if parsed.is_array() {
            "batches are not supported by this server: send one request per call"
        } else {
            "the request must be a JSON object"
        };
        return envelope(false, Json::Null, Err(err(RPC_INVALID_REQUEST, what)));
    };
    let v2 = obj.get("jsonrpc").and_then(Json::as_str) == Some("2.0");
    let id = obj.get("id").cloned().unwrap_or(Json::Null);
    let Some(method) = obj.get("method").and_then(Json::as_str) else {
        return envelope(v2, id, Err(err(RPC_INVALID_REQUEST, "Method must be a string")));
    };
    let params: Vec<Json> = match obj.get("params") {
        None | Some(Json::Null) => vec![],
        Some(Json::Array(a)) => a.clone(),
        Some(Json::Object(named)) => match method {
            "getblocktemplate" => vec![named.get("template_request").cloned().unwrap_or(Json::Null)],
            "submitblock" => vec![named.get("hexdata").cloned().unwrap_or(Json::Null)],
            _ => vec![],
        },
        Some(_) => {
            return envelope(
                v2,
                id,
                Err(err(RPC_INVALID_REQUEST, "Params must be an array or object")),
            )
        }
    };
    let result = match method {
        "getblocktemplate" => get_block_template(client, counters, &params),
        "submitblock" => submit_block(client, counters, &params),
        other => Err(err(
            RPC_METHOD_NOT_FOUND,
            format!("Method not found ({other}); this server has getblocktemplate and submitblock"),
        )),
    };
    envelope(v2, id, result)
}

fn envelope(v2: bool, id: Json, result: Result<Json, RpcError>) -> Answer {
    match (v2, result) {
        (true, Ok(r)) => Answer::json(200, &json!({ "jsonrpc": "2.0", "result": r, "id": id })),
        (true, Err(e)) => Answer::json(
            200,
            &json!({ "jsonrpc": "2.0", "error": { "code": e.code, "message": e.message }, "id": id }),
        ),
        (false, Ok(r)) => Answer::json(200, &json!({ "result": r, "error": null, "id": id })),
        (false, Err(e)) => {
            let status = if e.code == RPC_METHOD_NOT_FOUND {
                404
            } else if e.code == RPC_INVALID_REQUEST || e.code == RPC_PARSE_ERROR {
                400
            } else {
                500
            };
            Answer::json(
                status,
                &json!({ "result": null, "error": { "code": e.code, "message": e.message }, "id": id }),
            )
        }
    }
}

fn get_block_template(client: &Client, counters: &Counters, params: &[Json]) -> Result<Json, RpcError> {
    let request = params.first().cloned().unwrap_or(Json::Null);
    let request = match request {
        Json::Null => serde_json::Map::new(),
        Json::Object(o) => o,
        _ => return Err(err(RPC_TYPE_ERROR, "template_request must be an object")),
    };
    match request.get("mode").map(|m| m.as_str()) {
        None | Some(Some("template")) => {}
        Some(Some("proposal")) => {
            return Err(err(
                RPC_INVALID_PARAMETER,
                "mode \"proposal\" is not supported by this server (submit the block with submitblock)",
            ))
        }
        Some(_) => return Err(err(RPC_INVALID_PARAMETER, "Invalid mode")),
    }
    let rules: Vec<String> = match request.get("rules") {
        Some(Json::Array(r)) if r.len() <= 32 => r
            .iter()
            .filter_map(|x| x.as_str())
            .filter(|s| s.len() <= 64)
            .map(str::to_owned)
            .collect(),
        Some(Json::Array(_)) => return Err(err(RPC_INVALID_PARAMETER, "rules: at most 32 rules")),
        _ => vec![],
    };
    if !rules.iter().any(|r| r == "segwit") {
        return Err(err(
            RPC_INVALID_PARAMETER,
            "getblocktemplate must be called with the segwit rule set (call with {\"rules\": [\"segwit\"]})",
        ));
    }
    let mut options = BlockTemplateOptions::new();
    options.rules = rules;
    let t = client.get_block_template(&options).map_err(|e| {
        err(
            RPC_MISC_ERROR,
            format!("the node's block template is not available: {e}"),
        )
    })?;
    counters.templates.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(core_template(&t))
}

/// modhost's template in getblocktemplate's form (Bitcoin Core 25+, regtest).
pub fn core_template(t: &BlockTemplate) -> Json {
    // `depends`: 1-based indexes of earlier template transactions this one spends.
    let index: HashMap<&str, usize> = t
        .transactions
        .iter()
        .enumerate()
        .map(|(i, x)| (x.txid.as_str(), i + 1))
        .collect();
    let transactions: Vec<Json> = t
        .transactions
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let mut depends: Vec<usize> = tx::spent_txids(&x.hex)
                .unwrap_or_default()
                .iter()
                .filter_map(|txid| index.get(txid.as_str()).copied())
                .filter(|&d| d <= i)
                .collect();
            depends.sort_unstable();
            depends.dedup();
            json!({
                "data": x.hex,
                "txid": x.txid,
                "hash": x.wtxid,
                "depends": depends,
                "fee": x.fee,
                // The host's template carries no signature-operation counts.
                "sigops": 0,
                "weight": x.weight,
            })
        })
        .collect();
    json!({
        "capabilities": [],
        "version": t.version,
        "rules": ["csv", "!segwit", "taproot"],
        "vbavailable": {},
        "vbrequired": 0,
        "previousblockhash": t.previous_block_hash,
        "transactions": transactions,
        "coinbaseaux": {},
        "coinbasevalue": t.coinbase_value,
        "longpollid": format!("{}{}", t.previous_block_hash, t.transactions.len()),
        "target": t.target,
        "mintime": t.min_time,
        "mutable": ["time", "transactions", "prevblock"],
        "noncerange": "00000000ffffffff",
        "sigoplimit": 80_000,
        "sizelimit": 4_000_000,
        "weightlimit": 4_000_000,
        "curtime": t.cur_time,
        "bits": format!("{:08x}", t.bits),
        "height": t.height,
        "default_witness_commitment": t.default_witness_commitment,
    })
}

fn submit_block(client: &Client, counters: &Counters, params: &[Json]) -> Result<Json, RpcError> {
    let Some(Json::String(hex)) = params.first() else {
        return Err(err(
            RPC_TYPE_ERROR,
            "hexdata must be a hex string (the serialised block)",
        ));
    };
    // Core: a block that does not decode is error -22, checked before anything else.
    if hex.len() > MAX_BLOCK_HEX {
        return Err(err(
            RPC_DESERIALIZATION_ERROR,
            format!(
                "Block decode failed: {} hex characters, more than a block of 4,000,000 bytes can have",
                hex.len()
            ),
        ));
    }
    if hex.len() < 160 || !tx::is_hex(hex) {
        return Err(err(RPC_DESERIALIZATION_ERROR, "Block decode failed"));
    }
    counters.submitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let r = client
        .submit_block(hex)
        .map_err(|e| err(RPC_MISC_ERROR, format!("the node did not take the block: {e}")))?;
    let reason = r.reason.clone().unwrap_or_else(|| "rejected".into());
    let code = reason.split(':').next().unwrap_or("rejected").trim().to_owned();
    match r.result {
        SubmitBlockStatus::Accepted => {
            counters.accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            client.info(&format!(
                "block-template: block {} accepted",
                r.hash.as_deref().unwrap_or("?")
            ));
            Ok(Json::Null)
        }
        SubmitBlockStatus::Duplicate => Ok(json!("duplicate")),
        SubmitBlockStatus::Rejected if code == "bad-block-decode" => {
            Err(err(RPC_DESERIALIZATION_ERROR, "Block decode failed"))
        }
        SubmitBlockStatus::Rejected => {
            client.info(&format!(
                "block-template: block {} rejected: {reason}",
                r.hash.as_deref().unwrap_or("?")
            ));
            Ok(json!(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modhost_sdk::TemplateTransaction;

    /// A legacy transaction spending `prev`:0 (display-order txid).
    fn spending(prev: &str) -> String {
        let internal: String = tx::decode_hex(prev)
            .unwrap()
            .iter()
            .rev()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("0200000001{internal}0000000000ffffffff0000000000")
    }

    #[test]
    fn core_template_has_cores_fields_and_depends_on_earlier_template_transactions() {
        let a = "aa".repeat(32);
        let b = "bb".repeat(32);
        let tpl = BlockTemplate {
            version: 0x2000_0000,
            previous_block_hash: "11".repeat(32),
            height: 102,
            bits: 0x207f_ffff,
            target: format!("7fffff{}", "0".repeat(58)),
            cur_time: 1_700_000_100,
            min_time: 1_700_000_000,
            transactions: vec![
                TemplateTransaction {
                    txid: a.clone(),
                    wtxid: a.clone(),
                    hex: spending(&"cc".repeat(32)),
                    fee: 500,
                    weight: 400,
                },
                // spends the first one: depends [1]
                TemplateTransaction {
                    txid: b.clone(),
                    wtxid: "dd".repeat(32),
                    hex: spending(&a),
                    fee: 700,
                    weight: 400,
                },
            ],
            coinbase_value: 5_000_001_200,
            default_witness_commitment: "6a24aa21a9ed".to_string() + &"00".repeat(32),
            coinbase_tx: None,
            template_id: "t-1".to_string(),
            tx_count: 2,
            next_page: None,
        };
        let j = core_template(&tpl);
        assert_eq!(j["bits"], "207fffff");
        assert_eq!(j["previousblockhash"], "11".repeat(32));
        assert_eq!(j["coinbasevalue"], 5_000_001_200u64);
        assert_eq!(
            (j["curtime"].as_u64(), j["mintime"].as_u64(), j["height"].as_u64()),
            (Some(1_700_000_100), Some(1_700_000_000), Some(102))
        );
        assert_eq!(j["transactions"][0]["depends"], serde_json::json!([]));
        assert_eq!(j["transactions"][1]["depends"], serde_json::json!([1]));
        assert_eq!(j["transactions"][1]["hash"], "dd".repeat(32));
        assert_eq!(j["transactions"][1]["fee"], 700);
    }
}
