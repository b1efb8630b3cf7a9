//! JUnit XML for CI systems: one `<testsuite>` with one `<testcase>` per boot-test run.
//! A failed run carries `<failure message=REASON>` and the console tail in `<system-out>`.

use std::fmt::Write as _;
use std::time::Duration;

/// Escape for XML text and attribute values; characters XML 1.0 forbids (most C0
/// controls, which consoles do emit) become U+FFFD so the file always parses.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct TestCase<'a> {
    pub name: &'a str,
    pub classname: &'a str,
    pub duration: Duration,
    /// `Some(reason)` when failed.
    pub failure: Option<&'a str>,
    pub system_out: &'a str,
}

pub fn render(suite: &str, cases: &[TestCase]) -> String {
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let total: f64 = cases.iter().map(|c| c.duration.as_secs_f64()).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites tests=\"{}\" failures=\"{failures}\" time=\"{total:.3}\">",
        cases.len()
    );
    let _ = writeln!(x, "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{total:.3}\">", escape(suite), cases.len());
    for c in cases {
        let _ = writeln!(
            x,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\">",
            escape(c.name),
            escape(c.classname),
            c.duration.as_secs_f64()
        );
        if let Some(reason) = c.failure {
            let _ = writeln!(
                x,
                "      <failure message=\"{}\" type=\"boot-test\">{}</failure>",
                escape(reason),
                escape(reason)
            );
        }
        let _ = writeln!(x, "      <system-out>{}</system-out>", escape(c.system_out));
        x.push_str("    </testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_table() {
        for (input, want) in [
            ("plain", "plain"),
            ("a<b>&c", "a&lt;b&gt;&amp;c"),
            ("say \"hi\" 'x'", "say &quot;hi&quot; &apos;x&apos;"),
            ("tab\tnl\ncr\r", "tab\tnl\ncr\r"),
            ("\x1b[0;32m OK \x1b[0m", "\u{fffd}[0;32m OK \u{fffd}[0m"),
            ("nul\0", "nul\u{fffd}"),
            ("ünïcode ✓", "ünïcode ✓"),
        ] {
            assert_eq!(escape(input), want, "{input:?}");
        }
    }

    #[test]
    fn renders_pass_and_failure() {
        let xml = render(
            "layerboot boot-test",
            &[
                TestCase {
                    name: "disk.raw",
                    classname: "boot-test.uefi",
                    duration: Duration::from_millis(1500),
                    failure: None,
                    system_out: "ok",
                },
                TestCase {
                    name: "bad<1>",
                    classname: "boot-test.bios",
                    duration: Duration::from_secs(2),
                    failure: Some("saw \"Kernel panic\""),
                    system_out: "x\x07y",
                },
            ],
        );
        pretty_assertions::assert_eq!(
            xml,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="2" failures="1" time="3.500">
  <testsuite name="layerboot boot-test" tests="2" failures="1" errors="0" time="3.500">
    <testcase name="disk.raw" classname="boot-test.uefi" time="1.500">
      <system-out>ok</system-out>
    </testcase>
    <testcase name="bad&lt;1&gt;" classname="boot-test.bios" time="2.000">
      <failure message="saw &quot;Kernel panic&quot;" type="boot-test">saw &quot;Kernel panic&quot;</failure>
      <system-out>x�y</system-out>
    </testcase>
  </testsuite>
</testsuites>
"#
        );
    }
}
