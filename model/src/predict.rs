//! Greedy decoding of a prepared example dataset (`conveyor task prepare`'s) with a
//! checkpoint: one predicted string per example, beside its input and reference text. The
//! model knows no tasks: scoring the predictions is the caller's (conveyor-tasks' metrics,
//! through `conveyor eval`).

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use conveyor_pipeline::examples::ExamplesManifest;
use conveyor_pipeline::tokenize::Vocab;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint;
use crate::seq2seq::Seq2Seq;
use crate::train::TrainError;

/// What to decode.
#[derive(Debug, Clone)]
pub struct PredictConfig {
    pub checkpoint: PathBuf,
    /// A directory written by `conveyor task prepare`.
    pub data: PathBuf,
    /// The SentencePiece model (default: the one the data manifest names).
    pub vocab: Option<PathBuf>,
    pub batch_size: usize,
    /// Decode only the first N examples.
    pub limit: Option<usize>,
    pub device: Device,
}

/// One decoded example.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The input text as prepared.
    pub inputs: String,
    /// The reference target text.
    pub target: String,
    /// The model's greedy output, decoded and trimmed.
    pub prediction: String,
    /// The example's category, if the task has them (COGS).
    pub category: Option<String>,
    /// Other acceptable answers, if the task has them (SQuAD's).
    pub answers: Vec<String>,
}

/// One example as stored by `task prepare`.
struct Row {
    inputs: Vec<i64>,
    inputs_text: String,
    target: String,
    category: Option<String>,
    answers: Vec<String>,
}

fn refused(m: String) -> TrainError {
    TrainError::Refused(m)
}

fn read_rows(path: &Path) -> Result<Vec<Row>, TrainError> {
    let bad = |e: &dyn std::fmt::Display| refused(format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| bad(&e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| bad(&e))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        let col = |n: &str| {
            batch.column_by_name(n).cloned().ok_or_else(|| {
                refused(format!(
                    "{}: no `{n}` column: evaluate a directory written by `conveyor task prepare`",
                    path.display()
                ))
            })
        };
        let inputs = col("inputs")?;
        let inputs = inputs.as_list::<i32>();
        let (texts, targets, cats) = (
            col("inputs_pretokenized")?,
            col("targets_pretokenized")?,
            col("category")?,
        );
        let (texts, targets, cats) = (
            texts.as_string::<i32>(),
            targets.as_string::<i32>(),
            cats.as_string::<i32>(),
        );
        // Only the shards of tasks with other answers have the column.
        let answers = batch.column_by_name(conveyor_pipeline::examples::ANSWERS_COLUMN);
        let answers = match answers.map(|a| a.as_list_opt::<i32>()) {
            None => None,
            Some(Some(a)) if a.values().as_string_opt::<i32>().is_some() => Some(a),
            Some(_) => {
                return Err(refused(format!(
                    "{}: its `answers` column is not a list of strings: evaluate a directory written by `conveyor task prepare`",
                    path.display()
                )))
            }
        };
        for r in 0..batch.num_rows() {
            let ids = inputs.value(r);
            let ids: Vec<i64> = match ids.data_type() {
                arrow::datatypes::DataType::UInt16 => ids
                    .as_primitive::<arrow::datatypes::UInt16Type>()
                    .values()
                    .iter()
                    .map(|&x| x as i64)
                    .collect(),
                _ => ids
                    .as_primitive::<arrow::datatypes::UInt32Type>()
                    .values()
                    .iter()
                    .map(|&x| x as i64)
                    .collect(),
            };
            rows.push(Row {
                inputs: ids,
                inputs_text: texts.value(r).to_string(),
                target: targets.value(r).to_string(),
                category: (!cats.is_null(r)).then(|| cats.value(r).to_string()),
                answers: answers.map_or_else(Vec::new, |a| {
                    let v = a.value(r);
                    let v = v.as_string::<i32>();
                    (0..v.len()).map(|i| v.value(i).to_string()).collect()
                }),
            });
        }
    }
    Ok(rows)
}

