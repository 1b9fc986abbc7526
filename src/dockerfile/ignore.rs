//! Path patterns, without I/O: Go's `filepath.Match` for one path component
//! (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes), which COPY sources use, and
//! `.dockerignore` rules as Docker applies them: patterns cleaned and
//! anchored at the context root, `**` for any number of directories, `!`
//! re-including, the last matching rule deciding, and a path excluded
//! when it or any directory above it is.

/// Whether `name` (one component) matches `pattern` (one component).
pub fn match_component(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches(&p, &n)
}

fn matches(p: &[char], n: &[char]) -> bool {
    glob(
        p,
        n,
        |p| p[0] == '*',
        |p, c| match p[0] {
            '?' => Some(1),
            '[' => match class(&p[1..], Some(*c)) {
                Some((true, used)) => Some(1 + used),
                _ => None,
            },
            '\\' if p.len() > 1 => (p[1] == *c).then_some(2),
            x => (x == *c).then_some(1),
        },
    )
}

/// Matches `n` against pattern `p`, where `is_star(p)` says whether `p`
/// starts with a token matching any run of elements, and `one(p, x)` how
/// many pattern items match element `x` (None: no match). A later star
/// supersedes an earlier one, so only the latest is retried: time stays
/// linear in the stars rather than exponential.
fn glob<P, N>(
    p: &[P],
    n: &[N],
    is_star: impl Fn(&[P]) -> bool,
    one: impl Fn(&[P], &N) -> Option<usize>,
) -> bool {
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while pi < p.len() || ni < n.len() {
        if pi < p.len() {
            if is_star(&p[pi..]) {
                star = Some((pi + 1, ni));
                pi += 1;
                continue;
            }
            if let Some(used) = n.get(ni).and_then(|x| one(&p[pi..], x)) {
                pi += used;
                ni += 1;
                continue;
            }
        }
        match star {
            Some((after, from)) if from < n.len() => {
                star = Some((after, from + 1));
                pi = after;
                ni = from + 1;
            }
            _ => return false,
        }
    }
    true
}

/// A `[...]` class (after its `[`) against `c`: (hit, chars used incl. `]`).
fn class(p: &[char], c: Option<char>) -> Option<(bool, usize)> {
    let c = c?;
    let mut i = 0;
    let negate = matches!(p.first(), Some('^') | Some('!'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        let lo = if lo == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            lo
        };
        i += 1;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&x| x != ']') {
            let hi = if p[i + 1] == '\\' {
                i += 1;
                *p.get(i + 1)?
            } else {
                p[i + 1]
            };
            i += 2;
            hit |= lo <= c && c <= hi;
        } else {
            hit |= lo == c;
        }
    }
}

pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// `a/./b/../c` → `a/c`; leading `/` and `..` that would leave the root go.
pub fn clean(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

/// A `.dockerignore` line that is not a valid pattern.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {pattern:?}: syntax error in pattern: {why}")]
pub struct BadPattern {
    pub line: usize,
    pub pattern: String,
    pub why: &'static str,
}

/// What is wrong with one component of a pattern, if anything.
fn pattern_error(pattern: &str) -> Option<&'static str> {
    let p: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' if i + 1 == p.len() => return Some("it ends in an escaping '\\'"),
            '\\' => i += 2,
            // Any character will do: only whether the class closes counts.
            '[' => match class(&p[i + 1..], Some('a')) {
                Some((_, used)) => i += 1 + used,
                None => return Some("a '[' is not closed by ']'"),
            },
            _ => i += 1,
        }
    }
    None
}

#[derive(Clone, Debug)]
struct Rule {
    parts: Vec<String>,
    negate: bool,
}

/// The rules of a `.dockerignore`.
#[derive(Clone, Debug, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

