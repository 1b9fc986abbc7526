//! The stages of a Dockerfile, without I/O: where each begins and ends,
//! what it is named, what it reads from other stages (FROM a stage,
//! `COPY --from`, `RUN --mount=from=`), and which of them a target needs,
//! so that a build runs those and no others.

use super::parse::{self, Args, Dockerfile, Instruction, Keyword, ParseError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// Its `AS` name, lowercased.
    pub name: Option<String>,
    /// Instructions `from..end` of the Dockerfile, its FROM first.
    pub from: usize,
    pub end: usize,
    /// The image it starts from (variables expanded).
    pub base: String,
}

/// What `--from=`, or a FROM, names: an earlier stage, or an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Stage(usize),
    Image(String),
}

/// The stages of `df`; ARGs before the first FROM have the values `meta`
/// gives them, for FROM lines.
pub fn stages(
    df: &Dockerfile,
    meta: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Stage>, ParseError> {
    let mut out: Vec<Stage> = Vec::new();
    for (i, ins) in df.instructions.iter().enumerate() {
        if ins.keyword != Keyword::From {
            continue;
        }
        if let Some(last) = out.last_mut() {
            last.end = i;
        }
        let bad = |msg: String| ParseError {
            line: ins.line,
            msg,
        };
        let raw = match &ins.args {
            Args::Shell(s) => s.clone(),
            Args::Exec(v) => v.join(" "),
        };
        let words = parse::words(&raw, df.escape, meta).map_err(bad)?;
        let (base, name) = match words.as_slice() {
            [] => return Err(bad("FROM names no image (an ARG without a value?)".into())),
            [image] => (image.clone(), None),
            [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
                let name = name.to_ascii_lowercase();
                if !valid_name(&name) {
                    return Err(bad(format!(
                        "invalid stage name {name:?}: a letter, then letters, digits, '-', '_' or '.'"
                    )));
                }
                if out.iter().any(|s| s.name.as_deref() == Some(name.as_str())) {
                    return Err(bad(format!("duplicate stage name {name:?}")));
                }
                (image.clone(), Some(name))
            }
            _ => return Err(bad("expected FROM IMAGE [AS NAME]".into())),
        };
        if base.is_empty() {
            return Err(bad("FROM names no image (an ARG without a value?)".into()));
        }
        out.push(Stage {
            name,
            from: i,
            end: df.instructions.len(),
            base,
        });
    }
    Ok(out)
}

/// Stage names are Docker's: `[a-z][a-z0-9-_.]*`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// What `reference` names as seen from stage `current`: an earlier stage
/// by name or index, else an image.
pub fn source(stages: &[Stage], current: usize, reference: &str) -> Result<Source, String> {
    let lower = reference.to_ascii_lowercase();
    if let Some(i) = stages[..current.min(stages.len())]
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
    {
        return Ok(Source::Stage(i));
    }
    if let Ok(i) = reference.parse::<usize>() {
        if i < current {
            return Ok(Source::Stage(i));
        }
        return Err(format!(
            "--from={i}: a stage can only copy from an earlier stage"
        ));
    }
    if stages
        .iter()
        .any(|s| s.name.as_deref() == Some(lower.as_str()))
    {
        return Err(format!(
            "{reference}: a stage can only use an earlier stage"
        ));
    }
    Ok(Source::Image(reference.to_string()))
}

/// What stage `current` starts FROM: an earlier stage by name, else an
/// image (`FROM debian AS debian` names the image).
pub fn base(stages: &[Stage], current: usize) -> Option<Source> {
    let st = stages.get(current)?;
    let lower = st.base.to_ascii_lowercase();
    Some(
        match stages[..current]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            Some(i) => Source::Stage(i),
            None => Source::Image(st.base.clone()),
        },
    )
}

