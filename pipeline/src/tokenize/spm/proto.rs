//! A minimal reader for SentencePiece's `ModelProto` (protobuf wire format).
//!
//! Only the fields the encoder needs are decoded: the pieces (text, score, type), the trainer
//! spec's model type, byte fallback and whitespace settings, and the normalizer spec. Unknown
//! fields are skipped, as protobuf requires, so newer model files still load.

use std::fmt;

/// Why a model file could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError(pub String);

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The type of a vocabulary piece (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    fn from_wire(v: u64) -> Result<Self, ProtoError> {
        Ok(match v {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            other => return Err(ProtoError(format!("unknown piece type {other}"))),
        })
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

/// `TrainerSpec.ModelType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    Unigram,
    Bpe,
    Word,
    Char,
}

/// The trainer settings that matter at encoding time.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerSpec {
    pub model_type: ModelType,
    pub byte_fallback: bool,
    pub treat_whitespace_as_suffix: bool,
    pub split_by_whitespace: bool,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        Self {
            model_type: ModelType::Unigram,
            byte_fallback: false,
            treat_whitespace_as_suffix: false,
            split_by_whitespace: true,
        }
    }
}

/// `NormalizerSpec`, with protobuf defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizerSpec {
    pub name: String,
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// The decoded model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelProto {
    pub pieces: Vec<Piece>,
    pub trainer: TrainerSpec,
    pub normalizer: NormalizerSpec,
}

/// A cursor over protobuf wire bytes.
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Value<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64,
    Bytes(&'a [u8]),
}

impl<'a> Wire<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| ProtoError("truncated varint".into()))?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(ProtoError("varint longer than 10 bytes".into()))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| ProtoError("truncated field".into()))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next (field number, value), or None at the end.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, ProtoError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let n = self.varint()? as usize;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            t => return Err(ProtoError(format!("unsupported wire type {t}"))),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn utf8(b: &[u8], what: &str) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError(format!("{what} is not valid UTF-8")))
}

fn parse_piece(buf: &[u8]) -> Result<Piece, ProtoError> {
    let mut p = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    let mut w = Wire::new(buf);
    while let Some((field, v)) = w.next_field()? {
        match (field, v) {
            (1, Value::Bytes(b)) => p.piece = utf8(b, "piece")?,
            (2, Value::Fixed32(bits)) => p.score = f32::from_bits(bits),
            (3, Value::Varint(t)) => p.kind = PieceType::from_wire(t)?,
            _ => {}
        }
    }
    Ok(p)
}

fn parse_trainer(buf: &[u8]) -> Result<TrainerSpec, ProtoError> {
    let mut t = TrainerSpec::default();
    let mut w = Wire::new(buf);
    while let Some((field, v)) = w.next_field()? {
        match (field, v) {
            (3, Value::Varint(m)) => {
                t.model_type = match m {
                    1 => ModelType::Unigram,
                    2 => ModelType::Bpe,
                    3 => ModelType::Word,
                    4 => ModelType::Char,
                    other => return Err(ProtoError(format!("unknown model type {other}"))),
                }
            }
            (22, Value::Varint(b)) => t.split_by_whitespace = b != 0,
            (24, Value::Varint(b)) => t.treat_whitespace_as_suffix = b != 0,
            (35, Value::Varint(b)) => t.byte_fallback = b != 0,
            _ => {}
        }
    }
    Ok(t)
}

fn parse_normalizer(buf: &[u8]) -> Result<NormalizerSpec, ProtoError> {
    let mut n = NormalizerSpec::default();
    let mut w = Wire::new(buf);
    while let Some((field, v)) = w.next_field()? {
        match (field, v) {
            (1, Value::Bytes(b)) => n.name = utf8(b, "normalizer name")?,
            (2, Value::Bytes(b)) => n.precompiled_charsmap = b.to_vec(),
            (3, Value::Varint(b)) => n.add_dummy_prefix = b != 0,
            (4, Value::Varint(b)) => n.remove_extra_whitespaces = b != 0,
            (5, Value::Varint(b)) => n.escape_whitespaces = b != 0,
            _ => {}
        }
    }
    Ok(n)
}

/// Decodes a serialised `ModelProto`.
pub fn parse_model(buf: &[u8]) -> Result<ModelProto, ProtoError> {
    let mut m = ModelProto::default();
    let mut w = Wire::new(buf);
    while let Some((field, v)) = w.next_field()? {
        match (field, v) {
            (1, Value::Bytes(b)) => m.pieces.push(parse_piece(b)?),
            (2, Value::Bytes(b)) => m.trainer = parse_trainer(b)?,
            (3, Value::Bytes(b)) => m.normalizer = parse_normalizer(b)?,
            _ => {}
        }
    }
    if m.pieces.is_empty() {
        return Err(ProtoError("the model has no pieces".into()));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(field: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    #[test]
    fn decodes_pieces_and_specs_and_skips_unknown_fields() {
        let mut piece = Vec::new();
        bytes_field(1, "▁the".as_bytes(), &mut piece);
        varint(2 << 3 | 5, &mut piece);
        piece.extend_from_slice(&(-3.5f32).to_le_bytes());
        varint(3 << 3, &mut piece);
        varint(4, &mut piece);
        let mut norm = Vec::new();
        bytes_field(1, b"nmt_nfkc", &mut norm);
        varint(3 << 3, &mut norm);
        varint(0, &mut norm);
        let mut model = Vec::new();
        bytes_field(1, &piece, &mut model);
        bytes_field(3, &norm, &mut model);
        varint(99 << 3, &mut model); // an unknown varint field
        varint(7, &mut model);
        let m = parse_model(&model).unwrap();
        assert_eq!(m.pieces.len(), 1);
        assert_eq!(m.pieces[0].piece, "▁the");
        assert_eq!(m.pieces[0].score, -3.5);
        assert_eq!(m.pieces[0].kind, PieceType::UserDefined);
        assert_eq!(m.normalizer.name, "nmt_nfkc");
        assert!(!m.normalizer.add_dummy_prefix);
        assert!(m.normalizer.remove_extra_whitespaces);
    }

    #[test]
    fn truncated_input_is_an_error() {
        let mut model = Vec::new();
        bytes_field(1, b"abcdef", &mut model);
        model.truncate(model.len() - 2);
        assert!(parse_model(&model).is_err());
        assert!(parse_model(&[]).is_err());
    }
}
