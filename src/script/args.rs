//! Reading the arguments scripts pass: seconds as INT or FLOAT, arrays of
//! strings, and option maps whose unknown keys are an error that lists the
//! valid ones.
//!
//! Every timeout a script passes is read by [`secs`], which scales it by
//! the run's timeout multiplier (`--timeout-multiplier`), so a slow CI
//! machine stretches all the waits of every script and stdlib module in
//! this one place; [`plain_secs`] reads a duration that is not a deadline
//! (`sleep`, a polling interval).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rhai::{Array, Dynamic, ImmutableString, Map};

use super::errors::{self, ScriptResult};

/// The multiplier's bits (an `f64`); 0 means unset, that is 1.
static MULTIPLIER: AtomicU64 = AtomicU64::new(0);

/// Sets the factor every script timeout is multiplied by, for the whole
/// process (one run of the runner).
pub fn set_timeout_multiplier(factor: f64) {
    MULTIPLIER.store(factor.to_bits(), Ordering::Relaxed);
}

/// The factor set by [`set_timeout_multiplier`] (1 by default).
pub fn timeout_multiplier() -> f64 {
    match MULTIPLIER.load(Ordering::Relaxed) {
        0 => 1.0,
        bits => f64::from_bits(bits),
    }
}

/// A script's timeout `d` (or a default one) scaled by the multiplier.
pub fn scaled(d: Duration) -> Duration {
    d.mul_f64(timeout_multiplier())
        .min(Duration::from_secs(1_000_000_000))
}

/// A timeout in seconds given as INT or FLOAT (not negative), scaled by
/// the timeout multiplier.
pub fn secs(value: &Dynamic, what: &str) -> ScriptResult<Duration> {
    plain_secs(value, what).map(scaled)
}

/// Seconds given as INT or FLOAT (not negative), as they are.
pub fn plain_secs(value: &Dynamic, what: &str) -> ScriptResult<Duration> {
    let s = if let Ok(i) = value.as_int() {
        i as f64
    } else if let Ok(f) = value.as_float() {
        f
    } else {
        return Err(errors::bad_type(what, "seconds (INT or FLOAT)", value));
    };
    if !s.is_finite() || s < 0.0 {
        return Err(errors::host(format!(
            "{what}: {s} is not a duration in seconds (it must be 0 or more)"
        )));
    }
    Ok(Duration::from_secs_f64(s.min(1e9)))
}

/// An array whose elements are all strings.
pub fn strings(value: &Dynamic, what: &str) -> ScriptResult<Vec<String>> {
    let Some(a) = value.read_lock::<Array>() else {
        return Err(errors::bad_type(what, "an array of strings", value));
    };
    a.iter().map(|v| string(v, what)).collect()
}

/// One string.
pub fn string(value: &Dynamic, what: &str) -> ScriptResult<String> {
    match value.read_lock::<ImmutableString>() {
        Some(s) => Ok(s.to_string()),
        None => Err(errors::bad_type(what, "a string", value)),
    }
}

/// A bool.
pub fn boolean(value: &Dynamic, what: &str) -> ScriptResult<bool> {
    value
        .as_bool()
        .map_err(|_| errors::bad_type(what, "a bool", value))
}

/// Rejects keys of `map` not in `valid`, naming them all.
pub fn known_keys(map: &Map, valid: &[&str], what: &str) -> ScriptResult<()> {
    let unknown: Vec<&str> = map
        .keys()
        .map(|k| k.as_str())
        .filter(|k| !valid.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(errors::misuse(format!(
        "{what}: unknown option{} {}; valid options are: {}",
        if unknown.len() > 1 { "s" } else { "" },
        unknown.join(", "),
        valid.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_accept_int_and_float() {
        assert_eq!(
            secs(&Dynamic::from_int(2), "t").unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(
            secs(&Dynamic::from_float(0.25), "t").unwrap(),
            Duration::from_millis(250)
        );
        assert!(secs(&Dynamic::from_int(-1), "t").is_err());
        assert!(secs(&Dynamic::from("1"), "t").is_err());
    }

    #[test]
    fn unknown_keys_list_the_valid_ones() {
        let mut m = Map::new();
        m.insert("hard".into(), true.into());
        m.insert("bogus".into(), true.into());
        let err = known_keys(&m, &["hard", "timeout"], "shutdown").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("bogus") && text.contains("hard, timeout"),
            "{text}"
        );
    }
}
