//! Just enough of the transaction format to fill getblocktemplate's `depends`: the outpoints a
//! serialised transaction spends (BIP144 witness serialisation or the legacy one).

/// Hex of raw bytes, or None when `s` is not an even number of hex digits.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    b.chunks(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

/// Whether `s` is an even number of hex digits, without allocating.
pub fn is_hex(s: &str) -> bool {
    s.len().is_multiple_of(2) && s.bytes().all(|c| c.is_ascii_hexdigit())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn varint(&mut self) -> Option<u64> {
        let first = *self.take(1)?.first()?;
        Some(match first {
            0xfd => u16::from_le_bytes(self.take(2)?.try_into().ok()?) as u64,
            0xfe => u32::from_le_bytes(self.take(4)?.try_into().ok()?) as u64,
            0xff => u64::from_le_bytes(self.take(8)?.try_into().ok()?),
            n => n as u64,
        })
    }
}

/// The txids (display order, lowercase hex) of the outputs a serialised transaction spends;
/// None when it does not parse.
pub fn spent_txids(hex: &str) -> Option<Vec<String>> {
    let bytes = decode_hex(hex)?;
    let mut r = Reader { bytes: &bytes, at: 0 };
    r.take(4)?; // version
    let mut count = r.varint()?;
    if count == 0 {
        // BIP144: marker 0x00, flag 0x01, then the input count.
        if *r.take(1)?.first()? != 1 {
            return None;
        }
        count = r.varint()?;
    }
    // Each input is at least 41 bytes: refuse counts the data cannot hold before allocating.
    if count > (bytes.len() / 41) as u64 {
        return None;
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let txid = r.take(32)?;
        r.take(4)?; // vout
        let script = r.varint()?;
        r.take(usize::try_from(script).ok()?)?;
        r.take(4)?; // sequence
        out.push(txid.iter().rev().map(|b| format!("{b:02x}")).collect());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_spent_txids_of_legacy_and_witness_transactions() {
        let prev = "11".repeat(31) + "22";
        // version 2, 1 input spending prev:0 with an empty script, sequence, 0 outputs, locktime
        let internal: String = decode_hex(&prev)
            .unwrap()
            .iter()
            .rev()
            .map(|b| format!("{b:02x}"))
            .collect();
        let legacy = "02000000".to_string() /* version */
            + "01"
            + &internal
            + "00000000"
            + "00"
            + "ffffffff"
            + "00"
            + "00000000";
        assert_eq!(spent_txids(&legacy), Some(vec![prev.clone()]));
        let witness = "02000000".to_string()
            + "0001"
            + "01"
            + &internal
            + "00000000"
            + "00"
            + "ffffffff"
            + "00"
            + "0100"
            + "00000000";
        assert_eq!(spent_txids(&witness), Some(vec![prev]));
        assert_eq!(spent_txids("0200"), None);
        assert_eq!(spent_txids("zz"), None);
        // A huge input count in a short transaction is refused before any allocation.
        assert_eq!(spent_txids("02000000ffffffffffffffffff"), None);
    }
}
