//! Reading the spec's JSON documents: an error says whether the bytes are
//! not JSON at all or JSON of the wrong shape, naming the document.

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("not valid JSON: {0}")]
    Syntax(serde_json::Error),
    /// Valid JSON that is not a `what` (a missing field, a wrong type).
    #[error("not a valid {what}: {source}")]
    Shape {
        what: &'static str,
        source: serde_json::Error,
    },
}

/// Parses `bytes` as a `what` (e.g. "image config"). The syntax is checked
/// first and whole: a typed parse would call `{nope` a map of the wrong type.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, JsonError> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(JsonError::Syntax)?;
    from_json_value(v, what)
}

/// Reads `v`, valid JSON, as a `what`.
pub fn from_json_value<T: DeserializeOwned>(
    v: serde_json::Value,
    what: &'static str,
) -> Result<T, JsonError> {
    serde_json::from_value(v).map_err(|source| JsonError::Shape { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // only its shape matters
    struct Doc {
        layers: Vec<String>,
    }

    #[test]
    fn bad_syntax_and_a_wrong_shape_are_told_apart() {
        let cases: &[(&[u8], &str)] = &[
            (b"nope", "not valid JSON: expected ident"),
            (b"{nope", "not valid JSON: key must be a string"),
            (b"{\"layers\": [", "not valid JSON: EOF while parsing"),
            (b"{}", "not a valid doc: missing field `layers`"),
            (
                b"{\"layers\": 3}",
                "not a valid doc: invalid type: integer `3`",
            ),
            (b"[1]", "not a valid doc: invalid type: integer `1`"),
        ];
        for (bytes, want) in cases {
            let err = from_json::<Doc>(bytes, "doc").unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }
}
