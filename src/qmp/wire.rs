//! Encoding of outgoing QMP commands.

use serde_json::{Map, Value};

/// Which way a message went, for transcripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

/// The compact JSON of a command: `{"execute":"…","arguments":{…}}`, with
/// no `id` and no trailing newline, since QEMU pays for every byte.
pub fn command_bytes(command: &str, arguments: Option<&Map<String, Value>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + command.len());
    out.extend_from_slice(b"{\"execute\":");
    // Writing JSON into a Vec cannot fail.
    serde_json::to_writer(&mut out, command).expect("writing to a Vec");
    if let Some(args) = arguments {
        out.extend_from_slice(b",\"arguments\":");
        serde_json::to_writer(&mut out, args).expect("writing to a Vec");
    }
    out.push(b'}');
    out
}
