//! The client against fake peers: ordering, hang-ups and garbage.
//!
//! Longer than the other files: one flat list of cases sharing the fake
//! peer's helpers at the top, each case short and standing alone.

use super::*;
use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::thread;

const GREETING: &[u8] =
    b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}}, \"capabilities\": [\"oob\"]}}\r\n";
const T: Duration = Duration::from_secs(5);

/// A client on one end of a socketpair; the test plays QEMU on the other.
fn pair() -> (Client, UnixStream) {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    theirs.write_all(GREETING).unwrap();
    let client = Client::new(Stream::Unix(ours), T).unwrap();
    (client, theirs)
}

/// Reads one command the client sent (commands carry no newline).
fn read_command(peer: &mut UnixStream) -> Value {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        peer.read_exact(&mut byte).unwrap();
        buf.push(byte[0]);
        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
            return v;
        }
    }
}

/// Answers the command `cmd` with `body` plus its id, as QEMU does.
fn answer(peer: &mut UnixStream, cmd: &Value, mut body: Value) {
    body["id"] = cmd["id"].clone();
    let mut line = serde_json::to_vec(&body).unwrap();
    line.extend_from_slice(b"\r\n");
    peer.write_all(&line).unwrap();
}

#[test]
fn greeting_is_kept_and_negotiation_enables_oob() {
    let (mut client, mut peer) = pair();
    assert_eq!(client.greeting()["QMP"]["version"]["qemu"]["minor"], 2);
    let t = thread::spawn(move || {
        let cmd = read_command(&mut peer);
        answer(&mut peer, &cmd, serde_json::json!({"return": {}}));
        (cmd, peer)
    });
    client.negotiate(T).unwrap();
    let (cmd, _peer) = t.join().unwrap();
    assert_eq!(
        cmd,
        serde_json::json!({"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": 1})
    );
    assert!(client.is_negotiated());
}

#[test]
fn commands_are_compact_with_an_id() {
    assert_eq!(
        command_bytes("query-status", None, 3),
        br#"{"execute":"query-status","id":3}"#
    );
    let mut args = Map::new();
    args.insert("id".into(), Value::from("d1"));
    assert_eq!(
        command_bytes("device_del", Some(&args), 12),
        br#"{"execute":"device_del","arguments":{"id":"d1"},"id":12}"#
    );
}

#[test]
fn events_before_a_reply_are_queued_in_order() {
    let (client, mut peer) = pair();
    let t = thread::spawn(move || {
        let cmd = read_command(&mut peer);
        peer.write_all(b"{\"event\": \"STOP\"}\r\n{\"event\": \"A\"}\r\n")
            .unwrap();
        answer(&mut peer, &cmd, serde_json::json!({"return": {}}));
        peer
    });
    let reply = client.execute("stop", None, T).unwrap();
    assert_eq!(reply, serde_json::json!({"return": {}}));
    let _peer = t.join().unwrap();
    let names: Vec<_> = client
        .queued_events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["STOP", "A"]);
    // Taking a later event leaves the earlier one queued.
    let a = client
        .take_event(T, |e| e["event"] == "A")
        .unwrap()
        .unwrap();
    assert_eq!(a["event"], "A");
    assert_eq!(client.drain_events().len(), 1);
}

