//! Parsers for the value types keys take, and the TOML forms `config default` prints.

use std::net::SocketAddr;
use std::time::Duration;

/// Parses "25s", "1500ms", "2m" into a Duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(
        t.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 25s or 2m"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{text:?} needs a unit: ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// Parses a byte size: plain bytes or with a KiB/MiB/GiB (or KB/MB/GB) suffix.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: usize = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size in bytes"))?;
    let mul = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => return Err(format!("unknown size unit {u:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A count or size that must be at least 1.
pub fn parse_count(text: &str) -> Result<usize, String> {
    let n = parse_bytes(text)?;
    if n == 0 {
        Err("must be at least 1".into())
    } else {
        Ok(n)
    }
}

/// OTel's rule for booleans: only "true" (any case) is true; "false" is false; anything else is an error here.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" | "" => Ok(false),
        _ => Err(format!("{text:?} is not true or false")),
    }
}

pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not an address like 127.0.0.1:4317"))
}

/// A comma list, blanks dropped.
pub fn parse_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(String::from)
        .collect()
}

/// A duration the way `parse_duration` reads it: whole minutes from 2m, whole seconds, else ms.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 120_000 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A TOML basic string literal. Written here rather than by the toml crate's serializer, which
/// would otherwise be paged in at every start (flags and `--help` show defaults).
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML array of strings.
pub fn toml_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_literals_parse_back() {
        for s in [
            "plain",
            "a \"quote\" and \\ back",
            "tab\tnew\nline",
            "bell\u{7}",
            "ünï",
        ] {
            let doc = format!(
                "v = {}\nl = {}",
                toml_string(s),
                toml_list(&[s.into(), "b".into()])
            );
            let t: toml::Table = toml::from_str(&doc).unwrap();
            assert_eq!(t["v"].as_str(), Some(s));
            assert_eq!(t["l"].as_array().unwrap()[0].as_str(), Some(s));
        }
        assert_eq!(show_duration(Duration::from_secs(300)), "5m");
        assert_eq!(show_duration(Duration::from_secs(60)), "60s");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
    }
}
