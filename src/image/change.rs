//! `--change` instructions (`ENV`, `CMD`, `ENTRYPOINT`, `WORKDIR`, `USER`,
//! `LABEL`, `EXPOSE`, `VOLUME`, `STOPSIGNAL`) applied to an image config, as
//! `docker import --change` and `docker commit --change` do.

use crate::oci::ImageConfig;

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(
        "--change {0:?}: unknown instruction (ENV, CMD, ENTRYPOINT, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL)"
    )]
    Unknown(String),
    #[error("--change {0:?}: {1}")]
    Bad(String, &'static str),
}

pub fn apply_change(config: &mut ImageConfig, change: &str) -> Result<(), ChangeError> {
    let trimmed = change.trim();
    let (instr, rest) = trimmed
        .split_once(char::is_whitespace)
        .unwrap_or((trimmed, ""));
    let rest = rest.trim();
    let bad = |why| ChangeError::Bad(change.to_string(), why);
    match instr.to_ascii_uppercase().as_str() {
        "ENV" => {
            for (k, v) in
                key_values(rest).ok_or_else(|| bad("expected ENV KEY=VALUE or ENV KEY VALUE"))?
            {
                config.set_env(&k, &v);
            }
        }
        "LABEL" => {
            for (k, v) in key_values(rest).ok_or_else(|| bad("expected LABEL KEY=VALUE"))? {
                config.add_label(&k, &v);
            }
        }
        "CMD" => {
            config.container_config().cmd =
                Some(command_form(rest).ok_or_else(|| bad("empty CMD"))?)
        }
        "ENTRYPOINT" => {
            config.container_config().entrypoint =
                Some(command_form(rest).ok_or_else(|| bad("empty ENTRYPOINT"))?)
        }
        "WORKDIR" if !rest.is_empty() => {
            config.container_config().working_dir = Some(rest.to_string())
        }
        "USER" if !rest.is_empty() => config.container_config().user = Some(rest.to_string()),
        "STOPSIGNAL" if !rest.is_empty() => {
            config.container_config().stop_signal = Some(rest.to_string())
        }
        "EXPOSE" => {
            for p in rest.split_whitespace() {
                config.expose(p);
            }
        }
        "VOLUME" => {
            for v in json_array(rest)
                .unwrap_or_else(|| rest.split_whitespace().map(str::to_string).collect())
            {
                config.add_volume(&v);
            }
        }
        "WORKDIR" | "USER" | "STOPSIGNAL" => return Err(bad("needs a value")),
        _ => return Err(ChangeError::Unknown(change.to_string())),
    }
    Ok(())
}

/// `["a","b"]` (exec form) or a shell string (`/bin/sh -c STRING`).
pub fn command_form(s: &str) -> Option<Vec<String>> {
    if let Some(v) = json_array(s) {
        return Some(v);
    }
    (!s.is_empty()).then(|| vec!["/bin/sh".into(), "-c".into(), s.to_string()])
}

pub fn json_array(s: &str) -> Option<Vec<String>> {
    s.trim_start()
        .starts_with('[')
        .then(|| serde_json::from_str::<Vec<String>>(s).ok())
        .flatten()
}

/// `K=V K2="v 2"` or the legacy `K V` form.
pub fn key_values(s: &str) -> Option<Vec<(String, String)>> {
    let words = shell_words(s)?;
    if words.is_empty() {
        return None;
    }
    if !words[0].contains('=') {
        let (k, v) = s.split_once(char::is_whitespace)?;
        return Some(vec![(k.to_string(), v.trim().to_string())]);
    }
    words
        .into_iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Splits on whitespace, honouring double and single quotes and backslashes.
pub fn shell_words(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => cur.push(chars.next()?),
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                cur.push(chars.next()?);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return None;
    }
    if in_word {
        out.push(cur);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_changes() {
        let mut c = ImageConfig::default();
        apply_change(&mut c, "ENV A=1 B=\"two words\"").unwrap();
        apply_change(&mut c, "ENV A 3").unwrap();
        apply_change(&mut c, "CMD [\"/bin/sh\",\"-c\",\"echo hi\"]").unwrap();
        apply_change(&mut c, "ENTRYPOINT /entry.sh").unwrap();
        apply_change(&mut c, "WORKDIR /srv").unwrap();
        apply_change(&mut c, "USER 1000:1000").unwrap();
        apply_change(&mut c, "EXPOSE 80 53/udp 443/TCP").unwrap();
        let cc = c.config.clone().unwrap();
        assert_eq!(cc.env.unwrap(), vec!["B=two words", "A=3"]);
        assert_eq!(cc.cmd.unwrap(), vec!["/bin/sh", "-c", "echo hi"]);
        assert_eq!(cc.entrypoint.unwrap(), vec!["/bin/sh", "-c", "/entry.sh"]);
        assert_eq!(cc.working_dir.as_deref(), Some("/srv"));
        assert_eq!(cc.user.as_deref(), Some("1000:1000"));
        let ports = cc.exposed_ports.unwrap();
        assert!(ports.contains_key("53/udp"));
        assert!(ports.contains_key("80/tcp"));
        assert!(ports.contains_key("443/tcp"), "as Docker: {ports:?}");
        assert!(apply_change(&mut c, "FROB x").is_err());
        assert!(apply_change(&mut c, "WORKDIR").is_err());
    }
}