#[test]
fn error_reply_is_typed_by_command() {
    let (client, mut peer) = pair();
    let t = thread::spawn(move || {
        let cmd = read_command(&mut peer);
        answer(
            &mut peer,
            &cmd,
            serde_json::json!({"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}),
        );
        peer
    });
    let err = client.command("nope", None, T).unwrap_err();
    let _peer = t.join().unwrap();
    match err {
        Error::Response { class, desc, .. } => {
            assert_eq!(class, "CommandNotFound");
            assert!(desc.contains("nope"));
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn hang_up_after_quit_is_closed_not_garbage() {
    let (client, mut peer) = pair();
    let t = thread::spawn(move || {
        let cmd = read_command(&mut peer);
        peer.write_all(b"{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": false}}\r\n")
            .unwrap();
        answer(&mut peer, &cmd, serde_json::json!({"return": {}}));
        drop(peer);
    });
    client.execute("quit", None, T).unwrap();
    t.join().unwrap();
    assert!(client.wait_closed(T));
    assert!(matches!(client.ended(), Some(Error::Closed { .. })));
    // The event stays readable after the hang-up.
    let ev = client.take_event(T, |_| true).unwrap().unwrap();
    assert_eq!(ev["event"], "SHUTDOWN");
    assert!(matches!(
        client.execute("x", None, T).unwrap_err(),
        Error::Closed { .. }
    ));
}

#[test]
fn waiting_for_a_reply_fails_at_once_on_hang_up() {
    let (client, peer) = pair();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        drop(peer);
    });
    let start = Instant::now();
    let err = client
        .execute("query-status", None, Duration::from_secs(30))
        .unwrap_err();
    t.join().unwrap();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    // At once, not at the 30 s deadline (slack for a loaded machine).
    assert!(start.elapsed() < Duration::from_secs(15));
}

#[test]
fn reply_timeout_names_the_command_and_a_late_reply_is_discarded() {
    let (client, mut peer) = pair();
    let err = client
        .execute("query-status", None, Duration::from_millis(200))
        .unwrap_err();
    match &err {
        Error::Timeout { what, after } => {
            assert!(what.contains("query-status"));
            assert_eq!(*after, Duration::from_millis(200));
        }
        e => panic!("unexpected {e:?}"),
    }
    let first = read_command(&mut peer);
    let t = thread::spawn(move || {
        // The late reply to the first command, then the second's.
        let second = read_command(&mut peer);
        answer(&mut peer, &first, serde_json::json!({"return": 1}));
        answer(&mut peer, &second, serde_json::json!({"return": 2}));
        peer
    });
    assert_eq!(client.execute("second", None, T).unwrap()["return"], 2);
    let _peer = t.join().unwrap();
}

#[test]
fn garbage_is_a_malformed_error() {
    let (client, mut peer) = pair();
    peer.write_all(b"this is not json\r\n").unwrap();
    let err = client.execute("query-status", None, T).unwrap_err();
    assert!(
        matches!(&err, Error::Malformed { detail } if detail.contains("not json")),
        "{err:?}"
    );
}

#[test]
fn invalid_utf8_is_a_malformed_error() {
    let (client, mut peer) = pair();
    peer.write_all(b"{\"return\": \"\xff\xfe\"}\r\n").unwrap();
    let err = client.execute("query-status", None, T).unwrap_err();
    assert!(matches!(err, Error::Malformed { .. }), "{err:?}");
}

#[test]
fn non_object_and_unknown_messages_are_malformed() {
    let (client, mut peer) = pair();
    peer.write_all(b"[1, 2, 3]\r\n").unwrap();
    assert!(matches!(
        client.execute("a", None, T).unwrap_err(),
        Error::Malformed { .. }
    ));
    let (client, mut peer) = pair();
    peer.write_all(b"{\"hello\": 1}\r\n").unwrap();
    assert!(matches!(
        client.execute("a", None, T).unwrap_err(),
        Error::Malformed { .. }
    ));
}

#[test]
fn truncated_reply_then_hang_up_is_malformed() {
    let (client, mut peer) = pair();
    peer.write_all(b"{\"return\": {\"status\": \"runn").unwrap();
    drop(peer);
    let err = client.execute("query-status", None, T).unwrap_err();
    assert!(
        matches!(&err, Error::Malformed { detail } if detail.contains("closed inside a message")),
        "{err:?}"
    );
}

#[test]
fn oversized_line_is_refused_with_bounded_memory() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    theirs.write_all(GREETING).unwrap();
    let limits = Limits {
        max_line: 1 << 20,
        max_events: 10,
        ..Limits::default()
    };
    let client = Client::with_options(Stream::Unix(ours), T, limits, None).unwrap();
    // 100 MB without a newline: the reader must stop at the limit.
    let t = thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..100 {
            if theirs.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let err = client.execute("query-status", None, T).unwrap_err();
    assert!(
        matches!(err, Error::LineTooLong { limit } if limit == 1 << 20),
        "{err:?}"
    );
    drop(client);
    t.join().unwrap();
}

#[test]
fn event_flood_is_kept_in_order_up_to_the_cap() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    theirs.write_all(GREETING).unwrap();
    let limits = Limits {
        max_line: 1 << 20,
        max_events: 100_000,
        ..Limits::default()
    };
    let client = Client::with_options(Stream::Unix(ours), T, limits, None).unwrap();
    let t = thread::spawn(move || {
        let mut w = std::io::BufWriter::new(theirs);
        for i in 0..100_001 {
            if write!(w, "{{\"event\": \"E\", \"data\": {{\"i\": {i}}}}}\r\n").is_err() {
                break;
            }
        }
        let _ = w.flush();
    });
    // Nobody takes events while the flood comes: the cap ends the
    // connection with a clear error, and every event before it is kept,
    // in order.
    assert!(client.wait_closed(T));
    t.join().unwrap();
    assert!(
        matches!(
            client.ended(),
            Some(Error::EventQueueFull { limit: 100_000 })
        ),
        "{:?}",
        client.ended()
    );
    let events = client.drain_events();
    assert_eq!(events.len(), 100_000);
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev["data"]["i"], i);
    }
}

