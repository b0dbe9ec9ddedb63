//! A storage transaction whose ops do not fit one message of the module protocol (its limits
//! on values, string bytes and distinct map keys per message, docs/protocol.md section 3.1)
//! is sent in parts of one id; the host holds the parts and writes them all at once with the
//! last (section 6.2).

use std::collections::HashSet;

use crate::types::StorageOp;
use crate::value::Value;

/// What one part may weigh: under the protocol's per-message limits (max_values 65,536,
/// max_total_string_bytes 1 MiB, max_map_keys 4,096), with room for the message around it.
const PART_VALUES: usize = 48_000;
const PART_STRING_BYTES: usize = 768 * 1024;
const PART_KEYS: usize = 3_500;
const PART_BYTES: usize = 12 * 1024 * 1024;

#[derive(Default)]
struct Weight<'a> {
    values: usize,
    string_bytes: usize,
    keys: usize,
    bytes: usize,
    seen: HashSet<&'a str>,
}

impl<'a> Weight<'a> {
    fn key(&mut self, k: &'a str) {
        self.values += 1;
        self.string_bytes += k.len();
        // A key over 64 bytes counts at every appearance, a shorter one once per message.
        if k.len() > 64 || self.seen.insert(k) {
            self.keys += 1;
        }
    }

    fn value(&mut self, v: &'a Value) {
        self.values += 1;
        match v {
            Value::Str(s) => self.string_bytes += s.len(),
            Value::Bin(b) => self.bytes += b.len(),
            Value::Array(items) => items.iter().for_each(|x| self.value(x)),
            Value::Map(entries) => {
                for (k, x) in entries {
                    self.key(k);
                    self.value(x);
                }
            }
            _ => {}
        }
    }

    fn op(&mut self, op: &'a StorageOp) {
        self.values += 1; // the op's map
        self.key("op");
        self.values += 1;
        self.string_bytes += 6; // "put" or "delete"
        match op {
            StorageOp::Put { key, value } => {
                self.key("key");
                self.values += 1;
                self.string_bytes += key.len();
                self.key("value");
                self.value(value);
            }
            StorageOp::Delete { key } => {
                self.key("key");
                self.values += 1;
                self.string_bytes += key.len();
            }
        }
    }

    fn over(&self) -> bool {
        self.values > PART_VALUES
            || self.string_bytes > PART_STRING_BYTES
            || self.keys > PART_KEYS
            || self.bytes + self.string_bytes > PART_BYTES
    }
}

/// `ops` in parts that each fit one message, in order; one part when they all do. An op
/// too big for a message on its own is a part of its own (the host then names the limit).
pub(crate) fn split_ops(ops: &[StorageOp]) -> Vec<&[StorageOp]> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut w = Weight::default();
    for (i, op) in ops.iter().enumerate() {
        w.op(op);
        if w.over() && i > start {
            parts.push(&ops[start..i]);
            start = i;
            w = Weight::default();
            w.op(op);
        }
    }
    parts.push(&ops[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(i: usize) -> StorageOp {
        StorageOp::Put {
            key: format!("tx:{i:064x}"),
            value: Value::from_pairs([
                ("height", 100u64.into()),
                ("index", (i as u64).into()),
                ("vsize", 141u64.into()),
            ]),
        }
    }

    #[test]
    fn small_transactions_are_one_part_and_big_ones_are_split_in_order() {
        let few: Vec<StorageOp> = (0..100).map(put).collect();
        assert_eq!(split_ops(&few).len(), 1);
        let many: Vec<StorageOp> = (0..9_000).map(put).collect();
        let parts = split_ops(&many);
        assert!(
            parts.len() > 1,
            "9000 puts of 70-byte keys are more than 1 MiB of strings"
        );
        let joined: Vec<&StorageOp> = parts.iter().flat_map(|p| p.iter()).collect();
        assert_eq!(joined.len(), many.len());
        assert!(
            joined.iter().zip(many.iter()).all(|(a, b)| *a == b),
            "every op once, in order"
        );
        for p in &parts {
            let mut w = Weight::default();
            p.iter().for_each(|op| w.op(op));
            assert!(!w.over(), "a part of {} ops is over the budget", p.len());
        }
    }

    #[test]
    fn one_op_too_big_for_a_message_is_a_part_of_its_own() {
        let big = StorageOp::Put {
            key: "big".into(),
            value: Value::Str("x".repeat(2 * 1024 * 1024)),
        };
        let ops = vec![put(1), big, put(2)];
        let parts = split_ops(&ops);
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![1, 1, 1]);
    }
}
