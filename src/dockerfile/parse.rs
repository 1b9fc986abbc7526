//! The Dockerfile language, without I/O: parser directives (`# escape=`),
//! comments, line continuations, instructions with their `--flags` and
//! their arguments in exec (JSON) or shell form, each with the line it
//! starts on; and the word lexer that expands `$VAR`, `${VAR}`,
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
        }
    }

    /// The flags an instruction accepts (others are an error, as in Docker).
    fn flags(self) -> &'static [&'static str] {
        match self {
            Keyword::From => &["platform"],
            Keyword::Copy => &["chown", "chmod", "from", "link"],
            Keyword::Add => &["chown", "chmod", "link"],
            Keyword::Run => &["mount", "network", "security"],
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
    for (i, raw) in lines.iter().enumerate().skip(first) {
        let n = i + 1;
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
        let (start, mut text) = pending.take().unwrap_or((n, String::new()));
        text.push_str(if text.is_empty() {
            body.trim_start()
        } else {
            body
        });
        if continues {
            pending = Some((start, text));
        } else {
            instructions.push(instruction(start, &text)?);
        }
    }
    if let Some((start, text)) = pending {
        instructions.push(instruction(start, &text)?);
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
    let keyword = Keyword::parse(word).ok_or_else(|| {
        let upper = word.to_ascii_uppercase();
        match upper.as_str() {
            "HEALTHCHECK" | "ONBUILD" => err(line, format!("{upper} is not supported")),
            _ => err(line, format!("unknown instruction: {word}")),
        }
    })?;
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
    Ok(Instruction {
        line,
        keyword,
        flags,
        args,
        text: text.to_string(),
    })
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
            ("FROM x\nHEALTHCHECK NONE\n", 2, "not supported"),
            ("FROM x\nSHELL /bin/bash\n", 2, "JSON array"),
        ];
        for (text, line, msg) in table {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.msg.contains(msg), "{text:?}: {e}");
        }
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
