//! Encoding of outgoing QMP commands.

use serde_json::{Map, Value};

/// Which way a message went, for transcripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

/// The compact JSON of a command: `{"execute":"…","arguments":{…},"id":N}`,
/// with no trailing newline, since QEMU pays for every byte. QEMU copies
/// the `id` into its reply, which is how the reply is matched to the
/// command.
pub fn command_bytes(command: &str, arguments: Option<&Map<String, Value>>, id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + command.len());
    out.extend_from_slice(b"{\"execute\":");
    // Writing JSON into a Vec cannot fail.
    serde_json::to_writer(&mut out, command).expect("writing to a Vec");
    if let Some(args) = arguments {
        out.extend_from_slice(b",\"arguments\":");
        serde_json::to_writer(&mut out, args).expect("writing to a Vec");
    }
    out.extend_from_slice(b",\"id\":");
    out.extend_from_slice(id.to_string().as_bytes());
    out.push(b'}');
    out
}
