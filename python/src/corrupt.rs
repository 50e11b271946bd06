//! `conveyor.span_corruption` and `conveyor.lengths`: T5's span corruption on token ids, the
//! same examples `conveyor corrupt` writes for the same seed, and T5's `random_spans_helper`.

use conveyor_pipeline::corrupt::{
    check_density, check_spans, random_spans_helper, Chunking, Corruption, Keys, Pieces, Scratch,
    SpanCorruption,
};
use conveyor_pipeline::examples::Example;
use numpy::{
    IntoPyArray, PyArray1, PyArrayDescrMethods, PyReadonlyArray1, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use crate::ConveyorError;

/// Examples' inputs or targets, one int32 array each.
type Arrays<'py> = Vec<Bound<'py, PyArray1<i32>>>;

/// The ids of one document: a 1-D integer numpy array or a sequence of ints.
fn ids_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    fn check(v: impl Iterator<Item = i64>) -> PyResult<Vec<u32>> {
        v.map(|x| {
            u32::try_from(x)
                .map_err(|_| ConveyorError::new_err(format!("token id {x} is not a vocabulary id")))
        })
        .collect()
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, i32>>() {
        return check(a.as_array().iter().map(|&x| x as i64));
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, i64>>() {
        return check(a.as_array().iter().copied());
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, u32>>() {
        return Ok(a.as_array().to_vec());
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, u16>>() {
        return Ok(a.as_array().iter().map(|&x| x as u32).collect());
    }
    let v: Vec<i64> = obj.extract()?;
    check(v.into_iter())
}

/// Whether `obj` is one document (a 1-D integer array, or a sequence of ints) rather than
/// a list of them; a 2-D array is refused (its padding would be corrupted as tokens).
fn is_document(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    if let Ok(a) = obj.cast::<PyUntypedArray>() {
        let kind = a.dtype().kind();
        if a.ndim() != 1 {
            return Err(ConveyorError::new_err(format!(
                "tokens is a {}-D array: give one document (1-D) or a list of documents (padded rows would be corrupted as tokens)",
                a.ndim()
            )));
        }
        // An object array holds documents; an integer array is one; any other kind
        // (floats, strings) is no ids ("iteration over a 0-d array" said less).
        if kind != b'O' && kind != b'i' && kind != b'u' {
            return Err(ConveyorError::new_err(format!(
                "tokens is an array of {}: give integer ids (int32, int64, uint16 or uint32)",
                a.dtype()
            )));
        }
        return Ok(kind == b'i' || kind == b'u');
    }
    Ok(obj
        .get_item(0)
        .is_ok_and(|first| first.extract::<i64>().is_ok()))
}

/// One document, or the documents of one token shard in order.
fn documents(tokens: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u32>>> {
    let tokens = &crate::as_array(tokens)?;
    if is_document(tokens)? {
        return Ok(vec![ids_of(tokens)?]);
    }
    tokens
        .try_iter()
        .map_err(|_| {
            ConveyorError::new_err(
                "tokens must be an array of ids (numpy, or a CPU tensor) or a list of them",
            )
        })?
        .map(|d| ids_of(&crate::as_array(&d?)?))
        .collect()
}

/// Span-corrupts documents as `conveyor corrupt` does a token shard: T5's chunking (a
/// document over 65,536 tokens keeps one random chunk; groups of 128 documents concatenated
/// and cut into pieces of the raw length `lengths()` gives), then one example per piece.
/// `tokens` is one document or the documents of shard `shard`; with the same seed, epoch and
/// shard the examples equal those `conveyor corrupt` writes. `vocab_size` counts the
/// SentencePiece pieces: sentinels are `vocab_size + extra_ids - 1` counting down.
/// Returns (inputs, targets): lists of int32 arrays, each ending in EOS.
#[pyfunction]
#[pyo3(signature = (tokens, *, inputs_length, seed, vocab_size, noise_density = 0.15, mean_span_length = 3.0, extra_ids = 100, epoch = 0, shard = 0, eos_id = 1))]
#[allow(clippy::too_many_arguments)]
pub fn span_corruption<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    inputs_length: usize,
    seed: u64,
    vocab_size: u32,
    noise_density: f64,
    mean_span_length: f64,
    extra_ids: u32,
    epoch: u64,
    shard: u64,
    eos_id: u32,
) -> PyResult<(Arrays<'py>, Arrays<'py>)> {
    let lengths = random_spans_helper(inputs_length, noise_density, mean_span_length)
        .map_err(|e| ConveyorError::new_err(e.0))?;
    // As `conveyor corrupt` and the loader: no more spans than sentinels (past them the
    // sentinel ids would count down into real pieces), and EOS a piece of the vocabulary.
    check_spans(
        inputs_length,
        noise_density,
        mean_span_length,
        extra_ids,
        lengths,
    )
    .map_err(|e| ConveyorError::new_err(e.to_string()))?;
    if eos_id >= vocab_size {
        return Err(ConveyorError::new_err(format!(
            "eos_id {eos_id} is not below vocab_size {vocab_size}: EOS is a piece of the vocabulary"
        )));
    }
    let total = vocab_size.checked_add(extra_ids).ok_or_else(|| {
        ConveyorError::new_err(format!(
            "vocab_size {vocab_size} + extra_ids {extra_ids} overflows"
        ))
    })?;
    let docs = documents(tokens)?;
    if let Some(bad) = docs.iter().flatten().find(|&&t| t >= vocab_size) {
        return Err(ConveyorError::new_err(format!(
            "token id {bad} is not below vocab_size {vocab_size}: the ids come from another vocabulary"
        )));
    }
    let corruption = SpanCorruption {
        lengths,
        density: noise_density as f32,
        mean: mean_span_length as f32,
        vocab_size: total,
        eos: eos_id,
    };
    let keys = Keys { seed, epoch, shard };
    let chunking = Chunking {
        max_chunk: Chunking::T5_MAX_CHUNK,
        group_docs: Chunking::T5_GROUP_DOCS,
        piece: lengths.tokens_length,
    };
    let examples = py.detach(|| {
        let mut out = Vec::new();
        let mut pieces = Pieces::new(chunking, keys);
        let mut scratch = Scratch::default();
        let mut emit = |index: u64, piece: &[u32]| {
            let mut ex = Example::default();
            corruption.example(keys, index, piece, &mut scratch, &mut ex);
            out.push(ex);
        };
        for d in &docs {
            pieces.push(d, &mut emit);
        }
        pieces.finish(&mut emit);
        out
    });
    let arr = |v: &[u32]| {
        v.iter()
            .map(|&x| x as i32)
            .collect::<Vec<i32>>()
            .into_pyarray(py)
    };
    Ok((
        examples.iter().map(|e| arr(&e.inputs)).collect(),
        examples.iter().map(|e| arr(&e.targets)).collect(),
    ))
}

/// T5's `random_spans_helper`: (tokens_length, targets_length) for `inputs_length`, the raw
/// tokens per piece and the targets length they turn into.
#[pyfunction]
#[pyo3(signature = (inputs_length, noise_density = 0.15, mean_span_length = 3.0))]
pub fn lengths(
    inputs_length: usize,
    noise_density: f64,
    mean_span_length: f64,
) -> PyResult<(usize, usize)> {
    let l = random_spans_helper(inputs_length, noise_density, mean_span_length)
        .map_err(|e| ConveyorError::new_err(e.0))?;
    // As span_corruption and every command refuse it.
    check_density(noise_density).map_err(|e| ConveyorError::new_err(e.to_string()))?;
    Ok((l.tokens_length, l.targets_length))
}
