//! `--update AT=DIR`: the cluster changing under a replay. Before the first packet whose
//! timestamp is at or after `AT` (seconds, as in the pcaps), the state directory `DIR`
//! replaces the current one, as a new table generation; flow state carries over, exactly
//! as a live agent publishes a new generation under running workers. This is how fixtures
//! exercise endpoint removal mid-flow.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::error::ArgError;

/// One `--update AT=DIR` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateUpdate {
    /// When it applies, in ns since the Unix epoch (pcap time).
    pub at_ns: u64,
    pub state: PathBuf,
}

impl FromStr for StateUpdate {
    type Err = ArgError;

    fn from_str(s: &str) -> Result<StateUpdate, ArgError> {
        let bad = || ArgError::Update(s.to_string());
        let (at, dir) = s.split_once('=').ok_or_else(bad)?;
        if dir.is_empty() {
            return Err(bad());
        }
        Ok(StateUpdate {
            at_ns: parse_seconds(at).ok_or_else(bad)?,
            state: PathBuf::from(dir),
        })
    }
}

impl fmt::Display for StateUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}={}",
            self.at_ns / 1_000_000_000,
            self.at_ns % 1_000_000_000,
            self.state.display()
        )
    }
}

/// Seconds with up to nine decimals, exactly (no floating point: pcap times are ns).
fn parse_seconds(text: &str) -> Option<u64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || frac.len() > 9
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut ns: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..9 {
        ns *= 10;
    }
    whole.checked_mul(1_000_000_000)?.checked_add(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_times() {
        let u: StateUpdate = "1700000000.25=states/b".parse().unwrap();
        assert_eq!(u.at_ns, 1_700_000_000_250_000_000);
        assert_eq!(u.state, PathBuf::from("states/b"));
        assert_eq!("5=d".parse::<StateUpdate>().unwrap().at_ns, 5_000_000_000);
        assert_eq!(u.to_string(), "1700000000.250000000=states/b");
        for bad in ["=d", "1.5", "x=d", "1.0000000001=d", "1=", "-1=d"] {
            assert!(bad.parse::<StateUpdate>().is_err(), "{bad}");
        }
    }
}
