//! What a corpus record is, as the manifest records it and the sources produce it: why a
//! record was skipped ([`ProblemKind`]), how `.txt` files become documents ([`TxtMode`]),
//! and the size limit of one record. A leaf module, so that manifests (which count skipped
//! records) need not depend on the sources (which read URLs through `remote`).

/// What kind of record was skipped.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    MalformedJson,
    InvalidUtf8,
    MissingText,
    Empty,
    Tokenizer,
    /// The text field is JSON `null`.
    NullText,
    /// Above `--max-document-bytes`.
    TooLong,
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 7] = [
        Self::MalformedJson,
        Self::InvalidUtf8,
        Self::MissingText,
        Self::Empty,
        Self::Tokenizer,
        Self::NullText,
        Self::TooLong,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::MissingText => "missing_text",
            Self::Empty => "empty",
            Self::Tokenizer => "tokenizer",
            Self::NullText => "null_text",
            Self::TooLong => "too_long",
        }
    }
}

/// How `.txt` inputs become documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxtMode {
    /// The whole file is one document.
    #[default]
    File,
    /// Every line is a document (blank lines are counted as empty documents).
    Line,
}

/// The default `--max-document-bytes`: 16 MiB, far above any real web page.
pub const MAX_DOCUMENT_BYTES: usize = 16 << 20;
