//! The Dockerfile language, without I/O: parser directives (`# escape=`),
//! comments, line continuations, heredocs (`RUN <<EOF`, `COPY <<EOF /f`),
//! instructions with their `--flags` and their arguments in exec (JSON) or
//! shell form, each with the line it starts on; HEALTHCHECK and ONBUILD
//! checked as Docker checks them; and the word lexer that expands `$VAR`, `${VAR}`,
//! `${VAR:-word}` and `${VAR:+word}` and removes quotes the way Docker's
//! does, for the instructions that take variables.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keyword {
    From,
    Run,
    Copy,
    Add,
    Env,
    Arg,
    Workdir,
    User,
    Cmd,
    Entrypoint,
    Label,
    Expose,
    Volume,
    StopSignal,
    Shell,
    Maintainer,
    Healthcheck,
    Onbuild,
}

impl Keyword {
    fn parse(word: &str) -> Option<Keyword> {
        Some(match word.to_ascii_uppercase().as_str() {
            "FROM" => Keyword::From,
            "RUN" => Keyword::Run,
            "COPY" => Keyword::Copy,
            "ADD" => Keyword::Add,
            "ENV" => Keyword::Env,
            "ARG" => Keyword::Arg,
            "WORKDIR" => Keyword::Workdir,
            "USER" => Keyword::User,
            "CMD" => Keyword::Cmd,
            "ENTRYPOINT" => Keyword::Entrypoint,
            "LABEL" => Keyword::Label,
            "EXPOSE" => Keyword::Expose,
            "VOLUME" => Keyword::Volume,
            "STOPSIGNAL" => Keyword::StopSignal,
            "SHELL" => Keyword::Shell,
            "MAINTAINER" => Keyword::Maintainer,
            "HEALTHCHECK" => Keyword::Healthcheck,
            "ONBUILD" => Keyword::Onbuild,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Keyword::From => "FROM",
            Keyword::Run => "RUN",
            Keyword::Copy => "COPY",
            Keyword::Add => "ADD",
            Keyword::Env => "ENV",
            Keyword::Arg => "ARG",
            Keyword::Workdir => "WORKDIR",
            Keyword::User => "USER",
            Keyword::Cmd => "CMD",
            Keyword::Entrypoint => "ENTRYPOINT",
            Keyword::Label => "LABEL",
            Keyword::Expose => "EXPOSE",
            Keyword::Volume => "VOLUME",
            Keyword::StopSignal => "STOPSIGNAL",
            Keyword::Shell => "SHELL",
            Keyword::Maintainer => "MAINTAINER",
            Keyword::Healthcheck => "HEALTHCHECK",
            Keyword::Onbuild => "ONBUILD",
        }
    }

    /// The flags an instruction accepts (others are an error, as in Docker).
    fn flags(self) -> &'static [&'static str] {
        match self {
            Keyword::From => &["platform"],
            Keyword::Copy => &["chown", "chmod", "from", "link", "parents"],
            Keyword::Add => &["chown", "chmod", "link"],
            Keyword::Run => &["mount", "network", "security"],
            Keyword::Healthcheck => &[
                "interval",
                "timeout",
                "start-period",
                "start-interval",
                "retries",
            ],
            _ => &[],
        }
    }

    /// Instructions whose arguments may be a JSON array.
    fn takes_exec_form(self) -> bool {
        matches!(
            self,
            Keyword::Run
                | Keyword::Cmd
                | Keyword::Entrypoint
                | Keyword::Copy
                | Keyword::Add
                | Keyword::Volume
                | Keyword::Shell
        )
    }
}

