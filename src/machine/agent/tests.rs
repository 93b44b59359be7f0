//! The host's end against a fake agent on the other end of a
//! socketpair: the protocol's edge cases that a real guest does not
//! produce on demand.

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

struct Fake {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Fake {
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).unwrap();
        l.trim_end_matches('\n').to_string()
    }

    /// A `run` request's command.
    fn run_request(&mut self) -> String {
        let head = self.line();
        assert!(head.starts_with("run "), "{head}");
        let n: usize = head.rsplit(' ').next().unwrap().parse().unwrap();
        let mut cmd = vec![0; n];
        self.reader.read_exact(&mut cmd).unwrap();
        String::from_utf8(cmd).unwrap()
    }

    fn echo_sync(&mut self) {
        let sync = self.line();
        assert!(sync.starts_with("sync "), "{sync}");
        self.send(&format!("{sync}\n"));
    }

    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
    }
}

fn pair() -> (Agent, Fake) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let fake = Fake {
        reader: BufReader::new(theirs.try_clone().unwrap()),
        writer: theirs,
    };
    (Agent::new(ours).unwrap(), fake)
}

/// Interrupts `agent` every 20 ms until `f` returns, as a watchdog
/// does (an interrupt ends only the waits already under way).
fn interrupting<T>(agent: &Agent, f: impl FnOnce() -> T) -> T {
    let done = Arc::new(AtomicBool::new(false));
    let (i, d) = (agent.interrupter(), done.clone());
    let t = thread::spawn(move || {
        while !d.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
            i.interrupt();
        }
    });
    let out = f();
    done.store(true, Ordering::SeqCst);
    t.join().unwrap();
    out
}

#[test]
fn an_interrupt_ends_a_run_and_the_next_request_waits_for_the_guest_to_finish_it() {
    let (agent, mut fake) = pair();
    let guest = thread::spawn(move || {
        fake.echo_sync();
        assert_eq!(fake.run_request(), "sleep 100");
        // The host gave up and resyncs: the abandoned command ends
        // first, its long output without a newline, then the sync is
        // answered.
        let sync = fake.line();
        assert!(sync.starts_with("sync "), "{sync}");
        let late = "x".repeat(200 << 10);
        fake.send(&format!("ran 0 0 {} 0 1\n{late}", late.len()));
        fake.send(&format!("{sync}\n"));
        assert_eq!(fake.run_request(), "echo again");
        fake.send("ran 0 0 6 0 1\nagain\n");
    });
    let start = Instant::now();
    let err = interrupting(&agent, || {
        agent.run("sleep 100", Duration::from_secs(100), 1000)
    })
    .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(60), "{err}");
    assert_eq!(
        err.to_string(),
        "interrupted while running `sleep 100` in the guest (it runs on there until its timeout, 100s)"
    );
    let out = agent
        .run("echo again", Duration::from_secs(10), 1000)
        .unwrap();
    assert_eq!(out.stdout, b"again\n");
    guest.join().unwrap();
}

#[test]
fn an_interrupt_before_a_wait_does_not_end_it() {
    let (agent, mut fake) = pair();
    agent.interrupter().interrupt();
    agent.interrupter().interrupt();
    let guest = thread::spawn(move || {
        fake.echo_sync();
        assert_eq!(fake.run_request(), "true");
        thread::sleep(Duration::from_millis(100));
        fake.send("ran 3 0 0 0 1\n");
    });
    let out = agent.run("true", Duration::from_secs(10), 1000).unwrap();
    assert_eq!(out.status, 3);
    guest.join().unwrap();
}

#[test]
fn an_interrupted_copy_is_completed_with_zeros_and_the_channel_goes_on() {
    let (agent, mut fake) = pair();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big");
    // Far more than a socket buffer holds: the sender must wait.
    let size = 16 << 20;
    std::fs::write(&file, vec![7u8; size]).unwrap();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let guest = thread::spawn(move || {
        fake.echo_sync();
        let head = fake.line();
        assert_eq!(head, format!("put {size} 8"));
        // Reads nothing more until the host has given up; then all it
        // was promised, answers, and answers the sync.
        stopped.recv().unwrap();
        let mut got = vec![0u8; 8 + size];
        fake.reader.read_exact(&mut got).unwrap();
        fake.send("ok\n");
        fake.echo_sync();
        got
    });
    let err = interrupting(&agent, || agent.copy_to(&file, "/tmp/big")).unwrap_err();
    assert!(
        matches!(&err, Error::Interrupted { what } if what.starts_with("copying ")
            && what.ends_with("(the rest of the guest's file becomes zeros)")),
        "{err}"
    );
    stop.send(()).unwrap();
    assert!(agent.available().unwrap());
    let got = guest.join().unwrap();
    assert_eq!(&got[..8], b"/tmp/big");
    let sent = got[8..].iter().take_while(|&&b| b == 7).count();
    assert!(sent > 0 && sent < size, "{sent}");
    assert!(got[8 + sent..].iter().all(|&b| b == 0));
}

#[test]
fn an_interrupted_first_look_for_the_agent_does_not_take_the_guest_for_one_without() {
    let (agent, mut fake) = pair();
    let err = interrupting(&agent, || agent.available()).unwrap_err();
    assert!(matches!(err, Error::Interrupted { .. }), "{err}");
    // The guest answers late: both syncs, the first one's echo
    // skipped.
    let guest = thread::spawn(move || {
        fake.echo_sync();
        fake.echo_sync();
    });
    assert!(agent.available().unwrap());
    guest.join().unwrap();
}
