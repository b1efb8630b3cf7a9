//! Sizes and durations as users type them on the command line.

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Parse `N[unit]` with binary units `K`, `M`, `G`, `T` (also `KiB`, `MB`, … all meaning
/// powers of 1024, case-insensitive) or `B`; a bare number is in `default_unit` bytes.
pub fn parse_size(s: &str, default_unit: u64) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        bail!("invalid size '{s}': expected a number with an optional unit, e.g. 10G or 512M");
    }
    let n: u64 = num.parse().with_context(|| format!("invalid size '{s}'"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" => default_unit,
        "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => bail!("invalid size '{s}': unknown unit '{other}' (use K, M, G or T)"),
    };
    let bytes = n
        .checked_mul(mult)
        .with_context(|| format!("size '{s}' is too large"))?;
    if bytes == 0 {
        bail!("invalid size '{s}': must be greater than zero");
    }
    Ok(bytes)
}

/// Parse `N`, `Ns`, `Nm` or `Nh` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1),
        Some('m') => (&t[..t.len() - 1], 60),
        Some('h') => (&t[..t.len() - 1], 3600),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid duration '{s}': expected e.g. 90, 90s, 5m or 1h"))?;
    if n == 0 {
        bail!("invalid duration '{s}': must be greater than zero");
    }
    Ok(Duration::from_secs(n * mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        const M: u64 = 1 << 20;
        for (input, default, want) in [
            ("10G", 1, Some(10 << 30)),
            ("10GiB", 1, Some(10 << 30)),
            ("512m", 1, Some(512 * M)),
            ("512 MB", 1, Some(512 * M)),
            ("4096", 1, Some(4096)),
            ("2048", M, Some(2048 * M)),
            ("1T", 1, Some(1 << 40)),
            ("7b", M, Some(7)),
            ("0", 1, None),
            ("", 1, None),
            ("G", 1, None),
            ("-1G", 1, None),
            ("1.5G", 1, None),
            ("3X", 1, None),
            ("99999999999999999999", 1, None),
            ("20000000T", 1, None),
        ] {
            assert_eq!(parse_size(input, default).ok(), want, "{input}");
        }
        assert!(parse_size("3X", 1)
            .unwrap_err()
            .to_string()
            .contains("'3X'"));
    }

    #[test]
    fn durations() {
        for (input, want) in [
            ("90", Some(90)),
            ("90s", Some(90)),
            ("5m", Some(300)),
            ("1h", Some(3600)),
            ("0", None),
            ("m", None),
            ("5d", None),
            ("", None),
        ] {
            assert_eq!(
                parse_duration(input).ok().map(|d| d.as_secs()),
                want,
                "{input}"
            );
        }
    }
}
