//! `Descriptor`, `Manifest` and `ImageIndex` as the OCI image spec and Docker
//! schema2 define them. Unknown fields are kept, so what we re-serialize loses
//! nothing we did not understand.

use super::digest::Digest;
use super::json::{JsonError, from_json_value};
use super::media_type as mt;
use super::platform::Platform;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type Annotations = BTreeMap<String, String>;
type Extra = serde_json::Map<String, serde_json::Value>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Annotations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        }
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }

    pub fn set_annotation(&mut self, key: &str, value: &str) {
        self.annotations
            .get_or_insert_with(Default::default)
            .insert(key.to_string(), value.to_string());
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Annotations>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Manifest {
    /// Its layers' digests, bottom first.
    pub fn layer_digests(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.digest).collect()
    }

    /// A new OCI manifest for `config` and `layers`.
    pub fn new_oci(config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Manifest {
            schema_version: 2,
            media_type: Some(mt::OCI_MANIFEST.to_string()),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: None,
            extra: Extra::new(),
        }
    }

    /// The manifest's own media type, from its field or the config's type.
    pub fn media_type(&self) -> &str {
        match &self.media_type {
            Some(m) => m,
            None if self.config.media_type == mt::DOCKER_CONFIG => mt::DOCKER_MANIFEST,
            None => mt::OCI_MANIFEST,
        }
    }

    /// Whether this manifest describes a runnable image (not an artifact).
    pub fn is_image(&self) -> bool {
        mt::is_config(&self.config.media_type)
            && self.artifact_type.is_none()
            && self.layers.iter().all(|l| mt::is_layer(&l.media_type))
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Annotations>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ImageIndex {
    pub fn new_oci(manifests: Vec<Descriptor>) -> Self {
        ImageIndex {
            schema_version: 2,
            media_type: Some(mt::OCI_INDEX.to_string()),
            artifact_type: None,
            manifests,
            subject: None,
            annotations: None,
            extra: Extra::new(),
        }
    }

    pub fn media_type(&self) -> &str {
        self.media_type.as_deref().unwrap_or(mt::OCI_INDEX)
    }

    /// The manifest for `want` among the index's entries: an exact variant
    /// match first, then any entry whose platform satisfies it.
    pub fn select(&self, want: &Platform) -> Option<&Descriptor> {
        let candidates = || {
            self.manifests
                .iter()
                .filter(|d| mt::is_manifest(&d.media_type) || mt::is_index(&d.media_type))
        };
        candidates()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p == want || (p.satisfies(want) && p.variant == want.variant))
            })
            .or_else(|| {
                candidates().find(|d| d.platform.as_ref().is_some_and(|p| p.satisfies(want)))
            })
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A manifest blob of either kind.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // short-lived, parsed once per use
pub enum ManifestKind {
    Image(Manifest),
    Index(ImageIndex),
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error("unsupported manifest media type {0:?}")]
    MediaType(String),
    #[error("unsupported manifest schema version {0}")]
    SchemaVersion(u64),
}

impl ManifestKind {
    /// Parses a manifest or index, using its mediaType field where present and
    /// its shape where not (both are optional in older documents).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(JsonError::Syntax)?;
        let media = v.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
        let version = v.get("schemaVersion").and_then(|s| s.as_u64()).unwrap_or(0);
        if version != 2 {
            return Err(ParseError::SchemaVersion(version));
        }
        if mt::is_index(media) || (media.is_empty() && v.get("manifests").is_some()) {
            Ok(ManifestKind::Index(from_json_value(v, "image index")?))
        } else if mt::is_manifest(media) || (media.is_empty() && v.get("config").is_some()) {
            Ok(ManifestKind::Image(from_json_value(v, "image manifest")?))
        } else {
            Err(ParseError::MediaType(media.to_string()))
        }
    }

    pub fn media_type(&self) -> &str {
        match self {
            ManifestKind::Image(m) => m.media_type(),
            ManifestKind::Index(i) => i.media_type(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds_and_keeps_unknown_fields() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{d}","size":2}},"layers":[],"x-extra":7}}"#,
            mt::DOCKER_MANIFEST,
            mt::DOCKER_CONFIG
        );
        let ManifestKind::Image(man) = ManifestKind::parse(m.as_bytes()).unwrap() else {
            panic!("expected a manifest")
        };
        assert!(man.is_image());
        assert_eq!(man.extra.get("x-extra"), Some(&serde_json::json!(7)));
        let back = String::from_utf8(man.to_json()).unwrap();
        assert!(back.contains("\"x-extra\":7"), "{back}");

        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{d}","size":3,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            mt::OCI_MANIFEST
        );
        let ManifestKind::Index(idx) = ManifestKind::parse(i.as_bytes()).unwrap() else {
            panic!("expected an index")
        };
        let arm = Platform::parse("linux/arm64").unwrap();
        assert!(idx.select(&arm).is_some());
        assert!(
            idx.select(&Platform::parse("linux/amd64").unwrap())
                .is_none()
        );
    }

    #[test]
    fn a_wrong_shape_is_not_called_bad_json() {
        let no_config = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","layers":[]}}"#,
            mt::OCI_MANIFEST
        );
        let bad_digest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"sha256:00","size":2}}}}"#,
            mt::OCI_CONFIG
        );
        let bad_index = r#"{"schemaVersion":2,"manifests":[{"digest":"sha256:00"}]}"#;
        let cases: &[(&[u8], &str)] = &[
            (
                b"{\"schemaVersion\": 2,",
                "not valid JSON: EOF while parsing",
            ),
            (
                no_config.as_bytes(),
                "not a valid image manifest: missing field `config`",
            ),
            (bad_digest.as_bytes(), "not a valid image manifest: "),
            (bad_index.as_bytes(), "not a valid image index: "),
        ];
        for (bytes, want) in cases {
            let err = ManifestKind::parse(bytes).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[test]
    fn rejects_non_json_and_schema1() {
        assert!(matches!(
            ManifestKind::parse(b"nope"),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            ManifestKind::parse(br#"{"schemaVersion":1}"#),
            Err(ParseError::SchemaVersion(1))
        ));
    }
}
