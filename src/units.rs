//! Sizes and durations as users type them, on the command line and in boot image
//! definitions: one grammar for both.

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Parse `N[unit]` with binary units `K`, `M`, `G`, `T` (also `KiB`, `MB`, … all meaning
/// powers of 1024, as sgdisk and qemu-img read them; case-insensitive) or `B`; a bare
/// number is in `default_unit` bytes. Zero is refused: see [`parse_size_or_zero`].
pub fn parse_size(s: &str, default_unit: u64) -> Result<u64> {
    let bytes = parse_size_or_zero(s, default_unit)?;
    if bytes == 0 {
        bail!("invalid size '{s}': must be greater than zero");
    }
    Ok(bytes)
}

/// [`parse_size`], zero allowed.
pub fn parse_size_or_zero(s: &str, default_unit: u64) -> Result<u64> {
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
        _ => bail!(
            "invalid size '{s}': unknown unit '{}' (use K, M, G or T, or KiB, MiB, GiB, TiB)",
            unit.trim()
        ),
    };
    n.checked_mul(mult)
        .with_context(|| format!("invalid size '{s}': too large"))
}

/// Render bytes in the largest binary unit that divides them, else with one decimal in GiB/MiB.
pub fn format_size(bytes: u64) -> String {
    for (unit, m) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= m && bytes.is_multiple_of(m) {
            return format!("{}{unit}", bytes / m);
        }
    }
    if bytes >= 1 << 30 {
        format!("{:.1}GiB", bytes as f64 / (1u64 << 30) as f64)
    } else if bytes >= 1 << 20 {
        format!("{:.1}MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{bytes}B")
    }
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
            .contains("'3X': unknown unit 'X'"));
        // zero only where it is allowed (a definition's "rest of the disk")
        assert_eq!(parse_size_or_zero("0", 1).unwrap(), 0);
        assert_eq!(parse_size_or_zero("0MiB", 1).unwrap(), 0);
        // definitions read the same grammar
        for (s, want) in [("512 MB", 512 * M), ("10g", 10 << 30), ("4 KiB", 4096)] {
            assert_eq!(
                crate::bootimage::definition::parse_size(s).unwrap(),
                want,
                "{s}"
            );
        }
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
