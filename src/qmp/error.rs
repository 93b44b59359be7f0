//! What can go wrong talking QMP ([`Error`]), and error replies taken
//! apart ([`ErrorReply`], [`split_reply`]).

use std::time::Duration;

use serde_json::Value;

/// What went wrong talking QMP.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The peer hung up (EOF or ECONNRESET).
    #[error("QMP connection closed while {what}")]
    Closed { what: String },
    /// Nothing arrived in time.
    #[error("timed out after {after:?} {what}")]
    Timeout { what: String, after: Duration },
    /// The peer sent something that is not a QMP message.
    #[error("malformed QMP message: {detail}")]
    Malformed { detail: String },
    /// A line longer than the reader accepts.
    #[error("QMP message longer than {limit} bytes")]
    LineTooLong { limit: usize },
    /// Replies that answer no command arrived (see the module
    /// documentation); the connection is back in step.
    #[error("QMP replies out of step while {what}: {count} {replies} matching no command we sent arrived, the first: {first}; {outcome}", replies = if *.count == 1 { "reply" } else { "replies" })]
    Desync {
        what: String,
        count: usize,
        /// The first stray reply, shortened.
        first: String,
        /// What became of the command's own reply.
        outcome: String,
    },
    /// More events queued than the documented cap.
    #[error("more than {limit} QMP events queued unread")]
    EventQueueFull { limit: usize },
    /// The queued events take more memory than the documented cap.
    #[error("the {count} QMP events queued unread take more than {limit_mib} MiB of memory; the monitor was closed (read or clear events while a machine sends many)")]
    EventQueueTooBig { limit_mib: usize, count: usize },
    /// The server's greeting did not offer what we need.
    #[error("unexpected QMP greeting: {detail}")]
    Greeting { detail: String },
    /// The command was answered with an error.
    #[error("{class}: {desc}")]
    Response {
        class: String,
        desc: String,
        reply: Box<Value>,
    },
    /// An operating system error on the socket.
    #[error("QMP socket error while {what}: {message}")]
    Io { what: String, message: String },
    /// The operation needs a unix socket.
    #[error("{what} needs a unix socket monitor, not TCP")]
    NotUnix { what: String },
    /// [`Interrupter::interrupt`] woke the wait; the connection is intact.
    #[error("interrupted while {what}")]
    Interrupted { what: String },
}

impl Error {
    pub(super) fn io(what: &str, err: std::io::Error) -> Error {
        Error::Io {
            what: what.to_string(),
            message: err.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The reply as the caller sees it: without the `id` this client added.
pub(super) fn strip_id(mut reply: Value) -> Value {
    if let Some(m) = reply.as_object_mut() {
        m.remove("id");
    }
    reply
}

/// Builds [`Error::Response`] from an error reply.
pub fn response_error(reply: &Value, err: &Value) -> Error {
    ErrorReply::new(reply.clone(), err).into()
}

/// An error reply, taken apart: what [`Error::Response`] and the
/// machine's own error for it carry.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorReply {
    pub class: String,
    pub desc: String,
    /// The whole reply.
    pub reply: Box<Value>,
}

impl ErrorReply {
    pub(super) fn new(reply: Value, err: &Value) -> ErrorReply {
        let text = |k: &str, default: &str| {
            err.get(k)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_string()
        };
        ErrorReply {
            class: text("class", "GenericError"),
            desc: text("desc", ""),
            reply: Box::new(reply),
        }
    }
}

impl From<ErrorReply> for Error {
    fn from(e: ErrorReply) -> Error {
        Error::Response {
            class: e.class,
            desc: e.desc,
            reply: e.reply,
        }
    }
}

/// A command's reply as its `return` value (`null` when it has none), or
/// the error it carries.
pub fn split_reply(mut reply: Value) -> std::result::Result<Value, ErrorReply> {
    if let Some(err) = reply.get("error") {
        let err = err.clone();
        return Err(ErrorReply::new(reply, &err));
    }
    Ok(reply
        .as_object_mut()
        .and_then(|m| m.remove("return"))
        .unwrap_or(Value::Null))
}
