//! The tokenizer stage: one trait, a native SentencePiece implementation and the library as
//! a reference, chosen by [`TokenizerKind`].

pub mod spm;

use std::path::Path;

use crate::error::Error;

/// T5's extra ids (the sentinels of span corruption) that follow a vocabulary's pieces in a
/// model's embedding: a model over a vocabulary of N pieces has N + EXTRA_IDS ids.
pub const EXTRA_IDS: usize = 100;

/// What every tokenizer can say about its vocabulary.
#[derive(Debug, Clone)]
pub struct Vocab {
    pub pieces: Vec<String>,
    /// Control and unknown pieces, which decode to nothing.
    pub control: Vec<bool>,
    pub unk_id: u32,
    pub eos_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub bos_id: Option<u32>,
    /// sha256 of the model file.
    pub sha256: String,
}

impl Vocab {
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// A readable rendering of `ids`: pieces joined, `▁` as spaces, control pieces dropped
    /// (`<unk>` shown as ` ⁇ `, as SentencePiece does).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut s = String::new();
        for &id in ids {
            match self.pieces.get(id as usize) {
                Some(_) if id == self.unk_id => s.push_str(" \u{2047} "),
                Some(p) if !self.control[id as usize] => s.push_str(p),
                Some(_) => {}
                None => s.push_str(&format!("<id {id}?>")),
            }
        }
        let s = s.replace('\u{2581}', " ");
        s.strip_prefix(' ').map(str::to_string).unwrap_or(s)
    }
}

/// A document that could not be tokenized.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct EncodeError(pub String);

/// The tokenizer stage.
pub trait Tokenizer: Send + Sync {
    fn vocab(&self) -> &Vocab;
    /// Appends the ids of `text` (no EOS) to `out`.
    fn encode_into(&self, text: &str, out: &mut Vec<u32>) -> Result<(), EncodeError>;

    fn encode(&self, text: &str) -> Result<Vec<u32>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(text, &mut out)?;
        Ok(out)
    }
}

/// Which implementation to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenizerKind {
    /// The native unigram encoder (fast, ids identical to the library).
    #[default]
    Native,
    /// The SentencePiece library through the `sentencepiece` crate (slow, the oracle).
    Reference,
}

impl TokenizerKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Reference => "reference",
        }
    }
}

/// The largest model file read (real ones are a few MB; a 256k-piece model is ~5 MB).
const MAX_MODEL_BYTES: u64 = 1 << 30;

/// The bytes of a model file. A vocabulary path may come from a manifest (its `vocab.path`,
/// checked by sha256 after reading): only a regular file of a model's size is read, so that
/// a named FIFO or device cannot hang or exhaust the reader.
pub fn read_model(path: &Path) -> Result<Vec<u8>, Error> {
    let Some(reason) =
        crate::regular::refusal(path, MAX_MODEL_BYTES).map_err(|e| Error::io(path, e))?
    else {
        return std::fs::read(path).map_err(|e| Error::io(path, e));
    };
    Err(Error::Vocab {
        path: path.to_path_buf(),
        reason: format!("{reason}; give the SentencePiece .model file itself"),
    })
}

/// Loads a SentencePiece model file with the chosen implementation.
pub fn load(path: &Path, kind: TokenizerKind) -> Result<Box<dyn Tokenizer>, Error> {
    Ok(match kind {
        TokenizerKind::Native => Box::new(crate::tokenize::spm::SpmModel::open(path)?),
        TokenizerKind::Reference => {
            Box::new(crate::tokenize::spm::reference::Reference::open(path)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vocabulary path naming a FIFO (which a read would wait on forever) or a folder is
    /// refused before it is opened.
    #[test]
    fn only_regular_files_are_read_as_models() {
        let dir = std::env::temp_dir().join(format!("conveyor-vocab-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("spiece.model");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        for p in [&fifo, &dir] {
            let e = load(p, TokenizerKind::Native)
                .err()
                .expect("refused")
                .to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
