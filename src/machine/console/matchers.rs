//! What the waits look for in the [`Transcript`]: plain texts, each byte
//! searched about once however often a wait looks, and regexes, searched
//! again only as often as a fraction of a core allows, with a match at the
//! very end of the output given time to grow.

use std::time::{Duration, Instant};

use super::transcript::Transcript;
use super::ConsoleError;
use crate::sync::Look;

/// Unconsumed output below this size is searched by regex on every wake-up.
const REGEX_RESCAN_FREE: usize = 64 << 10;
/// Above that, a regex is searched again only after this many nanoseconds
/// per unconsumed byte, or when the output grew by 1/16: searching then
/// costs at most a fraction of a core, and the transcript is not scanned
/// from the cursor on each of QEMU's thousands of writes per second.
const REGEX_RESCAN_NS_PER_BYTE: u64 = 4;
/// How long a regex match that ends at the end of the output waits for the
/// output to stop before it is taken (see [`super::Console::wait_for_regex`]).
const REGEX_SETTLE: Duration = Duration::from_millis(10);
/// Finds a plain text, searching each byte about once across repeated looks.
pub(super) struct Finder {
    text: String,
    re: regex::Regex,
    /// Absolute offset up to which the transcript was searched in vain.
    searched: usize,
}

impl Finder {
    pub(super) fn new(text: &str) -> Result<Finder, ConsoleError> {
        // An escaped literal: the regex crate searches it with memchr/memmem.
        let re = regex::Regex::new(&regex::escape(text)).map_err(|e| ConsoleError::BadRegex {
            pattern: text.to_string(),
            message: e.to_string(),
        })?;
        Ok(Finder {
            text: text.to_string(),
            re,
            searched: 0,
        })
    }

    /// The absolute end of the first occurrence after the cursor.
    pub(super) fn find(&mut self, st: &Transcript) -> Option<usize> {
        // A match can straddle the old end by at most len - 1 bytes.
        let overlap = self.text.len().saturating_sub(1);
        let start = self
            .searched
            .saturating_sub(overlap)
            .max(st.cursor)
            .max(st.base);
        let hay = st.from(start);
        // `from` may have moved back to a character's start.
        let start = st.end() - hay.len();
        match self.re.find(hay) {
            Some(m) => Some(start + m.end()),
            None => {
                self.searched = st.end();
                None
            }
        }
    }
}

/// Of several texts, the one complete first in the stream (the earliest
/// end; ties go to the earlier text), so the answer does not depend on how
/// the output was chunked. Returns its index and absolute end.
pub(super) fn first_complete(finders: &mut [Finder], st: &Transcript) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    for (i, f) in finders.iter_mut().enumerate() {
        if let Some(end) = f.find(st) {
            if best.is_none_or(|(_, e)| end < e) {
                best = Some((i, end));
            }
        }
    }
    best
}

/// A regex a wait looks for; see [`super::Console::wait_for_regex`].
pub(super) struct RegexMatcher {
    regex: regex::Regex,
    /// When and up to where the output was last searched.
    searched: Option<(Instant, usize)>,
    /// Since when a match has ended at the end of the output, and that end.
    at_end_since: Option<(Instant, usize)>,
}

impl RegexMatcher {
    pub(super) fn new(re: &str) -> Result<RegexMatcher, ConsoleError> {
        let regex = regex::Regex::new(re).map_err(|e| ConsoleError::BadRegex {
            pattern: re.to_string(),
            message: e.to_string(),
        })?;
        Ok(RegexMatcher {
            regex,
            searched: None,
            at_end_since: None,
        })
    }

    /// One look at the transcript (`final_look`: the last one, which must
    /// search everything): the captures, consumed up to the end of the
    /// match, once there is one to take.
    pub(super) fn look(
        &mut self,
        st: &mut Transcript,
        final_look: bool,
    ) -> Look<Vec<Option<String>>> {
        let (start, end) = (st.cursor, st.end());
        let window = end - start;
        let now = Instant::now();
        if let (false, true, Some((at, searched_end))) =
            (final_look, window > REGEX_RESCAN_FREE, self.searched)
        {
            let due = at + Duration::from_nanos(window as u64 * REGEX_RESCAN_NS_PER_BYTE);
            if end - searched_end < window / 16 && now < due {
                return Look::LookAgainAt(due);
            }
        }
        self.searched = Some((now, end));
        let Some(caps) = self.regex.captures(st.from(start)) else {
            return Look::NotYet;
        };
        let match_end = start + caps.get(0).map_or(0, |m| m.end());
        if match_end == end && !final_look {
            let since = match self.at_end_since {
                Some((since, seen_end)) if seen_end == end => since,
                _ => now,
            };
            self.at_end_since = Some((since, end));
            if now < since + REGEX_SETTLE {
                return Look::LookAgainAt(since + REGEX_SETTLE);
            }
        }
        let groups = caps
            .iter()
            .map(|g| g.map(|m| m.as_str().to_string()))
            .collect();
        st.cursor = match_end;
        Look::Done(groups)
    }
}