/// Decodes every example of `cfg.data` in order (with `cfg.limit`, the first rows of each
/// shard in proportion to its size: see [`proportional`]).
pub fn predict(cfg: &PredictConfig) -> Result<Vec<Prediction>, TrainError> {
    let m = ExamplesManifest::read(&cfg.data)?;
    let vocab_path = cfg
        .vocab
        .clone()
        .unwrap_or_else(|| PathBuf::from(&m.vocab.path));
    // The manifest's path is as prepare was given it: relative to where it ran.
    if cfg.vocab.is_none() && !vocab_path.is_file() {
        return Err(refused(format!(
            "{}'s manifest names its vocabulary {}, which is not a file from here: pass --vocab with the SentencePiece model it was prepared with",
            cfg.data.display(),
            vocab_path.display()
        )));
    }
    let tok = conveyor_pipeline::tokenize::load(
        &vocab_path,
        conveyor_pipeline::tokenize::TokenizerKind::Native,
    )?;
    let vocab: &Vocab = tok.vocab();
    if vocab.sha256 != m.vocab.sha256 {
        return Err(refused(format!(
            "{} is not the vocabulary {} was prepared with ({})",
            vocab_path.display(),
            cfg.data.display(),
            m.vocab.path
        )));
    }
    let model_cfg = checkpoint::read_config(&cfg.checkpoint)?;
    checkpoint::check_vocab(&cfg.checkpoint, &cfg.data, &m.vocab.sha256)?;
    if !model_cfg.takes_vocab(m.settings.vocab_size as usize) {
        return Err(refused(format!(
            "the checkpoint has {} embeddings, the data {} ids",
            model_cfg.vocab_size, m.settings.vocab_size
        )));
    }
    let lengths = m.settings.lengths;
    crate::train::data::fits_positions(
        &model_cfg,
        &cfg.data,
        lengths.inputs_length,
        lengths.targets_length,
        false,
    )?;
    let mut vs = nn::VarStore::new(cfg.device);
    let model = Seq2Seq::new(&vs.root(), &model_cfg)?;
    checkpoint::load_weights(&cfg.checkpoint, &mut vs)?;
    let mut shards = Vec::new();
    for s in &m.shards {
        // Read whole: the full checksum, and every id within the model's embeddings.
        let path = conveyor_pipeline::manifest::shard_path(&cfg.data, &s.file)?;
        conveyor_pipeline::shard::check_file(&path, &s.sha256, s.bytes)?;
        let shard = read_rows(&path)?;
        let limit = model_cfg.vocab_size as i64;
        if let Some((r, id)) = shard.iter().enumerate().find_map(|(r, row)| {
            let bad = row.inputs.iter().find(|&&id| !(0..limit).contains(&id));
            bad.map(|&id| (r, id))
        }) {
            return Err(refused(format!(
                "{}: row {r} holds token id {id}, not below the model's vocabulary size {limit}: the data is damaged or was made with another vocabulary",
                path.display()
            )));
        }
        shards.push(shard);
    }
    let sizes: Vec<usize> = shards.iter().map(Vec::len).collect();
    let take = match cfg.limit {
        Some(n) => proportional(&sizes, n),
        None => sizes,
    };
    let rows: Vec<_> = shards
        .into_iter()
        .zip(take)
        .flat_map(|(shard, k)| shard.into_iter().take(k))
        .collect();
    let eos = m.settings.eos_id as i64;
    let max_len = lengths.targets_length;
    let mut predictions = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(cfg.batch_size.max(1)) {
        let width = chunk.iter().map(|r| r.inputs.len()).max().unwrap_or(1);
        let mut ids = vec![0i64; chunk.len() * width];
        let mut mask = vec![0f32; chunk.len() * width];
        for (i, r) in chunk.iter().enumerate() {
            ids[i * width..i * width + r.inputs.len()].copy_from_slice(&r.inputs);
            mask[i * width..i * width + r.inputs.len()].fill(1.0);
        }
        let shape = [chunk.len() as i64, width as i64];
        let x = Tensor::from_slice(&ids).view(shape).to(cfg.device);
        let xm = Tensor::from_slice(&mask)
            .view(shape)
            .to(cfg.device)
            .to_kind(Kind::Float);
        for (r, out) in chunk.iter().zip(model.greedy(&x, &xm, max_len, eos)) {
            let body: Vec<u32> = out
                .iter()
                .take_while(|&&t| t != eos)
                .map(|&t| t as u32)
                .collect();
            predictions.push(Prediction {
                inputs: r.inputs_text.clone(),
                target: r.target.clone(),
                prediction: vocab.decode(&body).trim().to_string(),
                category: r.category.clone(),
                answers: r.answers.clone(),
            });
        }
    }
    Ok(predictions)
}

