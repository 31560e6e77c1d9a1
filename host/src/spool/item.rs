//! How a spooled write and a dead letter are laid out in the store. An item
//! keeps Salt's own JSON arguments as they arrived, so a spool written by one
//! version of the host is delivered by the next.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::runtime::FUNCTIONS;

/// Layout version of an item.
const ITEM_VERSION: u8 = 1;
/// Layout version of a dead letter.
const LETTER_VERSION: u8 = 1;

/// Salt's write functions: the calls the spool takes.
pub const WRITES: [&str; 5] = ["returner", "save_load", "save_minions", "event_return", "update_endtime"];

/// Whether `function` is a write the spool takes.
pub fn is_write(function: &str) -> bool {
    WRITES.contains(&function)
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One accepted write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// When the host acknowledged it, in ms since the epoch.
    pub accepted_ms: u64,
    /// Salt's function name (one of [`WRITES`]).
    pub function: &'static str,
    /// Salt's arguments, the JSON object as it arrived.
    pub body: Vec<u8>,
}

impl Item {
    /// An item for `function` (one of Salt's functions) with `body`, now.
    pub fn new(function: &str, body: &[u8]) -> Option<Self> {
        let function = FUNCTIONS.iter().copied().find(|f| *f == function)?;
        Some(Self { accepted_ms: now_ms(), function, body: body.to_vec() })
    }

    /// `[version][accepted ms, u64 LE][function index][body]`.
    pub fn encode(&self) -> Vec<u8> {
        let index = FUNCTIONS.iter().position(|f| *f == self.function).unwrap_or(0) as u8;
        let mut out = Vec::with_capacity(10 + self.body.len());
        out.push(ITEM_VERSION);
        out.extend_from_slice(&self.accepted_ms.to_le_bytes());
        out.push(index);
        out.extend_from_slice(&self.body);
        out
    }

    /// The item `bytes` encode, or `None` if they are not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        if version != ITEM_VERSION || rest.len() < 9 {
            return None;
        }
        let accepted_ms = u64::from_le_bytes(rest[..8].try_into().ok()?);
        let function = *FUNCTIONS.get(usize::from(rest[8]))?;
        Some(Self { accepted_ms, function, body: rest[9..].to_vec() })
    }
}

/// An item that can never be delivered, kept with the error it met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// When it was moved here, in ms since the epoch.
    pub dead_ms: u64,
    /// The error's kind (`invalid`, `trap`, ...).
    pub kind: String,
    /// The error's message.
    pub message: String,
    /// The item as it was queued (see [`Item::encode`]).
    pub item: Vec<u8>,
}

impl DeadLetter {
    /// A dead letter for the encoded `item`, now.
    pub fn new(kind: &str, message: &str, item: Vec<u8>) -> Self {
        Self { dead_ms: now_ms(), kind: kind.to_owned(), message: message.to_owned(), item }
    }

    /// `[version][dead ms, u64 LE][kind len, u16 LE][kind][message len, u32 LE][message][item]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(15 + self.kind.len() + self.message.len() + self.item.len());
        out.push(LETTER_VERSION);
        out.extend_from_slice(&self.dead_ms.to_le_bytes());
        out.extend_from_slice(&(self.kind.len() as u16).to_le_bytes());
        out.extend_from_slice(self.kind.as_bytes());
        out.extend_from_slice(&(self.message.len() as u32).to_le_bytes());
        out.extend_from_slice(self.message.as_bytes());
        out.extend_from_slice(&self.item);
        out
    }

    /// The dead letter `bytes` encode, or `None` if they are not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        if version != LETTER_VERSION {
            return None;
        }
        let (dead_ms, rest) = rest.split_at_checked(8)?;
        let (kind_len, rest) = rest.split_at_checked(2)?;
        let (kind, rest) = rest.split_at_checked(usize::from(u16::from_le_bytes(kind_len.try_into().ok()?)))?;
        let (message_len, rest) = rest.split_at_checked(4)?;
        let (message, item) = rest.split_at_checked(u32::from_le_bytes(message_len.try_into().ok()?) as usize)?;
        Some(Self {
            dead_ms: u64::from_le_bytes(dead_ms.try_into().ok()?),
            kind: String::from_utf8_lossy(kind).into_owned(),
            message: String::from_utf8_lossy(message).into_owned(),
            item: item.to_vec(),
        })
    }
}

impl DeadLetter {
    /// The dead letter `bytes` encode; bytes that are not one are kept
    /// whole as the item of an `unreadable` letter, so they can still be
    /// listed and dropped.
    pub fn decode_or_raw(bytes: &[u8]) -> Self {
        Self::decode(bytes).unwrap_or_else(|| Self {
            dead_ms: 0,
            kind: "unreadable".into(),
            message: "this dead letter's layout is unknown to this host".into(),
            item: bytes.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_reads_back_as_written() {
        let item = Item::new("returner", br#"{"ret": {"id": "m1", "jid": "1"}}"#).unwrap();
        assert_eq!(Item::decode(&item.encode()), Some(item));
        assert_eq!(Item::new("nope", b"{}"), None);
        assert_eq!(Item::decode(&[9, 0, 0]), None, "an unknown layout is refused, not misread");
        assert_eq!(Item::decode(&[]), None);
    }

    #[test]
    fn a_dead_letter_reads_back_as_written_and_a_torn_one_is_refused() {
        let item = Item::new("save_load", br#"{"jid": "1", "load": {}}"#).unwrap().encode();
        let letter = DeadLetter::new("invalid", "the load is not an object", item);
        let bytes = letter.encode();
        assert_eq!(DeadLetter::decode(&bytes), Some(letter));
        for cut in [1, 5, 10, 12] {
            assert_eq!(DeadLetter::decode(&bytes[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn writes_are_functions_of_the_contract() {
        for w in WRITES {
            assert!(FUNCTIONS.contains(&w), "{w}");
        }
        assert!(is_write("event_return") && !is_write("get_jid") && !is_write("prep_jid"));
    }
}