impl fmt::Display for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Args {
    /// `["a", "b"]`
    Exec(Vec<String>),
    /// Everything after the keyword and flags, continuations joined.
    Shell(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// The line the instruction starts on (1-based).
    pub line: usize,
    pub keyword: Keyword,
    /// `--name=value` (or `--name`, value None), in order.
    pub flags: Vec<(String, Option<String>)>,
    pub args: Args,
    /// The instruction as written, continuations joined.
    pub text: String,
    /// The heredocs its shell form names, in order (RUN, COPY, ADD).
    pub heredocs: Vec<Heredoc>,
}

/// `<<NAME` (`<<-NAME` strips leading tabs; a quoted name, `<<'NAME'` or
/// `<<"NAME"`, turns off variable expansion) and the lines up to `NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    /// The word as written in the instruction (`<<-"EOF"`).
    pub word: String,
    pub strip_tabs: bool,
    pub expand: bool,
    /// The lines as written, each ending in a newline, without the last.
    pub body: String,
}

impl Heredoc {
    /// The document: the body, with leading tabs removed for `<<-`.
    pub fn content(&self) -> String {
        if !self.strip_tabs {
            return self.body.clone();
        }
        self.body
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

impl Instruction {
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dockerfile {
    pub instructions: Vec<Instruction>,
    /// The escape character (`\`, or `` ` `` by directive).
    pub escape: char,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

fn err(line: usize, msg: impl Into<String>) -> ParseError {
    ParseError {
        line,
        msg: msg.into(),
    }
}

/// `# name=value` at the very top of the file.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix('#')?;
    let (name, value) = rest.split_once('=')?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some((name.to_ascii_lowercase(), value.trim().to_string()))
}

pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut escape = '\\';
    let mut first = 0;
    for (i, l) in lines.iter().enumerate() {
        match directive(l) {
            Some((name, value)) => {
                if name == "escape" {
                    escape = match value.as_str() {
                        "\\" => '\\',
                        "`" => '`',
                        _ => return Err(err(i + 1, format!("invalid escape character {value:?}"))),
                    };
                }
                first = i + 1;
            }
            None => break,
        }
    }
    let mut instructions = Vec::new();
    // (first line, text so far) of an instruction continued on the next line
    let mut pending: Option<(usize, String)> = None;
    let mut i = first;
    while i < lines.len() {
        let raw = lines[i];
        i += 1;
        let trimmed = raw.trim_start();
        // Comments and blank lines, also inside a continued instruction.
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let body = raw.trim_end();
        let (body, continues) = match body.strip_suffix(escape) {
            Some(b) => (b, true),
            None => (body, false),
        };
        let (start, mut text) = pending.take().unwrap_or((i, String::new()));
        text.push_str(if text.is_empty() {
            body.trim_start()
        } else {
            body
        });
        if continues {
            pending = Some((start, text));
        } else {
            let mut ins = instruction(start, &text)?;
            i = read_heredocs(&mut ins, &lines, i)?;
            instructions.push(ins);
        }
    }
    if let Some((start, text)) = pending {
        let mut ins = instruction(start, &text)?;
        read_heredocs(&mut ins, &lines, lines.len())?;
        instructions.push(ins);
    }
    match instructions.iter().find(|i| i.keyword != Keyword::Arg) {
        None => return Err(err(lines.len().max(1), "no FROM instruction")),
        Some(i) if i.keyword != Keyword::From => {
            return Err(err(i.line, format!("{} before the first FROM", i.keyword)));
        }
        Some(_) => {}
    }
    Ok(Dockerfile {
        instructions,
        escape,
    })
}

fn instruction(line: usize, text: &str) -> Result<Instruction, ParseError> {
    let text = text.trim();
    let (word, mut rest) = text
        .split_once(char::is_whitespace)
        .map_or((text, ""), |(w, r)| (w, r.trim_start()));
    let keyword =
        Keyword::parse(word).ok_or_else(|| err(line, format!("unknown instruction: {word}")))?;
    let mut flags = Vec::new();
    while let Some(f) = rest.strip_prefix("--") {
        let (flag, after) = f
            .split_once(char::is_whitespace)
            .map_or((f, ""), |(a, b)| (a, b.trim_start()));
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        if !keyword.flags().contains(&name.as_str()) {
            return Err(err(line, format!("{keyword}: unknown flag --{name}")));
        }
        flags.push((name, value));
        rest = after;
    }
    let args = if keyword.takes_exec_form() && rest.starts_with('[') {
        match serde_json::from_str::<Vec<String>>(rest) {
            Ok(v) => Args::Exec(v),
            Err(_) if keyword == Keyword::Shell => {
                return Err(err(line, "SHELL needs a JSON array of strings"));
            }
            // Docker takes what is not valid JSON as the shell form.
            Err(_) => Args::Shell(rest.to_string()),
        }
    } else {
        if keyword == Keyword::Shell {
            return Err(err(line, "SHELL needs a JSON array of strings"));
        }
        Args::Shell(rest.to_string())
    };
    let empty = match &args {
        Args::Exec(v) => v.is_empty() && !matches!(keyword, Keyword::Cmd | Keyword::Entrypoint),
        Args::Shell(s) => s.is_empty(),
    };
    if empty {
        return Err(err(line, format!("{keyword} needs an argument")));
    }
    let ins = Instruction {
        line,
        keyword,
        flags,
        args,
        text: text.to_string(),
        heredocs: Vec::new(),
    };
    match keyword {
        Keyword::Healthcheck => {
            healthcheck(&ins).map_err(|m| err(line, m))?;
        }
        Keyword::Onbuild => {
            onbuild_trigger(&ins)?;
        }
        _ => {}
    }
    Ok(ins)
}

/// Reads the bodies of the heredocs `ins` names from `lines[next..]`;
/// returns the index of the first line after them.
fn read_heredocs(ins: &mut Instruction, lines: &[&str], next: usize) -> Result<usize, ParseError> {
    let Args::Shell(s) = &ins.args else {
        return Ok(next);
    };
    if !matches!(ins.keyword, Keyword::Run | Keyword::Copy | Keyword::Add) {
        return Ok(next);
    }
    let mut i = next;
    for (word, name, strip_tabs, expand) in heredoc_markers(s) {
        if name.is_empty() {
            return Err(err(ins.line, format!("{word}: a heredoc needs a name")));
        }
        let mut body = String::new();
        loop {
            let Some(l) = lines.get(i) else {
                return Err(err(
                    ins.line,
                    format!("heredoc {name}: no line {name} ends it"),
                ));
            };
            i += 1;
            let end = if strip_tabs {
                l.trim_start_matches('\t')
            } else {
                l
            };
            if end == name {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        ins.heredocs.push(Heredoc {
            name,
            word,
            strip_tabs,
            expand,
            body,
        });
    }
    Ok(i)
}

/// The heredoc words of a shell-form command line, outside quotes:
/// (word, name, strip tabs, expand).
pub fn heredoc_markers(s: &str) -> Vec<(String, String, bool, bool)> {
    let mut out = Vec::new();
    for w in shell_split(s) {
        let Some(rest) = w.strip_prefix("<<") else {
            continue;
        };
        let (strip, rest) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if rest.contains('<') {
            continue;
        }
        let quoted = rest.len() >= 2
            && ((rest.starts_with('"') && rest.ends_with('"'))
                || (rest.starts_with('\'') && rest.ends_with('\'')));
        let name = if quoted {
            &rest[1..rest.len() - 1]
        } else {
            rest
        };
        out.push((w.clone(), name.to_string(), strip, !quoted));
    }
    out
}

/// Splits at whitespace outside quotes, keeping the quotes.
fn shell_split(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            None => {
                if c == '"' || c == '\'' {
                    quote = Some(c);
                }
                cur.push(c);
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    // A word that starts inside quotes is no heredoc.
    out.into_iter()
        .filter(|w| !w.starts_with(['"', '\'']))
        .collect()
}

/// What a HEALTHCHECK instruction says, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthcheckSpec {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    pub interval: u64,
    pub timeout: u64,
    pub start_period: u64,
    pub start_interval: u64,
    pub retries: u64,
}

pub fn healthcheck(ins: &Instruction) -> Result<HealthcheckSpec, String> {
    let text = match &ins.args {
        Args::Shell(s) => s.trim(),
        Args::Exec(_) => return Err("HEALTHCHECK needs NONE or CMD".into()),
    };
    let (first, rest) = text
        .split_once(char::is_whitespace)
        .map_or((text, ""), |(a, b)| (a, b.trim()));
    let test = match first.to_ascii_uppercase().as_str() {
        "NONE" => {
            if !rest.is_empty() || !ins.flags.is_empty() {
                return Err("HEALTHCHECK NONE takes no arguments or flags".into());
            }
            vec!["NONE".to_string()]
        }
        "CMD" => {
            if rest.is_empty() {
                return Err("HEALTHCHECK CMD needs a command".into());
            }
            match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) if rest.starts_with('[') => {
                    if v.is_empty() {
                        return Err("HEALTHCHECK CMD needs a command".into());
                    }
                    std::iter::once("CMD".to_string()).chain(v).collect()
                }
                _ => vec!["CMD-SHELL".to_string(), rest.to_string()],
            }
        }
        _ => return Err(format!("HEALTHCHECK: expected NONE or CMD, not {first:?}")),
    };
    let duration = |name: &str| match ins.flag(name) {
        None => Ok(0),
        Some(v) => {
            let ns = duration_ns(v).map_err(|e| format!("--{name}={v}: {e}"))?;
            if ns != 0 && ns < 1_000_000 {
                return Err(format!("--{name}={v}: must be at least 1ms"));
            }
            Ok(ns)
        }
    };
    let retries = match ins.flag("retries") {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| format!("--retries={v}: expected a whole number"))?,
    };
    Ok(HealthcheckSpec {
        test,
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start-period")?,
        start_interval: duration("start-interval")?,
        retries,
    })
}

/// A Go duration (`1m30s`, `500ms`, `2h`, `0`) in nanoseconds.
pub fn duration_ns(s: &str) -> Result<u64, String> {
    if s == "0" {
        return Ok(0);
    }
    let bad = || format!("{s:?} is not a duration (like 30s, 1m30s, 500ms)");
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let num: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += num * scale;
        rest = &rest[unit_len..];
    }
    if total > u64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(total as u64)
}