#[test]
fn event_flood_read_concurrently_loses_nothing() {
    let (client, theirs) = pair();
    let t = thread::spawn(move || {
        let mut w = std::io::BufWriter::new(theirs);
        for i in 0..100_000 {
            write!(w, "{{\"event\": \"E\", \"data\": {{\"i\": {i}}}}}\r\n").unwrap();
        }
        w.flush().unwrap();
    });
    for i in 0..100_000u64 {
        let ev = client.take_event(T, |_| true).unwrap().unwrap();
        assert_eq!(ev["data"]["i"], i);
    }
    t.join().unwrap();
}

/// Two threads waiting at once: one reads for both, and files what the
/// other waits for.
#[test]
fn one_waiter_reads_for_another() {
    let (client, mut peer) = pair();
    let client = Arc::new(client);
    let c = client.clone();
    let events = thread::spawn(move || c.take_event(T, |e| e["event"] == "X"));
    // The event waiter is (most likely) the one reading when the reply comes.
    thread::sleep(Duration::from_millis(50));
    let p = thread::spawn(move || {
        let cmd = read_command(&mut peer);
        peer.write_all(b"{\"event\": \"X\"}\r\n").unwrap();
        answer(&mut peer, &cmd, serde_json::json!({"return": {}}));
        peer
    });
    let reply = client.execute("query-status", None, T).unwrap();
    assert_eq!(reply, serde_json::json!({"return": {}}));
    let ev = events.join().unwrap().unwrap().unwrap();
    assert_eq!(ev["event"], "X");
    drop(p.join().unwrap());
}

/// A waiter that gives up while reading hands the reading over: the other
/// still gets its reply, which comes after the first one has left.
#[test]
fn a_waiter_that_leaves_hands_the_reading_over() {
    let (client, mut peer) = pair();
    let client = Arc::new(client);
    let c = client.clone();
    let short = thread::spawn(move || c.take_event(Duration::from_millis(200), |_| true));
    thread::sleep(Duration::from_millis(50));
    let p = thread::spawn(move || {
        let cmd = read_command(&mut peer);
        thread::sleep(Duration::from_millis(600));
        answer(
            &mut peer,
            &cmd,
            serde_json::json!({"return": {"late": true}}),
        );
        peer
    });
    let reply = client.execute("query-status", None, T).unwrap();
    assert_eq!(reply["return"]["late"], true);
    assert!(short.join().unwrap().unwrap().is_none());
    drop(p.join().unwrap());
}