/// How many rows a limit of `n` takes from each of shards of `sizes`: shares in proportion to
/// their sizes (largest remainders first, then shard order), so that every input file (one
/// shard each: COGS's dev and generalisation files) is sampled, not only the first; each
/// shard is in a seeded random order, so its first rows are a random sample of it.
fn proportional(sizes: &[usize], n: usize) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    if n >= total {
        return sizes.to_vec();
    }
    // Shard s's exact share is s * n / total: its floor first, then one more row each for
    // the largest remainders (ties in shard order: the sort is stable).
    let scaled = |s: usize| s as u128 * n as u128;
    let mut take: Vec<usize> = sizes
        .iter()
        .map(|&s| (scaled(s) / total as u128) as usize)
        .collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(scaled(sizes[i]) % total as u128));
    let left = n - take.iter().sum::<usize>();
    for &i in order.iter().take(left) {
        take[i] += 1;
    }
    take
}

#[cfg(test)]
mod tests {
    use super::proportional;

    #[test]
    fn a_limit_samples_every_shard_in_proportion() {
        // COGS: 20 dev rows and 20 generalisation rows, limit 20 (it took the dev file only).
        assert_eq!(proportional(&[20, 20], 20), vec![10, 10]);
        assert_eq!(proportional(&[3000, 21000], 100), vec![13, 87]);
        // Largest remainders get the rows left over; ties go to the earlier shard.
        assert_eq!(proportional(&[5, 3, 2], 5), vec![3, 1, 1]);
        assert_eq!(proportional(&[1, 1, 1], 2), vec![1, 1, 0]);
        assert_eq!(proportional(&[4, 0, 6], 100), vec![4, 0, 6]);
        for n in 0..40 {
            let t = proportional(&[7, 13, 0, 19], n);
            assert_eq!(t.iter().sum::<usize>(), n.min(39));
            assert!(t.iter().zip([7, 13, 0, 19]).all(|(k, s)| *k <= s));
        }
    }

    /// The reference fine-tuning script (which a study runs to compare with transformers)
    /// scores the rows `eval --limit` scores: its `proportional` (taken from the script alone,
    /// without the script's torch imports) equals this one on random shard sizes and
    /// limits, ties included.
    #[test]
    fn the_reference_script_takes_the_same_rows() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |m: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % m) as usize
        };
        let cases: Vec<(Vec<usize>, usize)> = (0..300)
            .map(|_| {
                let sizes: Vec<usize> = (0..1 + next(6)).map(|_| next(4) * next(50)).collect();
                let total: usize = sizes.iter().sum();
                (sizes, next(total as u64 + 3))
            })
            .collect();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/reference_finetune.py"
        );
        let code = format!(
            "import ast, json, sys\ntree = ast.parse(open({script:?}).read())\nf = [d for d in tree.body if isinstance(d, ast.FunctionDef) and d.name == 'proportional']\nscope = {{}}\nexec(compile(ast.Module(body=f, type_ignores=[]), 'proportional', 'exec'), scope)\nprint(json.dumps([scope['proportional'](s, n) for s, n in json.load(sys.stdin)]))"
        );
        let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = std::process::Command::new(python)
            .args(["-c", &code])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run Python (CONVEYOR_PYTHON)");
        let input = serde_json::to_vec(&cases).unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "the reference script failed");
        let theirs: Vec<Vec<usize>> = serde_json::from_slice(&out.stdout).unwrap();
        for ((sizes, n), t) in cases.iter().zip(&theirs) {
            assert_eq!(&proportional(sizes, *n), t, "sizes {sizes:?}, limit {n}");
        }
    }
}
