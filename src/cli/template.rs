//! `--format` templates as Docker spells them, over rows that are JSON
//! objects: literal text, `{{.Field}}` and `{{.A.B}}`, `{{.}}`, `{{json .}}`
//! and `{{json .Field}}`, `{{upper ..}}`/`{{lower ..}}`, `{{-`/`-}}`
//! trimming, `\t` and `\n` escapes, and a leading `table` that prints a
//! header row and aligns the columns as Docker's tabwriter does. Not a Go
//! template engine: `range`, `if` and pipelines are refused with an error.

use serde_json::Value;

#[derive(Debug, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

/// What a field that a row lacks prints: an error for listings (Docker's
/// rows are typed structs), `<no value>` for inspect (Docker's are maps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    Error,
    NoValue,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Func {
    None,
    Json,
    Upper,
    Lower,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    /// `path` empty for `.`.
    Field {
        path: Vec<String>,
        func: Func,
    },
}

#[derive(Clone, Debug)]
pub struct Template {
    source: String,
    table: bool,
    parts: Vec<Part>,
    missing: Missing,
}

impl Template {
    pub fn parse(format: &str, missing: Missing) -> Result<Template, TemplateError> {
        let (table, body) = match format.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start())
            }
            _ => (false, format),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        let mut trim_next = false;
        while let Some(open) = rest.find("{{") {
            let mut text = &rest[..open];
            if trim_next {
                text = text.trim_start();
            }
            let after = &rest[open + 2..];
            let (action, trim_before) = match after.strip_prefix('-') {
                Some(a) if a.starts_with(char::is_whitespace) => (a, true),
                _ => (after, false),
            };
            if trim_before {
                text = text.trim_end();
            }
            if !text.is_empty() {
                parts.push(Part::Text(text.to_string()));
            }
            let close = action.find("}}").ok_or_else(|| {
                TemplateError(format!(
                    "template parsing error: unclosed action in {format:?}"
                ))
            })?;
            let mut inner = &action[..close];
            trim_next = false;
            if let Some(i) = inner.strip_suffix('-')
                && i.ends_with(char::is_whitespace)
            {
                inner = i;
                trim_next = true;
            }
            parts.push(action_part(inner.trim(), format)?);
            rest = &action[close + 2..];
        }
        let text = if trim_next { rest.trim_start() } else { rest };
        if !text.is_empty() {
            parts.push(Part::Text(text.to_string()));
        }
        Ok(Template {
            source: format.to_string(),
            table,
            parts,
            missing,
        })
    }

    /// One row rendered.
    pub fn render(&self, row: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field { path, func } => {
                    let v = match lookup(row, path) {
                        Some(v) => v,
                        None if self.missing == Missing::NoValue => {
                            out.push_str("<no value>");
                            continue;
                        }
                        None => {
                            return Err(TemplateError(format!(
                                "template: {}: can't evaluate field {} (fields: {})",
                                self.source,
                                path.join("."),
                                field_names(row)
                            )));
                        }
                    };
                    match func {
                        Func::Json => out.push_str(&serde_json::to_string(v).unwrap_or_default()),
                        Func::Upper => out.push_str(&plain(v).to_uppercase()),
                        Func::Lower => out.push_str(&plain(v).to_lowercase()),
                        Func::None => out.push_str(&plain(v)),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every row rendered, one per line; with `table`, a header line first
    /// (`header` names a field's column) and the columns aligned.
    pub fn render_all(
        &self,
        rows: &[Value],
        header: impl Fn(&str) -> String,
    ) -> Result<String, TemplateError> {
        let mut lines = Vec::new();
        if self.table {
            let mut h = String::new();
            for p in &self.parts {
                match p {
                    Part::Text(t) => h.push_str(t),
                    Part::Field { path, .. } => h.push_str(&header(&path.join("."))),
                }
            }
            lines.push(h);
        }
        for r in rows {
            lines.push(self.render(r)?);
        }
        if self.table {
            return Ok(tabwriter(&lines));
        }
        let mut out = String::new();
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
        Ok(out)
    }
}

fn action_part(action: &str, format: &str) -> Result<Part, TemplateError> {
    let words: Vec<&str> = action.split_whitespace().collect();
    let (func, arg) = match words.as_slice() {
        [arg] => (Func::None, *arg),
        ["json", arg] => (Func::Json, *arg),
        ["upper", arg] => (Func::Upper, *arg),
        ["lower", arg] => (Func::Lower, *arg),
        _ => {
            return Err(TemplateError(format!(
                "template parsing error: {{{{{action}}}}} in {format:?}: only {{{{.Field}}}}, \
                 {{{{json .Field}}}}, {{{{upper .Field}}}} and {{{{lower .Field}}}} are supported"
            )));
        }
    };
    let path = match arg {
        "." => Vec::new(),
        a if a.starts_with('.') && a.len() > 1 => {
            let path: Vec<String> = a[1..].split('.').map(str::to_string).collect();
            if path
                .iter()
                .any(|f| f.is_empty() || !f.chars().all(|c| c.is_alphanumeric() || c == '_'))
            {
                return Err(TemplateError(format!(
                    "template parsing error: bad field {a:?} in {format:?}"
                )));
            }
            path
        }
        a => {
            return Err(TemplateError(format!(
                "template parsing error: function {a:?} not defined in {format:?}"
            )));
        }
    };
    Ok(Part::Field { path, func })
}

fn lookup<'a>(row: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut v = row;
    for f in path {
        v = v.as_object()?.get(f)?;
    }
    Some(v)
}

fn field_names(row: &Value) -> String {
    row.as_object()
        .map(|o| {
            o.keys()
                .map(|k| format!(".{k}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// A value as Go's text/template prints it.
fn plain(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(plain).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => format!(
            "map[{}]",
            o.iter()
                .map(|(k, v)| format!("{k}:{}", plain(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

/// Aligns tab-separated cells as Docker's tabwriter (minimum width 10,
/// padding 3); the text after a line's last tab is not padded.
fn tabwriter(lines: &[String]) -> String {
    const MIN_WIDTH: usize = 10;
    const PADDING: usize = 3;
    let cells: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let columns = cells.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in &cells {
        for (i, c) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max((c.chars().count() + PADDING).max(MIN_WIDTH));
        }
    }
    let mut out = String::new();
    for row in &cells {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            line.push_str(c);
            if i < last {
                line.push_str(&" ".repeat(widths[i] - c.chars().count()));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A field name as a column header: `CreatedAt` → `CREATED AT`.
pub fn default_header(field: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in field.chars() {
        if c.is_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        out.extend(c.to_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row() -> Value {
        json!({"Repository": "alpine", "Tag": "3.20", "ID": "0123456789ab", "Size": "8.09MB",
               "Labels": {"a": "1"}, "Env": ["A=1", "B=2"], "Count": 3, "Gone": null})
    }

    fn render(f: &str) -> Result<String, TemplateError> {
        Template::parse(f, Missing::Error)?.render(&row())
    }

    #[test]
    fn fields_text_and_functions_render_as_docker_prints_them() {
        let cases = [
            ("{{.Repository}}:{{.Tag}}", "alpine:3.20"),
            ("id={{ .ID }}", "id=0123456789ab"),
            ("{{.ID}}\\t{{.Size}}", "0123456789ab\t8.09MB"),
            ("{{json .Tag}}", "\"3.20\""),
            ("{{json .Labels}}", "{\"a\":\"1\"}"),
            ("{{.Labels.a}}", "1"),
            ("{{.Env}}", "[A=1 B=2]"),
            ("{{.Labels}}", "map[a:1]"),
            ("{{.Count}} {{.Gone}}", "3 <nil>"),
            ("{{upper .Repository}}", "ALPINE"),
            ("a  {{- .Tag -}}  b", "a3.20b"),
            ("plain text", "plain text"),
        ];
        for (f, want) in cases {
            assert_eq!(render(f).as_deref(), Ok(want), "{f}");
        }
        let all = render("{{json .}}").unwrap();
        let back: Value = serde_json::from_str(&all).unwrap();
        assert_eq!(back, row());
    }

    #[test]
    fn unknown_fields_and_bad_actions_are_errors_or_no_value() {
        let e = render("{{.Nope}}").unwrap_err();
        assert!(e.0.contains("can't evaluate field Nope"), "{e}");
        assert!(e.0.contains(".Repository"), "lists the fields: {e}");
        for bad in [
            "{{.ID",
            "{{range .Env}}x{{end}}",
            "{{.ID | json}}",
            "{{foo}}",
            "{{.A..B}}",
        ] {
            assert!(Template::parse(bad, Missing::Error).is_err(), "{bad}");
        }
        let t = Template::parse("{{.Nope}}/{{.Tag}}", Missing::NoValue).unwrap();
        assert_eq!(t.render(&row()).unwrap(), "<no value>/3.20");
    }

    #[test]
    fn table_prints_headers_and_aligns_as_tabwriter() {
        let t = Template::parse(
            "table {{.Repository}}\\t{{.ID}}\\t{{.Size}}",
            Missing::Error,
        )
        .unwrap();
        let rows = [
            row(),
            json!({"Repository": "a-much-longer-name", "ID": "x", "Size": "1B"}),
        ];
        let out = t.render_all(&rows, default_header).unwrap();
        assert_eq!(
            out,
            "REPOSITORY           ID             SIZE\n\
             alpine               0123456789ab   8.09MB\n\
             a-much-longer-name   x              1B\n"
        );
        assert_eq!(default_header("CreatedAt"), "CREATED AT");
        assert_eq!(default_header("ID"), "ID");
        let plain = Template::parse("{{.Tag}}", Missing::Error).unwrap();
        assert_eq!(
            plain.render_all(&rows[..1], default_header).unwrap(),
            "3.20\n"
        );
    }
}