/// The instruction an ONBUILD stores, checked as Docker checks it.
pub fn onbuild_trigger(ins: &Instruction) -> Result<Instruction, ParseError> {
    let Args::Shell(text) = &ins.args else {
        return Err(err(ins.line, "ONBUILD needs an instruction"));
    };
    trigger(ins.line, text)
}

/// A stored ONBUILD trigger as an instruction, at `line` (its FROM's).
pub fn trigger(line: usize, text: &str) -> Result<Instruction, ParseError> {
    // Checked before parsing it: a chain of ONBUILDs is never recursed into.
    let word = text.split_whitespace().next().unwrap_or_default();
    if word.eq_ignore_ascii_case("ONBUILD") {
        return Err(err(line, "ONBUILD ONBUILD is not allowed"));
    }
    let inner = instruction(line, text)?;
    match inner.keyword {
        Keyword::From | Keyword::Maintainer => Err(err(
            line,
            format!("{} is not allowed as an ONBUILD trigger", inner.keyword),
        )),
        _ if !heredoc_markers(text).is_empty() => {
            Err(err(line, "heredocs are not allowed in ONBUILD"))
        }
        _ => Ok(inner),
    }
}

/// Splits `s` into words, expanding variables from `vars` and removing
/// quotes and escapes, as Docker's ProcessWords does.
pub fn words(
    s: &str,
    escape: char,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, String> {
    Lexer {
        chars: s.chars().collect(),
        pos: 0,
        escape,
        vars,
        depth: 0,
    }
    .words(true)
}

/// One word: like `words` but whitespace stays (Docker's ProcessWord).
pub fn word(
    s: &str,
    escape: char,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let w = Lexer {
        chars: s.chars().collect(),
        pos: 0,
        escape,
        vars,
        depth: 0,
    }
    .words(false)?;
    Ok(w.concat())
}

/// Expands variables only: quotes and escapes stay as written (an escaped
/// `$` is not expanded), as BuildKit expands a heredoc's content.
pub fn expand_vars(
    s: &str,
    escape: char,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut lx = Lexer {
        chars: s.chars().collect(),
        pos: 0,
        escape,
        vars,
        depth: 0,
    };
    let mut out = String::new();
    while let Some(c) = lx.next() {
        if c == escape {
            out.push(c);
            if let Some(n) = lx.next() {
                out.push(n);
            }
        } else if c == '$' {
            out.push_str(&lx.variable()?);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

const MAX_NESTING: usize = 64;

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    vars: &'a dyn Fn(&str) -> Option<String>,
    /// How many `${NAME:-...}` the lexer is inside: a bound keeps a
    /// hostile Dockerfile from overflowing the stack.
    depth: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    /// Reads until the end, or until `stop` (outside quotes) when given.
    fn words(&mut self, split: bool) -> Result<Vec<String>, String> {
        self.until(split, None)
    }

    fn until(&mut self, split: bool, stop: Option<char>) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut in_word = false;
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                break;
            }
            self.pos += 1;
            match c {
                c if split && c.is_whitespace() => {
                    if in_word {
                        out.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                }
                '\'' => {
                    in_word = true;
                    loop {
                        match self.next() {
                            Some('\'') => break,
                            Some(c) => cur.push(c),
                            None => return Err("unterminated single quote".into()),
                        }
                    }
                }
                '"' => {
                    in_word = true;
                    loop {
                        match self.next() {
                            Some('"') => break,
                            Some(c) if c == self.escape => match self.peek() {
                                Some(n) if n == '"' || n == '$' || n == self.escape => {
                                    cur.push(n);
                                    self.pos += 1;
                                }
                                _ => cur.push(c),
                            },
                            Some('$') => cur.push_str(&self.variable()?),
                            Some(c) => cur.push(c),
                            None => return Err("unterminated double quote".into()),
                        }
                    }
                }
                '$' => {
                    let value = self.variable()?;
                    // An unquoted expansion splits into words, as in a shell.
                    if split {
                        let mut parts = value.split(char::is_whitespace).peekable();
                        let starts_blank = value.starts_with(char::is_whitespace);
                        if starts_blank && in_word {
                            out.push(std::mem::take(&mut cur));
                            in_word = false;
                        }
                        while let Some(p) = parts.next() {
                            if !p.is_empty() {
                                cur.push_str(p);
                                in_word = true;
                            }
                            if parts.peek().is_some() && in_word {
                                out.push(std::mem::take(&mut cur));
                                in_word = false;
                            }
                        }
                    } else {
                        cur.push_str(&value);
                        in_word = true;
                    }
                }
                c if c == self.escape => {
                    in_word = true;
                    match self.next() {
                        Some(n) => cur.push(n),
                        None => cur.push(c),
                    }
                }
                c => {
                    cur.push(c);
                    in_word = true;
                }
            }
        }
        if in_word || (!split && !cur.is_empty()) {
            out.push(cur);
        }
        Ok(out)
    }

    /// After a `$`: `NAME`, `{NAME}`, `{NAME:-word}`, `{NAME:+word}` (and
    /// `-`/`+` without the colon, which test set rather than non-empty).
    fn variable(&mut self) -> Result<String, String> {
        let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if self.peek() == Some('{') {
            self.pos += 1;
            let mut name = String::new();
            while let Some(c) = self.peek().filter(|c| is_name(*c)) {
                name.push(c);
                self.pos += 1;
            }
            if name.is_empty() {
                return Err("bad substitution: ${} needs a variable name".into());
            }
            let value = (self.vars)(&name);
            match self.next() {
                Some('}') => Ok(value.unwrap_or_default()),
                Some(c) => {
                    let colon = c == ':';
                    let op = if colon { self.next() } else { Some(c) };
                    if self.depth >= MAX_NESTING {
                        return Err("bad substitution: nested too deeply".into());
                    }
                    self.depth += 1;
                    let alt = self.until(false, Some('}'));
                    self.depth -= 1;
                    let alt = alt?.concat();
                    if self.next() != Some('}') {
                        return Err(format!("bad substitution: missing }} after ${{{name}"));
                    }
                    let set = match colon {
                        true => value.as_deref().is_some_and(|v| !v.is_empty()),
                        false => value.is_some(),
                    };
                    match op {
                        Some('-') => Ok(if set { value.unwrap_or_default() } else { alt }),
                        Some('+') => Ok(if set { alt } else { String::new() }),
                        _ => Err(format!(
                            "bad substitution: unsupported modifier in ${{{name}"
                        )),
                    }
                }
                None => Err(format!("bad substitution: missing }} after ${{{name}")),
            }
        } else {
            let mut name = String::new();
            while let Some(c) = self.peek().filter(|c| is_name(*c)) {
                name.push(c);
                self.pos += 1;
            }
            if name.is_empty() {
                return Ok("$".into());
            }
            Ok((self.vars)(&name).unwrap_or_default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(k: &str) -> Option<String> {
        match k {
            "A" => Some("alpha".into()),
            "SP" => Some("two words".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn parses_lines_continuations_comments_and_forms() {
        let df = parse(
            "# syntax=docker/dockerfile:1\n\
             # a comment\n\
             ARG BASE=debian\n\
             FROM $BASE AS build\n\
             \n\
             RUN apt-get update && \\\n\
             # a comment inside\n\
             \x20   apt-get install -y hello \\\n\
             \n\
             \x20   && true\n\
             COPY --chown=app:app [\"a b\", \"/dst/\"]\n\
             copy --link src /x\n\
             CMD [\"sh\", \"-c\", \"echo hi\"]\n\
             ENTRYPOINT [not json\n",
        )
        .unwrap();
        let kw: Vec<(usize, Keyword)> = df
            .instructions
            .iter()
            .map(|i| (i.line, i.keyword))
            .collect();
        assert_eq!(
            kw,
            vec![
                (3, Keyword::Arg),
                (4, Keyword::From),
                (6, Keyword::Run),
                (11, Keyword::Copy),
                (12, Keyword::Copy),
                (13, Keyword::Cmd),
                (14, Keyword::Entrypoint),
            ]
        );
        let run = &df.instructions[2];
        assert_eq!(
            run.args,
            Args::Shell("apt-get update &&     apt-get install -y hello     && true".into())
        );
        let copy = &df.instructions[3];
        assert_eq!(copy.flag("chown"), Some("app:app"));
        assert_eq!(copy.args, Args::Exec(vec!["a b".into(), "/dst/".into()]));
        assert_eq!(df.instructions[4].flag("link"), Some(""));
        assert_eq!(
            df.instructions[5].args,
            Args::Exec(vec!["sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(df.instructions[6].args, Args::Shell("[not json".into()));
    }

    #[test]
    fn escape_directive() {
        let df = parse("# escape=`\nFROM scratch\nRUN dir c:\\ `\n  && echo ok\n").unwrap();
        assert_eq!(df.escape, '`');
        assert_eq!(
            df.instructions[1].args,
            Args::Shell("dir c:\\   && echo ok".into())
        );
    }

    #[test]
    fn errors_name_the_line() {
        let table = [
            ("FROM x\nRUN true\nFROBNICATE x\n", 3, "unknown instruction"),
            ("RUN true\n", 1, "before the first FROM"),
            ("# only a comment\n", 1, "no FROM"),
            ("FROM x\n\nCOPY --own=1 a b\n", 3, "unknown flag --own"),
            ("FROM x\nENV\n", 2, "needs an argument"),
            ("FROM x\nHEALTHCHECK\n", 2, "needs an argument"),
            ("FROM x\nHEALTHCHECK NONE x\n", 2, "takes no arguments"),
            ("FROM x\nHEALTHCHECK CMD\n", 2, "needs a command"),
            ("FROM x\nHEALTHCHECK curl x\n", 2, "expected NONE or CMD"),
            (
                "FROM x\nHEALTHCHECK --interval=5 CMD true\n",
                2,
                "not a duration",
            ),
            (
                "FROM x\nHEALTHCHECK --timeout=1us CMD true\n",
                2,
                "at least 1ms",
            ),
            (
                "FROM x\nHEALTHCHECK --retries=x CMD true\n",
                2,
                "whole number",
            ),
            (
                "FROM x\nHEALTHCHECK --user=x CMD true\n",
                2,
                "unknown flag --user",
            ),
            ("FROM x\nONBUILD ONBUILD RUN x\n", 2, "ONBUILD ONBUILD"),
            (
                "FROM x\nonbuild onbuild onbuild RUN x\n",
                2,
                "ONBUILD ONBUILD",
            ),
            ("FROM x\nONBUILD FROM y\n", 2, "not allowed as an ONBUILD"),
            ("FROM x\nONBUILD FROB y\n", 2, "unknown instruction: FROB"),
            ("FROM x\nONBUILD\n", 2, "needs an argument"),
            (
                "FROM x\nONBUILD RUN <<E\nE\n",
                2,
                "heredocs are not allowed",
            ),
            (
                "FROM x\nRUN true\nRUN <<EOF\necho\n",
                3,
                "no line EOF ends it",
            ),
            ("FROM x\nRUN <<-E\n  E\n", 2, "no line E ends it"),
            ("FROM x\nCOPY <<'' /x\n", 2, "needs a name"),
            ("FROM x\nSHELL /bin/bash\n", 2, "JSON array"),
        ];
        for (text, line, msg) in table {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.msg.contains(msg), "{text:?}: {e}");
        }
    }

    #[test]
    fn heredocs() {
        let df = parse(
            "FROM x\n\
             RUN <<EOF\n\
             # not a comment here\n\
             \n\
             echo $A\n\
             EOF\n\
             RUN <<-'END' cat > /f && <<\"TWO\" cat >/g\n\
             \t\tindented $A\n\
             \tEND\n\
             two\n\
             TWO\n\
             COPY <<a.txt <<b.txt /dst/\n\
             first\n\
             a.txt\n\
             b.txt\n\
             RUN echo \"<<no\" '<<neither' a<<b\n\
             RUN [\"<<EOF\"]\n",
        )
        .unwrap();
        let lines: Vec<usize> = df.instructions.iter().map(|i| i.line).collect();
        assert_eq!(lines, [1, 2, 7, 12, 16, 17]);
        let h = &df.instructions[1].heredocs;
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].name, "EOF");
        assert!(h[0].expand && !h[0].strip_tabs);
        assert_eq!(h[0].content(), "# not a comment here\n\necho $A\n");
        let h = &df.instructions[2].heredocs;
        assert_eq!(h.len(), 2);
        assert_eq!(
            (h[0].name.as_str(), h[0].expand, h[0].strip_tabs),
            ("END", false, true)
        );
        assert_eq!(h[0].word, "<<-'END'");
        assert_eq!(h[0].body, "\t\tindented $A\n");
        assert_eq!(h[0].content(), "indented $A\n");
        assert_eq!((h[1].name.as_str(), h[1].expand), ("TWO", false));
        assert_eq!(h[1].content(), "two\n");
        let h = &df.instructions[3].heredocs;
        let names: Vec<&str> = h.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "b.txt"]);
        assert_eq!(
            (h[0].content().as_str(), h[1].content().as_str()),
            ("first\n", "")
        );
        assert!(df.instructions[4].heredocs.is_empty());
        assert!(df.instructions[5].heredocs.is_empty());
    }

    #[test]
    fn healthcheck_forms() {
        let hc = |text: &str| {
            let df = parse(&format!("FROM x\n{text}\n")).unwrap();
            healthcheck(&df.instructions[1]).unwrap()
        };
        assert_eq!(hc("HEALTHCHECK NONE").test, ["NONE"]);
        let h = hc(
            "HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=2s \
             --start-interval=1s --retries=4 CMD curl -f http://x/ || exit 1",
        );
        assert_eq!(h.test, ["CMD-SHELL", "curl -f http://x/ || exit 1"]);
        assert_eq!(
            (
                h.interval,
                h.timeout,
                h.start_period,
                h.start_interval,
                h.retries
            ),
            (90_000_000_000, 500_000_000, 2_000_000_000, 1_000_000_000, 4)
        );
        assert_eq!(
            hc("healthcheck cmd [\"true\", \"x\"]").test,
            ["CMD", "true", "x"]
        );
        for (d, ns) in [
            ("0", 0),
            ("0s", 0),
            ("1.5s", 1_500_000_000),
            ("2h", 7_200_000_000_000),
        ] {
            assert_eq!(duration_ns(d), Ok(ns), "{d}");
        }
        for bad in ["", "s", "5", "1x", "1s2"] {
            assert!(duration_ns(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_long_onbuild_chain_is_one_error() {
        let text = format!("FROM x\n{}RUN x\n", "ONBUILD ".repeat(200_000));
        assert!(parse(&text).unwrap_err().msg.contains("ONBUILD ONBUILD"));
    }

    #[test]
    fn onbuild_triggers_parse_as_instructions() {
        let df = parse("FROM x\nONBUILD COPY --chown=1 . /app\nonbuild RUN make\n").unwrap();
        let t = onbuild_trigger(&df.instructions[1]).unwrap();
        assert_eq!(t.keyword, Keyword::Copy);
        assert_eq!(t.flag("chown"), Some("1"));
        assert_eq!(t.line, 2);
        assert_eq!(df.instructions[2].args, Args::Shell("RUN make".into()));
    }

    #[test]
    fn expands_variables_only() {
        assert_eq!(
            expand_vars("\"$A\" '${A}' \\$A ${UNSET:-d}\n", '\\', &vars).unwrap(),
            "\"alpha\" 'alpha' \\$A d\n"
        );
    }

    #[test]
    fn lexes_words_like_docker() {
        let table: &[(&str, &[&str])] = &[
            ("a b  c", &["a", "b", "c"]),
            ("$A ${A}x", &["alpha", "alphax"]),
            ("'$A' \"$A\"", &["$A", "alpha"]),
            ("\"a \\\"q\\\" \\n\"", &["a \"q\" \\n"]),
            ("a\\ b \\$A", &["a b", "$A"]),
            (
                "${UNSET:-def} ${A:-def} ${EMPTY:-e} ${EMPTY-e}",
                &["def", "alpha", "e"],
            ),
            ("${A:+yes} ${UNSET:+yes}x", &["yes", "x"]),
            ("$SP", &["two", "words"]),
            ("\"$SP\"", &["two words"]),
            ("K=\"$SP\" L=v", &["K=two words", "L=v"]),
            ("$", &["$"]),
            ("${UNSET:-$A/x}", &["alpha/x"]),
        ];
        for (s, want) in table {
            assert_eq!(words(s, '\\', &vars).unwrap(), *want, "{s}");
        }
        assert_eq!(
            word("/srv/$A  dir", '\\', &vars).unwrap(),
            "/srv/alpha  dir"
        );
        for bad in ["'open", "\"open", "${A", "${}", "${A:?x}"] {
            assert!(words(bad, '\\', &vars).is_err(), "{bad}");
        }
        let nested = |n: usize| format!("{}x{}", "${U:-".repeat(n), "}".repeat(n));
        assert_eq!(words(&nested(64), '\\', &vars).unwrap(), ["x"]);
        let deep = words(&nested(100_000), '\\', &vars).unwrap_err();
        assert!(deep.contains("nested too deeply"), "{deep}");
    }
}
