//! The console against a socketpair peer: waits, reads, the transcript,
//! the drain thread and direct reading.

use super::*;
use std::io::{Read, Write};
use std::path::PathBuf;

const LONG: Duration = Duration::from_secs(10);

fn console(drain: bool) -> (Console, UnixStream) {
    let (ours, peer) = UnixStream::pair().unwrap();
    (Console::start(ours, None, None, drain).unwrap(), peer)
}

/// A file path unique to this test, removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        TempPath(
            std::env::temp_dir().join(format!("vmscript-console-{}-{name}", std::process::id())),
        )
    }
    fn create(&self) -> File {
        File::create(&self.0).unwrap()
    }
    fn read(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits until `len` bytes have been received.
fn wait_len(con: &Console, len: usize) {
    let deadline = Instant::now() + LONG;
    while con.inner.shared.lock().received < len {
        assert!(Instant::now() < deadline, "only got {:?}", con.output());
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn wait_for_matches_text_split_across_writes() {
    let (con, mut peer) = console(true);
    let writer = std::thread::spawn(move || {
        for part in ["boot...lo", "gi", "n: more"] {
            peer.write_all(part.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        peer
    });
    assert_eq!(con.wait_for("login:", LONG).unwrap(), "boot...login:");
    let _peer = writer.join().unwrap();
    wait_len(&con, "boot...login: more".len());
    assert_eq!(con.read(), " more");
}

#[test]
fn wait_for_sees_prompt_without_newline() {
    let (con, mut peer) = console(true);
    peer.write_all(b"Welcome\r\n/ # \x1b[6n").unwrap();
    assert_eq!(con.wait_for("/ # ", LONG).unwrap(), "Welcome\r\n/ # ");
    wait_len(&con, 17);
    assert_eq!(con.read(), "\x1b[6n");
}

#[test]
fn read_returns_only_new_output() {
    let (con, mut peer) = console(true);
    assert_eq!(con.read(), "");
    peer.write_all(b"hello").unwrap();
    wait_len(&con, 5);
    assert_eq!(con.read(), "hello");
    assert_eq!(con.read(), "");
    peer.write_all(b" world").unwrap();
    wait_len(&con, 11);
    assert_eq!(con.read(), " world");
    assert_eq!(con.output(), "hello world");
}

#[test]
fn read_keeps_an_incomplete_character_for_later() {
    let (con, mut peer) = console(true);
    peer.write_all(b"caf\xC3").unwrap();
    wait_len(&con, 4);
    assert_eq!(con.read(), "caf");
    peer.write_all(b"\xA9!").unwrap();
    wait_len(&con, "café!".len());
    assert_eq!(con.read(), "é!");
}

#[test]
fn expect_picks_the_pattern_complete_first() {
    let (con, mut peer) = console(true);
    peer.write_all(b"boot\nPassword: x\nlogin: y\n# ").unwrap();
    let pats = ["login:", "Password:", "# "];
    assert_eq!(con.expect(&pats, LONG).unwrap(), 1);
    assert_eq!(con.expect(&pats, LONG).unwrap(), 0);
    assert_eq!(con.expect(&pats, LONG).unwrap(), 2);
    // "b" is complete before "abc" is, whatever the chunking.
    peer.write_all(b"abc").unwrap();
    assert_eq!(con.expect(&["abc", "b"], LONG).unwrap(), 1);
    wait_len(&con, 29);
    assert_eq!(con.read(), "c");
}

#[test]
fn wait_for_regex_returns_captures() {
    let (con, mut peer) = console(true);
    peer.write_all(b"eth0: IP 10.0.2.15 up\n").unwrap();
    let caps = con
        .wait_for_regex(r"IP (\d+)\.(\d+)\.\d+\.\d+( gw)?", LONG)
        .unwrap();
    assert_eq!(
        caps,
        vec![
            Some("IP 10.0.2.15".to_string()),
            Some("10".to_string()),
            Some("0".to_string()),
            None
        ]
    );
    assert_eq!(con.read(), " up\n");
}

#[test]
fn wait_for_regex_finds_a_late_match_after_much_output() {
    let (con, mut peer) = console(true);
    let noise = "noise line without the marker\n".repeat(10_000);
    let writer = std::thread::spawn(move || {
        peer.write_all(noise.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        peer.write_all(b"READY 42\n").unwrap();
        peer
    });
    let t0 = Instant::now();
    let caps = con.wait_for_regex(r"READY (\d+)", LONG).unwrap();
    assert_eq!(caps[1].as_deref(), Some("42"));
    assert!(t0.elapsed() < Duration::from_secs(3));
    let _peer = writer.join().unwrap();
}

#[test]
fn wait_for_regex_lets_a_match_at_the_end_grow() {
    let (con, mut peer) = console(true);
    let writer = std::thread::spawn(move || {
        peer.write_all(b"val=4").unwrap();
        std::thread::sleep(Duration::from_millis(3));
        peer.write_all(b"2").unwrap();
        peer
    });
    let t0 = Instant::now();
    let caps = con.wait_for_regex(r"val=(\d+)", LONG).unwrap();
    let took = t0.elapsed();
    assert_eq!(caps[1].as_deref(), Some("42"));
    // Taken once the output has been quiet for a while, not at the deadline.
    assert!(took >= Duration::from_millis(10), "{took:?}");
    assert!(took < LONG / 2, "{took:?}");
    let _peer = writer.join().unwrap();
}

#[test]
fn wait_for_regex_takes_a_match_at_the_end_when_closed() {
    let (con, mut peer) = console(true);
    peer.write_all(b"rc=7").unwrap();
    drop(peer);
    let caps = con.wait_for_regex(r"rc=(\d+)", LONG).unwrap();
    assert_eq!(caps[1].as_deref(), Some("7"));
}

#[test]
fn bad_regex_is_reported() {
    let (con, _peer) = console(true);
    let err = con.wait_for_regex("(unclosed", LONG).unwrap_err();
    assert!(matches!(&err, ConsoleError::BadRegex { pattern, .. } if pattern == "(unclosed"));
}

#[test]
fn timeout_names_the_text_and_carries_the_tail() {
    let (con, mut peer) = console(true);
    peer.write_all(b"some boot text").unwrap();
    let t0 = Instant::now();
    let err = con
        .wait_for("never", Duration::from_millis(300))
        .unwrap_err();
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    match &err {
        ConsoleError::Timeout { tail, after, .. } => {
            assert_eq!(tail, "some boot text");
            assert_eq!(*after, Duration::from_millis(300));
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(
        err.to_string(),
        "timed out after 300ms waiting for console text \"never\"; \
         last output: \"some boot text\""
    );
    // Nothing was consumed.
    assert_eq!(con.read(), "some boot text");
}

#[test]
fn timeout_tail_is_the_last_2_kib() {
    let (con, mut peer) = console(true);
    let text = "x".repeat(5000) + "END";
    peer.write_all(text.as_bytes()).unwrap();
    wait_len(&con, text.len());
    match con.wait_for("never", Duration::ZERO).unwrap_err() {
        ConsoleError::Timeout { tail, .. } => {
            assert_eq!(tail.len(), 2048);
            assert!(tail.ends_with("xEND"));
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn wait_fails_fast_when_peer_hangs_up() {
    let (con, mut peer) = console(true);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        peer.write_all(b"bye\n").unwrap();
    });
    let t0 = Instant::now();
    let err = con.wait_for("never", Duration::from_secs(30)).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(
        matches!(&err, ConsoleError::Closed { tail, .. } if tail == "bye\n"),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("console closed while waiting"));
    assert!(con.is_closed());
}

#[test]
fn output_received_before_hang_up_still_matches() {
    let (con, mut peer) = console(true);
    peer.write_all(b"ready\n").unwrap();
    drop(peer);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(con.wait_for("ready", LONG).unwrap(), "ready");
    let t0 = Instant::now();
    assert!(matches!(
        con.wait_for("more", LONG),
        Err(ConsoleError::Closed { .. })
    ));
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(matches!(
        con.send_line("ls"),
        Err(ConsoleError::Closed { .. })
    ));
}

#[test]
fn failure_pattern_seen_first_fails_the_wait() {
    let (con, mut peer) = console(true);
    peer.write_all(b"booting\nKernel panic - not syncing\nlogin:")
        .unwrap();
    let err = con
        .wait_for_either("login:", Some("Kernel panic"), LONG)
        .unwrap_err();
    assert!(
        matches!(&err, ConsoleError::Failure { pattern, tail }
            if pattern == "Kernel panic" && tail.contains("not syncing")),
        "{err:?}"
    );
    // The failure was consumed; the success text is still ahead.
    assert_eq!(
        con.wait_for_either("login:", Some("Kernel panic"), LONG)
            .unwrap(),
        " - not syncing\nlogin:"
    );
}

#[test]
fn send_and_send_line_reach_the_peer() {
    let (con, mut peer) = console(true);
    con.send("root").unwrap();
    con.send_line("ls /").unwrap();
    let mut got = [0u8; 9];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"rootls /\n");
}

#[test]
fn streams_2_mib_written_one_byte_at_a_time() {
    let log = TempPath::new("stream.log");
    let extra = TempPath::new("stream.extra");
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let con = Console::start(ours, Some(log.create()), Some(extra.create()), true).unwrap();
    let mut data = Vec::with_capacity(2 << 20);
    let mut i = 0;
    while data.len() < (2 << 20) - 16 {
        data.extend_from_slice(format!("line {i:08}\n").as_bytes());
        i += 1;
    }
    data.extend_from_slice(b"END-OF-STREAM\n");
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        for b in &sent {
            peer.write_all(std::slice::from_ref(b)).unwrap();
        }
        peer
    });
    let t0 = Instant::now();
    let got = con
        .wait_for("END-OF-STREAM", Duration::from_secs(120))
        .unwrap();
    eprintln!("2 MiB one byte at a time in {:?}", t0.elapsed());
    let _peer = writer.join().unwrap();
    assert_eq!(got.len(), data.len() - 1);
    wait_len(&con, data.len());
    assert_eq!(con.output().as_bytes(), &data[..]);
    con.close();
    assert_eq!(log.read(), data);
    assert_eq!(extra.read(), data);
}

#[test]
fn log_has_what_a_wait_has_seen() {
    let log = TempPath::new("seen.log");
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let con = Console::start(ours, Some(log.create()), None, true).unwrap();
    peer.write_all(b"first\n").unwrap();
    con.wait_for("first", LONG).unwrap();
    assert_eq!(log.read(), b"first\n");
}

#[test]
fn output_returns_the_whole_transcript() {
    let (con, mut peer) = console(true);
    peer.write_all(b"one\n").unwrap();
    con.wait_for("one", LONG).unwrap();
    assert_eq!(con.read(), "\n");
    peer.write_all(b"two\n").unwrap();
    con.wait_for("two\n", LONG).unwrap();
    assert_eq!(con.output(), "one\ntwo\n");
    assert_eq!(con.tail(4), "two\n");
    assert_eq!(con.tail(100), "one\ntwo\n");
}

#[test]
fn transcript_cap_drops_oldest_and_keeps_offsets() {
    let log = TempPath::new("cap.log");
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let con = Console::start_capped(ours, Some(log.create()), None, true, 1024).unwrap();
    peer.write_all(b"head\n").unwrap();
    assert_eq!(con.wait_for("head", LONG).unwrap(), "head");
    let body = "0123456789abcdef".repeat(640);
    peer.write_all(body.as_bytes()).unwrap();
    peer.write_all(b"MARK tail").unwrap();
    let got = con.wait_for("MARK", LONG).unwrap();
    assert!(got.ends_with("cdefMARK"), "{got:?}");
    assert!(got.len() <= 1024);
    wait_len_at_least_end(&con, "MARK tail");
    assert!(con.output().len() <= 1024);
    assert_eq!(con.read(), " tail");
    con.close();
    let mut all = b"head\n".to_vec();
    all.extend_from_slice(body.as_bytes());
    all.extend_from_slice(b"MARK tail");
    assert_eq!(log.read(), all);
}

fn wait_len_at_least_end(con: &Console, end: &str) {
    let deadline = Instant::now() + LONG;
    while !con.output().ends_with(end) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn close_joins_the_drain_thread() {
    let (con, mut peer) = console(true);
    let shared = Arc::downgrade(&con.inner.shared);
    // The console's handle and the drain thread's.
    assert_eq!(shared.strong_count(), 2);
    peer.write_all(b"x").unwrap();
    con.wait_for("x", LONG).unwrap();
    con.close();
    assert_eq!(shared.strong_count(), 1);
    assert!(con.is_closed());
    con.close();
    let mut buf = [0u8; 1];
    assert_eq!(peer.read(&mut buf).unwrap(), 0);
    assert!(matches!(con.send("y"), Err(ConsoleError::Closed { .. })));
    assert_eq!(con.output(), "x");
}

#[test]
fn close_wakes_a_pending_wait() {
    let (con, _peer) = console(true);
    let other = con.clone();
    let waiter = std::thread::spawn(move || other.wait_for("never", Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    con.close();
    let res = waiter.join().unwrap();
    assert!(matches!(res, Err(ConsoleError::Closed { .. })), "{res:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn dropping_the_last_handle_stops_the_thread() {
    let (con, mut peer) = console(true);
    let shared = Arc::downgrade(&con.inner.shared);
    let clone = con.clone();
    drop(con);
    assert_eq!(shared.strong_count(), 2, "a clone keeps it open");
    peer.write_all(b"still here").unwrap();
    clone.wait_for("here", LONG).unwrap();
    drop(clone);
    assert_eq!(shared.strong_count(), 0);
    let mut buf = [0u8; 1];
    assert_eq!(peer.read(&mut buf).unwrap(), 0);
}

#[test]
fn without_drain_waits_read_the_socket() {
    let log = TempPath::new("direct.log");
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let con = Console::start(ours, Some(log.create()), None, false).unwrap();
    assert_eq!(Arc::strong_count(&con.inner.shared), 1, "no thread");
    let writer = std::thread::spawn(move || {
        peer.write_all(b"Welcome\n/ # ").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        peer.write_all(b"\x1b[6nIP 10.0.2.15\n").unwrap();
        peer
    });
    assert_eq!(con.wait_for("/ # ", LONG).unwrap(), "Welcome\n/ # ");
    let caps = con.wait_for_regex(r"IP (\S+)", LONG).unwrap();
    assert_eq!(caps[1].as_deref(), Some("10.0.2.15"));
    let mut peer = writer.join().unwrap();
    assert_eq!(con.read(), "\n");
    assert!(matches!(
        con.wait_for("never", Duration::from_millis(100)),
        Err(ConsoleError::Timeout { .. })
    ));
    con.send_line("ls").unwrap();
    let mut got = [0u8; 3];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ls\n");
    peer.write_all(b"late").unwrap();
    assert_eq!(con.read(), "late");
    assert!(!con.is_closed());
    let hang_up = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        drop(peer);
    });
    let t0 = Instant::now();
    assert!(matches!(
        con.wait_for("never", Duration::from_secs(30)),
        Err(ConsoleError::Closed { .. })
    ));
    assert!(t0.elapsed() < Duration::from_secs(10));
    hang_up.join().unwrap();
    assert!(con.is_closed());
    con.close();
    assert_eq!(log.read(), b"Welcome\n/ # \x1b[6nIP 10.0.2.15\nlate");
}

#[test]
fn without_drain_close_wakes_a_pending_wait() {
    let (con, _peer) = console(false);
    let other = con.clone();
    let waiter = std::thread::spawn(move || other.wait_for("never", Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    con.close();
    let res = waiter.join().unwrap();
    assert!(matches!(res, Err(ConsoleError::Closed { .. })), "{res:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(con.is_closed());
}

#[test]
fn without_drain_two_waiters_share_the_reading() {
    let (con, mut peer) = console(false);
    let other = con.clone();
    let first = std::thread::spawn(move || other.expect(&["one"], LONG));
    std::thread::sleep(Duration::from_millis(50));
    let second = con.clone();
    let later = std::thread::spawn(move || second.wait_for("two", LONG));
    std::thread::sleep(Duration::from_millis(50));
    peer.write_all(b"one ").unwrap();
    assert_eq!(first.join().unwrap().unwrap(), 0);
    std::thread::sleep(Duration::from_millis(50));
    peer.write_all(b"two").unwrap();
    assert_eq!(later.join().unwrap().unwrap(), " two");
}

#[test]
fn decoding_in_pieces_equals_decoding_the_whole_stream() {
    let stream: &[u8] =
        b"a\xC3\xA9b\xFF\xE2\x82\xACc\xE2\x82d\xF0\x9F\x98\x80\xC3\xF0\x9F\xED\xA0\x80e\xC3";
    let whole = String::from_utf8_lossy(stream).into_owned();
    // Every way of cutting the stream in two and in three.
    for i in 0..=stream.len() {
        for j in i..=stream.len() {
            let mut st = Transcript {
                buf: String::new(),
                base: 0,
                cursor: 0,
                partial: Vec::new(),
                received: 0,
                cap: TRANSCRIPT_CAP,
                ended: None,
                log_error: None,
            };
            st.append(&stream[..i]);
            st.append(&stream[i..j]);
            st.append(&stream[j..]);
            st.end_input();
            assert_eq!(st.buf, whole, "cut at {i} and {j}");
            assert_eq!(st.received, stream.len());
        }
    }
}

#[test]
fn an_invalid_byte_does_not_stop_later_regex_waits() {
    for drain in [true, false] {
        let (con, mut peer) = console(drain);
        let (first, second): (&[u8], &[u8]) = (
            b"$ printf 'bin\\377'\r\nbin\xFF\r\nDONE-1\r\n",
            b"more\xFE output\r\nDONE-2\r\n",
        );
        peer.write_all(first).unwrap();
        let caps = con.wait_for_regex(r"([\s\S]*?)DONE-(\d+)", LONG).unwrap();
        assert_eq!(caps[2].as_deref(), Some("1"), "drain {drain}");
        assert!(caps[1].as_deref().unwrap().contains("bin\u{FFFD}\r\n"));
        peer.write_all(second).unwrap();
        let caps = con.wait_for_regex(r"([\s\S]*?)DONE-(\d+)", LONG).unwrap();
        assert_eq!(caps[1].as_deref(), Some("\r\nmore\u{FFFD} output\r\n"));
        assert_eq!(caps[2].as_deref(), Some("2"));
        // What the waits saw is what output() and read() show.
        assert!(con
            .output()
            .contains("bin\u{FFFD}\r\nDONE-1\r\nmore\u{FFFD} output"));
        wait_len(&con, first.len() + second.len());
        assert_eq!(con.read(), "\r\n");
    }
}

#[test]
fn plain_waits_match_a_replacement_character_and_split_characters() {
    let (con, mut peer) = console(true);
    peer.write_all(b"x\xFFy \xE2\x82").unwrap();
    assert_eq!(con.wait_for("x\u{FFFD}y", LONG).unwrap(), "x\u{FFFD}y");
    wait_len(&con, 6);
    // The half of a character is not text yet.
    assert_eq!(con.read(), " ");
    peer.write_all(b"\xAC!").unwrap();
    assert_eq!(con.wait_for("\u{20AC}!", LONG).unwrap(), "\u{20AC}!");
}

#[test]
fn a_character_cut_off_by_the_end_becomes_a_replacement_character() {
    let (con, mut peer) = console(true);
    peer.write_all(b"last \xE2\x82").unwrap();
    drop(peer);
    let err = con.wait_for("never", LONG).unwrap_err();
    assert!(
        matches!(&err, ConsoleError::Closed { tail, .. } if tail == "last \u{FFFD}"),
        "{err:?}"
    );
    assert_eq!(con.read(), "last \u{FFFD}");
}

#[test]
fn an_interrupt_ends_a_wait_and_consumes_nothing() {
    for drain in [true, false] {
        let (con, mut peer) = console(drain);
        peer.write_all(b"partial output").unwrap();
        let interrupter = con.interrupter();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            interrupter.interrupt();
        });
        let start = Instant::now();
        let err = con.wait_for("never", Duration::from_secs(30)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5), "drain {drain}");
        assert!(
            matches!(&err, ConsoleError::Interrupted { what } if what.contains("never")),
            "{err:?}"
        );
        t.join().unwrap();
        // The console goes on, with the output still unconsumed.
        peer.write_all(b" then more").unwrap();
        assert_eq!(
            con.wait_for("more", LONG).unwrap(),
            "partial output then more"
        );
    }
}

#[test]
fn output_since_follows_the_console_without_consuming_it() {
    for drain in [true, false] {
        let (con, mut peer) = console(drain);
        peer.write_all(b"old\n").unwrap();
        arrived(&con, 4);
        let at = con.end_offset();
        assert_eq!(con.output_since(at), (String::new(), at));
        peer.write_all(b"/ # 42\r\n").unwrap();
        arrived(&con, 12);
        let (text, end) = con.output_since(at);
        assert_eq!(text, "/ # 42\r\n");
        assert_eq!(con.output_since(end).0, "");
        // A wait still sees everything the follower was shown.
        assert_eq!(con.wait_for("42", LONG).unwrap(), "old\n/ # 42");
    }
}

/// Waits until `len` bytes of text arrived, reading them in direct mode.
fn arrived(con: &Console, len: usize) {
    let deadline = Instant::now() + LONG;
    while con.output_since(0).0.len() < len {
        assert!(Instant::now() < deadline, "only got {:?}", con.output());
        std::thread::sleep(Duration::from_millis(1));
    }
}