impl Ignore {
    /// Parses a `.dockerignore`; a malformed pattern (an unclosed `[`, a
    /// trailing `\`) is an error, as Docker's "syntax error in pattern".
    pub fn parse(text: &str) -> Result<Ignore, BadPattern> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let cleaned = clean(pat);
            if cleaned.is_empty() {
                continue;
            }
            let parts: Vec<String> = cleaned.split('/').map(str::to_string).collect();
            if let Some(why) = parts.iter().find_map(|p| pattern_error(p)) {
                return Err(BadPattern {
                    line: i + 1,
                    pattern: line.to_string(),
                    why,
                });
            }
            rules.push(Rule { parts, negate });
        }
        Ok(Ignore { rules })
    }

    /// Whether `rel` (relative to the context, `/`-separated) is excluded.
    pub fn excludes(&self, rel: &str) -> bool {
        let rel = clean(rel);
        if rel.is_empty() {
            return false;
        }
        let comps: Vec<&str> = rel.split('/').collect();
        let mut excluded = false;
        for r in &self.rules {
            let hit = (1..=comps.len()).any(|n| match_parts(&r.parts, &comps[..n]));
            if hit {
                excluded = !r.negate;
            }
        }
        excluded
    }

    /// Whether some `!` rule might re-include something below `dir`, so an
    /// excluded directory still has to be walked.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.negate)
    }
}

fn match_parts(p: &[String], n: &[&str]) -> bool {
    glob(
        p,
        n,
        |p| p[0] == "**",
        |p, x| match_component(&p[0], x).then_some(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_match_like_go() {
        let table = [
            ("*.txt", "a.txt", true),
            ("*.txt", "a.txt.bak", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[!a-c]x", "dx", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("*", "", true),
            ("[]]", "]", true),
            ("[", "[", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("*x", "xxx", true),
            ("*?", "", false),
            ("*[0-9]", "ab7", true),
        ];
        for (p, n, want) in table {
            assert_eq!(match_component(p, n), want, "{p} vs {n}");
        }
        // Stars retried naively would take 200^10 steps here.
        assert!(!match_component(
            &format!("{}b", "*a".repeat(10)),
            &"a".repeat(200)
        ));
        let many = format!("{}x", "**/".repeat(20));
        let deep = vec!["d"; 100].join("/");
        assert!(!Ignore::parse(&many).unwrap().excludes(&deep));
        assert!(Ignore::parse(&many).unwrap().excludes(&format!("{deep}/x")));
    }

    #[test]
    fn dockerignore_rules() {
        let ig = Ignore::parse(
            "# comment\n\
             *.log\n\
             /build\n\
             **/node_modules\n\
             docs/**/*.md\n\
             !docs/keep.md\n\
             secret/\n\
             ./tmp/../cache\n",
        )
        .unwrap();
        let table = [
            ("app.log", true),
            ("sub/app.log", false),
            ("build", true),
            ("build/out/x.o", true),
            ("node_modules", true),
            ("a/b/node_modules/x.js", true),
            ("docs/x.md", true),
            ("docs/a/b/y.md", true),
            ("docs/keep.md", false),
            ("docs/readme.txt", false),
            ("secret/key", true),
            ("cache/x", true),
            ("src/main.rs", false),
            ("", false),
        ];
        for (p, want) in table {
            assert_eq!(ig.excludes(p), want, "{p}");
        }
        assert!(ig.has_exceptions());
        assert_eq!(clean("/a/./b/../c/"), "a/c");
        assert_eq!(clean("../../x"), "x");
    }

    #[test]
    fn malformed_patterns_are_refused_with_their_line() {
        for (text, line) in [
            ("[[[[", 1),
            ("ok\n# c\nsrc/[a-", 3),
            ("!keep[", 1),
            ("trailing\\", 1),
        ] {
            let e = Ignore::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}");
            assert!(e.to_string().contains("syntax error in pattern"), "{e}");
        }
        for good in ["[a-c]x", "[]]", "\\[x", "a\\*b", "**/x"] {
            assert!(Ignore::parse(good).is_ok(), "{good}");
        }
    }
}
