//! The qtest protocol: one text line out, one reply line back.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

#[derive(Debug)]
pub(super) enum QtestError {
    Closed,
    Timeout(Duration),
    Io(String),
}

pub(super) struct Qtest {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qtest {
    pub(super) fn new(stream: UnixStream) -> Qtest {
        let writer = stream
            .try_clone()
            .expect("cloning a connected unix socket only fails when out of descriptors");
        Qtest {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Sends `line` and returns the first reply line, skipping the
    /// asynchronous `IRQ …` notices qtest interleaves.
    pub(super) fn command(&mut self, line: &str, timeout: Duration) -> Result<String, QtestError> {
        let io = |e: std::io::Error| QtestError::Io(e.to_string());
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::BrokenPipe => QtestError::Closed,
                _ => io(e),
            })?;
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(io)?;
        loop {
            let mut reply = String::new();
            match self.reader.read_line(&mut reply) {
                Ok(0) => return Err(QtestError::Closed),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(QtestError::Timeout(timeout))
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(QtestError::Closed)
                }
                Err(e) => return Err(io(e)),
            }
            let reply = reply.trim_end();
            if !reply.starts_with("IRQ") {
                return Ok(reply.to_string());
            }
        }
    }
}