/// With nobody waiting, nothing is read; looking at the queue reads what
/// has arrived.
#[test]
fn the_queue_shows_what_has_arrived_without_a_wait() {
    let (client, mut peer) = pair();
    peer.write_all(b"{\"event\": \"A\"}\r\n{\"event\": \"B\"}\r\n")
        .unwrap();
    // Delivered to our socket by now (a socketpair is synchronous).
    let names: Vec<_> = client
        .queued_events()
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    assert_eq!(names, ["A", "B"]);
    let ev = client
        .take_event(Duration::ZERO, |e| e["event"] == "B")
        .unwrap();
    assert_eq!(ev.unwrap()["event"], "B");
    drop(peer);
    assert!(matches!(client.ended(), Some(Error::Closed { .. })));
    assert_eq!(client.drain_events().len(), 1);
}

#[test]
fn no_greeting_times_out() {
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let start = Instant::now();
    let err = Client::new(Stream::Unix(ours), Duration::from_millis(300)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn send_fd_scm_delivers_a_descriptor() {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let (client, peer) = pair();
    let file = tempfile::tempfile().unwrap();
    client.send_fd_scm(&file).unwrap();
    let mut buf = [0u8; 4];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        peer.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .unwrap();
    let fds: Vec<RawFd> = msg
        .cmsgs()
        .unwrap()
        .filter_map(|c| match c {
            ControlMessageOwned::ScmRights(f) => Some(f),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(fds.len(), 1);
    assert_eq!(msg.bytes, 1);
    nix::unistd::close(fds[0]).unwrap();
}

#[test]
fn address_parsing() {
    assert_eq!(
        Address::parse("127.0.0.1:4444"),
        Address::Tcp("127.0.0.1".into(), 4444)
    );
    assert_eq!(
        Address::parse("/tmp/qmp.sock"),
        Address::Unix("/tmp/qmp.sock".into())
    );
    assert_eq!(Address::parse("[::1]:5"), Address::Tcp("::1".into(), 5));
}

mod fuzz {
    //! Whatever bytes a peer sends, the client ends in a value or a clean
    //! error: never a panic, never unbounded memory.
    use super::*;
    use proptest::prelude::*;

    fn feed(bytes: Vec<u8>) -> Result<Value> {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let limits = Limits {
            max_line: 4096,
            max_events: 64,
            ..Limits::default()
        };
        let t = thread::spawn(move || {
            let _ = theirs.write_all(GREETING);
            let _ = theirs.write_all(&bytes);
        });
        let client = Client::with_options(Stream::Unix(ours), T, limits, None)?;
        t.join().unwrap();
        let out = client.execute("query-status", None, Duration::from_millis(100));
        // Events that made it are well-formed objects.
        for ev in client.drain_events() {
            assert!(ev.get("event").is_some());
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("VMSCRIPT_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
        ))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..8192)) {
            let _ = feed(bytes);
        }

        #[test]
        fn arbitrary_message_lines_never_panic(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("{\"return\": {}}".to_string()),
                    Just("{\"event\": \"X\", \"data\": {}}".to_string()),
                    "\\PC{0,64}",
                    "[{}\\[\\]\":,a-z0-9 ]{0,64}",
                ],
                0..40,
            ),
            crlf in any::<bool>(),
        ) {
            let sep = if crlf { "\r\n" } else { "\n" };
            let _ = feed(lines.join(sep).into_bytes());
        }
    }
}

#[test]
fn an_interrupt_ends_an_event_wait_and_the_client_goes_on() {
    let (client, mut peer) = pair();
    let interrupter = client.interrupter();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        interrupter.interrupt();
    });
    let start = Instant::now();
    let err = client
        .take_event(Duration::from_secs(30), |_| true)
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, Error::Interrupted { .. }), "{err:?}");
    assert_eq!(err.to_string(), "interrupted while waiting for an event");
    t.join().unwrap();
    // Later waits are not affected.
    peer.write_all(b"{\"event\": \"STOP\"}\r\n").unwrap();
    let ev = client.take_event(T, |_| true).unwrap().unwrap();
    assert_eq!(ev["event"], "STOP");
}

