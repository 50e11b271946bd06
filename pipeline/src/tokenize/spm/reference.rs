//! The SentencePiece library itself (C++, through the `sentencepiece` crate): the oracle the
//! native encoder is tested against, and `--tokenizer reference`.

use std::path::Path;

use sentencepiece::SentencePieceProcessor;

use crate::error::Error;
use crate::tokenize::{EncodeError, Tokenizer, Vocab};

pub struct Reference {
    processor: SentencePieceProcessor,
    vocab: Vocab,
}

impl Reference {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let bytes = super::super::read_model(path)?;
        let processor =
            SentencePieceProcessor::from_serialized_proto(&bytes).map_err(|e| Error::Vocab {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        // The vocabulary listing comes from the same proto reader the native encoder uses.
        let native_view = super::proto::parse_model(&bytes).map_err(|e| Error::Vocab {
            path: path.to_path_buf(),
            reason: e.0,
        })?;
        use super::proto::PieceType;
        let find = |name: &str| processor.piece_to_id(name).ok().flatten();
        let vocab = Vocab {
            pieces: native_view.pieces.iter().map(|p| p.piece.clone()).collect(),
            control: native_view
                .pieces
                .iter()
                .map(|p| matches!(p.kind, PieceType::Control | PieceType::Unknown))
                .collect(),
            unk_id: processor.unk_id(),
            eos_id: processor.eos_id().or_else(|| find("</s>")),
            pad_id: processor.pad_id(),
            bos_id: processor.bos_id(),
            sha256: crate::manifest::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
        };
        Ok(Self { processor, vocab })
    }
}

impl Tokenizer for Reference {
    fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    fn encode_into(&self, text: &str, out: &mut Vec<u32>) -> Result<(), EncodeError> {
        let pieces = self
            .processor
            .encode(text)
            .map_err(|e| EncodeError(e.to_string()))?;
        out.extend(pieces.iter().map(|p| p.id));
        Ok(())
    }
}
