//! Output helpers shared by the listing commands: sizes and ages as Docker
//! prints them, and tables with aligned columns.

use super::template::{Missing, Template, default_header};
use serde_json::Value;

/// `--format` of the listing commands (no value-enum parsing, so a clap
/// field of this type parses with `value_parser = OutputFormat::parse`).
#[derive(Clone, Debug)]
pub enum OutputFormat {
    /// The default table.
    Table,
    /// A JSON array of the rows, machine-readable (numbers as numbers).
    Json,
    /// A Go-style template over Docker's fields (see `template`).
    Template(Template),
}

impl OutputFormat {
    /// `--format`'s value; a bad template fails with exit code 1, as Docker's.
    pub fn parse(s: Option<&str>) -> anyhow::Result<OutputFormat> {
        Ok(match s.unwrap_or("table") {
            "" | "table" => OutputFormat::Table,
            "json" => OutputFormat::Json,
            t => OutputFormat::Template(Template::parse(t, Missing::Error)?),
        })
    }
}

/// A timestamp as Go prints a `time.Time` (Docker's `CreatedAt`):
/// `2024-01-02 15:04:05 +0000 UTC`.
pub fn go_time(rfc3339: Option<&str>) -> String {
    match rfc3339.and_then(layerfs::oci::time::parse_rfc3339) {
        Some(t) => {
            let s = layerfs::oci::time::format_rfc3339(t);
            format!(
                "{} +0000 UTC",
                s.trim_end_matches('Z').replacen('T', " ", 1)
            )
        }
        None => "N/A".into(),
    }
}

/// Prints `rows` through `t`; `header` names a field's column for `table`.
pub fn print_template(
    t: &Template,
    rows: &[Value],
    header: impl Fn(&str) -> String,
) -> anyhow::Result<()> {
    let out = t.render_all(rows, header)?;
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    Ok(())
}

/// Column headers as Docker's: `header_for(&[("ID", "IMAGE ID")])`, others
/// from the field name.
pub fn header_for(names: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> String {
    move |field| {
        names
            .iter()
            .find(|(f, _)| *f == field)
            .map_or_else(|| default_header(field), |(_, h)| h.to_string())
    }
}

/// `77.9MB`: SI units with three significant digits, as docker prints sizes.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        return format!("{bytes}B");
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", UNITS[u])
}

/// Prints rows under headers, columns padded to their widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            if i < last {
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// An image ID as listings show it: 12 hex digits unless `no_trunc`
/// (`<missing>` as it is).
pub fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc || id.starts_with('<') {
        id.to_string()
    } else {
        id.trim_start_matches("sha256:").chars().take(12).collect()
    }
}

/// `name` split into (repository, tag) for display; `<none>` when untagged.
pub fn repo_and_tag(name: Option<&str>) -> (String, String) {
    match name.and_then(|n| layerfs::oci::Reference::parse(n).ok()) {
        Some(r) => (
            r.name().to_string(),
            r.tag().unwrap_or("<none>").to_string(),
        ),
        None => ("<none>".into(), "<none>".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(77_900_000), "77.9MB");
        assert_eq!(human_size(283_600), "284kB");
        assert_eq!(human_size(3_400_000), "3.4MB");
    }
}