#[test]
fn an_interrupted_command_discards_its_late_reply() {
    let (client, mut peer) = pair();
    let interrupter = client.interrupter();
    let t = thread::spawn(move || {
        let first = read_command(&mut peer);
        // Time for the client to start waiting for the reply.
        thread::sleep(Duration::from_millis(100));
        interrupter.interrupt();
        thread::sleep(Duration::from_millis(50));
        answer(&mut peer, &first, serde_json::json!({"return": "late"}));
        let second = read_command(&mut peer);
        answer(&mut peer, &second, serde_json::json!({"return": "second"}));
        (first, second, peer)
    });
    let err = client.execute("slow", None, T).unwrap_err();
    assert_eq!(
        err.to_string(),
        "interrupted while waiting for the reply to slow"
    );
    let reply = client.execute("next", None, T).unwrap();
    assert_eq!(reply["return"], "second");
    let (first, second, _peer) = t.join().unwrap();
    assert_eq!(first["execute"], "slow");
    assert_eq!(second["execute"], "next");
}

/// QEMU's answers to input it could not parse carry no id: for an
/// argument nested deeper than its limit, about 1030 of them. The command
/// fails with a desync naming the first, and the next command gets its own
/// reply, not one of the stale errors.
#[test]
fn error_replies_without_an_id_fail_their_command_and_the_next_one_gets_its_own() {
    let (client, mut peer) = pair();
    let t = thread::spawn(move || {
        let deep = read_command(&mut peer);
        let stale = "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, nesting too deep\"}}\r\n";
        peer.write_all(stale.repeat(1030).as_bytes()).unwrap();
        // The check command comes after every stale error.
        let check = read_command(&mut peer);
        answer(
            &mut peer,
            &check,
            serde_json::json!({"return": {"qemu": {}}}),
        );
        let next = read_command(&mut peer);
        answer(
            &mut peer,
            &next,
            serde_json::json!({"return": {"status": "running"}}),
        );
        (deep, check, next, peer)
    });
    let err = client.execute("deep", None, T).unwrap_err();
    match &err {
        Error::Desync {
            what,
            count,
            first,
            outcome,
        } => {
            assert!(what.contains("deep"), "{err}");
            assert_eq!(*count, 1030);
            assert!(first.contains("nesting too deep"), "{err}");
            assert!(outcome.contains("not answered"), "{err}");
        }
        e => panic!("unexpected {e:?}"),
    }
    let reply = client.execute("query-status", None, T).unwrap();
    assert_eq!(reply, serde_json::json!({"return": {"status": "running"}}));
    let (deep, check, next, _peer) = t.join().unwrap();
    assert_eq!(deep["execute"], "deep");
    assert_eq!(check["execute"], "query-version");
    assert_eq!(next["execute"], "query-status");
    assert!(client.queued_events().is_empty());
}

/// A reply nobody asked for is reported, and does not shift the replies
/// that follow: each command still gets the reply with its own id.
#[test]
fn an_unsolicited_reply_is_reported_and_shifts_nothing() {
    let (client, mut peer) = pair();
    let t = thread::spawn(move || {
        let a = read_command(&mut peer);
        peer.write_all(b"{\"return\": \"unasked\", \"id\": 999}\r\n")
            .unwrap();
        answer(&mut peer, &a, serde_json::json!({"return": "a"}));
        let check = read_command(&mut peer);
        answer(&mut peer, &check, serde_json::json!({"return": {}}));
        let b = read_command(&mut peer);
        answer(&mut peer, &b, serde_json::json!({"return": "b"}));
        let c = read_command(&mut peer);
        answer(&mut peer, &c, serde_json::json!({"return": "c"}));
        peer
    });
    let err = client.execute("a", None, T).unwrap_err();
    assert!(
        matches!(&err, Error::Desync { count: 1, first, outcome, .. }
            if first.contains("unasked") && outcome.contains("own reply came")),
        "{err:?}"
    );
    assert_eq!(client.execute("b", None, T).unwrap()["return"], "b");
    assert_eq!(client.execute("c", None, T).unwrap()["return"], "c");
    let _peer = t.join().unwrap();
}