/// The `--from` values an instruction reads (COPY --from, and the `from=`
/// of RUN --mount).
pub fn references(ins: &Instruction) -> Vec<String> {
    match ins.keyword {
        Keyword::Copy | Keyword::Add => ins.flag("from").map(str::to_string).into_iter().collect(),
        Keyword::Run => ins
            .flags
            .iter()
            .filter(|(n, _)| n == "mount")
            .filter_map(|(_, v)| v.as_deref())
            .flat_map(|v| v.split(','))
            .filter_map(|kv| kv.strip_prefix("from="))
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// The stage `target` names: by its name or index; by default the last.
pub fn target(stages: &[Stage], target: Option<&str>) -> Option<usize> {
    let last = stages.len().checked_sub(1)?;
    let Some(t) = target else {
        return Some(last);
    };
    let lower = t.to_ascii_lowercase();
    stages
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
        .or_else(|| t.parse::<usize>().ok().filter(|i| *i <= last))
}

/// Which stages building stage `target` needs: itself, and every stage it
/// reads from, transitively.
pub fn needed(df: &Dockerfile, stages: &[Stage], target: usize) -> Result<Vec<bool>, ParseError> {
    let mut need = vec![false; stages.len()];
    let mut work = vec![target];
    while let Some(i) = work.pop() {
        let Some(seen) = need.get_mut(i) else {
            continue;
        };
        if std::mem::replace(seen, true) {
            continue;
        }
        if let Some(Source::Stage(j)) = base(stages, i) {
            work.push(j);
        }
        let st = &stages[i];
        let mut refs = Vec::new();
        for ins in &df.instructions[st.from + 1..st.end] {
            refs.extend(references(ins).into_iter().map(|r| (ins.line, r)));
        }
        for (line, r) in refs {
            match source(stages, i, &r) {
                Ok(Source::Stage(j)) => work.push(j),
                Ok(Source::Image(_)) => {}
                Err(msg) => return Err(ParseError { line, msg }),
            }
        }
    }
    Ok(need)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(k: &str) -> Option<String> {
        (k == "BASE").then(|| "debian:12".to_string())
    }

    const DF: &str = "ARG BASE\n\
        FROM $BASE AS Base\n\
        RUN make\n\
        FROM base AS build\n\
        COPY --from=0 /a /a\n\
        FROM scratch AS docs\n\
        COPY x /x\n\
        FROM alpine:3 AS test\n\
        RUN --mount=type=bind,from=build,target=/b true\n\
        FROM base\n\
        COPY --from=build /out /out\n\
        COPY --from=busybox:1 /bin/sh /sh\n";

    #[test]
    fn splits_names_and_finds_what_a_target_needs() {
        let df = parse::parse(DF).unwrap();
        let st = stages(&df, &meta).unwrap();
        let shape: Vec<(Option<&str>, usize, usize, &str)> = st
            .iter()
            .map(|s| (s.name.as_deref(), s.from, s.end, s.base.as_str()))
            .collect();
        assert_eq!(
            shape,
            [
                (Some("base"), 1, 3, "debian:12"),
                (Some("build"), 3, 5, "base"),
                (Some("docs"), 5, 7, "scratch"),
                (Some("test"), 7, 9, "alpine:3"),
                (None, 9, 12, "base"),
            ]
        );
        let need = |t: Option<&str>| needed(&df, &st, target(&st, t).unwrap()).unwrap();
        assert_eq!(need(None), [true, true, false, false, true]);
        assert_eq!(need(Some("BUILD")), [true, true, false, false, false]);
        assert_eq!(need(Some("docs")), [false, false, true, false, false]);
        assert_eq!(need(Some("test")), [true, true, false, true, false]);
        assert_eq!(need(Some("4")), need(None));
        assert_eq!(target(&st, Some("docs")), Some(2));
        assert_eq!(target(&st, Some("nope")), None);
        assert_eq!(target(&st, Some("5")), None);
        assert_eq!(
            source(&st, 4, "busybox:1"),
            Ok(Source::Image("busybox:1".into()))
        );
        assert_eq!(source(&st, 4, "1"), Ok(Source::Stage(1)));
        let df = parse::parse("FROM debian AS debian\nFROM later\nFROM x AS later\n").unwrap();
        let st = stages(&df, &meta).unwrap();
        assert_eq!(base(&st, 0), Some(Source::Image("debian".into())));
        assert_eq!(base(&st, 1), Some(Source::Image("later".into())));
        assert_eq!(needed(&df, &st, 1).unwrap(), [false, true, false]);
    }

    #[test]
    fn bad_stages_name_their_line() {
        let table = [
            ("FROM a AS x\nFROM b AS X\n", 2, "duplicate stage name"),
            ("FROM a AS 1x\n", 1, "invalid stage name"),
            ("FROM a AS\n", 1, "expected FROM IMAGE"),
            ("FROM a b c d\n", 1, "expected FROM IMAGE"),
            ("ARG E\nFROM $E\n", 2, "names no image"),
            ("FROM a\nCOPY --from=1 /x /x\nFROM b\n", 2, "earlier stage"),
            (
                "FROM a\nCOPY --from=later /x /x\nFROM b AS later\n",
                2,
                "earlier stage",
            ),
        ];
        for (text, line, msg) in table {
            let df = parse::parse(text).unwrap();
            let e = stages(&df, &meta)
                .and_then(|st| needed(&df, &st, 0).map(drop))
                .unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.msg.contains(msg), "{text:?}: {e}");
        }
    }
}