/// Replies are matched by id, so one in the wrong order would still reach
/// its command; the caller never sees the id it did not set, and a raw
/// message keeps its own.
#[test]
fn replies_carry_no_added_id_and_raw_messages_keep_theirs() {
    let (client, mut peer) = pair();
    let t = thread::spawn(move || {
        let a = read_command(&mut peer);
        answer(&mut peer, &a, serde_json::json!({"return": 1}));
        let raw = read_command(&mut peer);
        answer(&mut peer, &raw, serde_json::json!({"return": 2}));
        (a, raw, peer)
    });
    assert_eq!(
        client.execute("a", None, T).unwrap(),
        serde_json::json!({"return": 1})
    );
    let reply = client
        .execute_raw(br#"{"execute": "b", "id": "mine"}"#, "b", T)
        .unwrap();
    assert_eq!(reply, serde_json::json!({"return": 2, "id": "mine"}));
    let (a, raw, _peer) = t.join().unwrap();
    assert!(a["id"].is_u64(), "{a}");
    assert!(raw["id"].is_u64() && raw["id"] != a["id"], "{raw}");
}

/// The queue is bounded by the memory its events take, not only by their
/// number: a flood of large events nobody reads ends the monitor with a
/// clear error once they take more than the cap, and every event before
/// it is kept, in order.
#[test]
fn an_event_flood_is_bounded_by_bytes_as_it_grows() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    theirs.write_all(GREETING).unwrap();
    let limits = Limits {
        max_line: 1 << 20,
        max_events: 1_000_000,
        max_event_bytes: 4 << 20,
    };
    let client = Client::with_options(Stream::Unix(ours), T, limits, None).unwrap();
    // The monitor stops reading at the cap: the rest of the flood must
    // not block the writer for ever.
    theirs
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let t = thread::spawn(move || {
        let mut w = std::io::BufWriter::new(theirs);
        let pad = "x".repeat(1000);
        // 100 000 events of 1 KB: 100 MB if they were all kept.
        for i in 0..100_000 {
            if write!(
                w,
                "{{\"event\": \"E\", \"data\": {{\"i\": {i}, \"pad\": \"{pad}\"}}}}\r\n"
            )
            .is_err()
            {
                break;
            }
        }
        let _ = w.flush();
    });
    assert!(client.wait_closed(T));
    t.join().unwrap();
    let ended = client.ended();
    let Some(Error::EventQueueTooBig { limit_mib, count }) = ended.clone() else {
        panic!("{ended:?}");
    };
    assert_eq!(limit_mib, 4);
    assert!(
        ended.unwrap().to_string().contains("take more than 4 MiB"),
        "the message names the cap"
    );
    let events = client.drain_events();
    assert_eq!(events.len(), count);
    // The cap was reached well before the flood's end, and near the cap.
    assert!(count > 2_000 && count < 4_200, "{count}");
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev["data"]["i"], i);
    }
}

/// Events taken off the queue give their room back.
#[test]
fn taken_events_give_their_room_back() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    theirs.write_all(GREETING).unwrap();
    let limits = Limits {
        max_line: 1 << 20,
        max_events: 1_000_000,
        max_event_bytes: 64 << 10,
    };
    let client = Client::with_options(Stream::Unix(ours), T, limits, None).unwrap();
    let pad = "y".repeat(1000);
    // 20 rounds of 20 KB each: 400 KB in all, never more than 20 KB queued.
    for round in 0..20 {
        for i in 0..20 {
            writeln!(
                theirs,
                "{{\"event\": \"E\", \"data\": {{\"i\": {i}, \"pad\": \"{pad}\"}}}}"
            )
            .unwrap();
        }
        let mut got = 0;
        while got < 20 {
            got += usize::from(client.take_event(T, |_| true).unwrap().is_some());
        }
        assert!(
            client.ended().is_none(),
            "round {round}: {:?}",
            client.ended()
        );
    }
}
