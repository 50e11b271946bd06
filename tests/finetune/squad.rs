//! A question-answering task of one's own: a JSON-lines file through a task file, scored by
//! SQuAD's metric against every acceptable answer, through prepare, finetune, eval and
//! `task score`.

use super::*;

/// A seeded SQuAD-like file: 60 questions whose answers are a city or "in" the city, one
/// line that is not JSON and one object without answers.
fn questions(path: &std::path::Path) {
    let names = ["Ann", "Bob", "Cleo", "Dan", "Eve", "Finn"];
    let cities = ["Paris", "Lyon", "Oslo", "Rome", "Kyiv", "Lima"];
    let mut lines = Vec::new();
    for i in 0..60 {
        let (name, city) = (names[i % 6], cities[(i * 7 / 6) % 6]);
        let context = format!("{name} moved to {city} in {}.", 1990 + i);
        let at = context.find(city).unwrap();
        lines.push(
            serde_json::json!({
                "id": i,
                "meta": {"title": format!("{name} {i}")},
                "question": format!("Where did {name} move?"),
                "context": context,
                "answers": {"text": [city, format!("in {city}")], "answer_start": [at, at - 3]},
            })
            .to_string(),
        );
        if i == 10 {
            lines.push("{\"question\": oops".into());
        }
        if i == 20 {
            lines.push(serde_json::json!({"question": "?", "context": "none"}).to_string());
        }
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn a_json_lines_question_answering_task_is_scored_against_every_answer() {
    let dir = tmp_dir("squad-task");
    let (data, spec) = (dir.join("qa.jsonl"), dir.join("qa.toml"));
    questions(&data);
    std::fs::write(
        &spec,
        concat!(
            "name = \"city_qa\"\nformat = \"jsonl\"\n",
            "input_template = \"question: {question} context: {context} ({meta.title})\"\n",
            "target_template = \"{answers.text.0}\"\nanswers_column = \"answers.text\"\n",
            "metric = \"squad\"\n"
        ),
    )
    .unwrap();
    let (d, s) = (data.to_str().unwrap(), spec.to_str().unwrap());
    let show = ok(&[
        "task",
        "show",
        "city_qa",
        "--task-file",
        s,
        "--input",
        d,
        "-n",
        "1",
    ]);
    assert!(
        show.contains("question: Where did Ann move? context: Ann moved to Paris in 1990. (Ann 0)")
            && show.contains("read 62 rows: 60 examples, 2 skipped"),
        "{show}"
    );
    // The skipped rows are named by line: the one that is not JSON, the one without fields.
    assert!(
        show.contains("skipped qa.jsonl:12: not JSON")
            && show.contains("skipped qa.jsonl:23: no field"),
        "{show}"
    );
    // answers_column with another metric would be read and never scored: refused.
    let other = dir.join("other.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&other, text.replace("\"squad\"", "\"exact_match\"")).unwrap();
    let o = conveyor(&[
        "task",
        "show",
        "city_qa",
        "--task-file",
        other.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("answers_column is scored only by metric = \"squad\""),
        "{err}"
    );
    // A CSV row holds one answer, its target: answers_column there would read nothing.
    let csv = text.replace("\"jsonl\"", "\"csv\"");
    std::fs::write(&other, csv).unwrap();
    let o = conveyor(&[
        "task",
        "show",
        "city_qa",
        "--task-file",
        other.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("answers_column reads each row's list of answers from JSON lines"),
        "{err}"
    );
    // A field in no object is named once, with the first object's keys.
    std::fs::write(&other, text.replace("{context}", "{contxt}")).unwrap();
    let o = conveyor(&[
        "task",
        "show",
        "city_qa",
        "--task-file",
        other.to_str().unwrap(),
        "--input",
        d,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no object has the field \"contxt\"")
            && err.contains("the first has answers, context, id, meta, question"),
        "{err}"
    );

    // SQuAD's own file, one nested document, is told to become JSON lines.
    let nested = dir.join("squad-v1.1.json");
    std::fs::write(
        &nested,
        "{\"data\": [{\"title\": \"t\", \"paragraphs\": []}], \"version\": \"1.1\"}",
    )
    .unwrap();
    let o = conveyor(&[
        "task",
        "show",
        "city_qa",
        "--task-file",
        s,
        "--input",
        nested.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the file holds one object: a task file reads JSON lines"),
        "{err}"
    );

    let vocab = shared("spiece/t5-spiece.model");
    let (prepared, run) = (dir.join("prepared"), dir.join("run"));
    let p = prepared.to_str().unwrap();
    ok(&[
        "task",
        "prepare",
        "city_qa",
        "--task-file",
        s,
        "--input",
        d,
        "--vocab",
        &vocab,
        "--out",
        p,
        "--inputs-length",
        "48",
        "--targets-length",
        "8",
    ]);
    ok(&[
        "finetune",
        "--task",
        "city_qa",
        "--data",
        p,
        "--arch",
        "transformer",
        "--preset",
        "tiny",
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "-q",
    ]);
    let ckpt = run.join("checkpoints/step-00000002");
    let eval_out = dir.join("eval");
    ok(&[
        "eval",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--data",
        p,
        "--task-file",
        s,
        "--out",
        eval_out.to_str().unwrap(),
        "--limit",
        "6",
        "--device",
        "cpu",
    ]);
    // Every prediction carries its answers, and task score scores the file as eval did.
    let predictions = eval_out.join("predictions.jsonl");
    let text = std::fs::read_to_string(&predictions).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let target = v["target"].as_str().unwrap();
        assert_eq!(
            v["answers"],
            serde_json::json!([target, format!("in {target}")]),
            "{v}"
        );
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_out.join("metrics.json")).unwrap())
            .unwrap();
    assert!(metrics["scores"]["f1"].is_number(), "{metrics}");
    // Each line's `correct` is its exact match as the metric counts it.
    let correct = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["correct"] == true)
        .count();
    let examples = metrics["scores"]["examples"].as_u64().unwrap();
    assert_eq!(examples, 6);
    assert_eq!(
        metrics["scores"]["accuracy"],
        correct as f64 / 6.0,
        "{metrics}"
    );
    let p = predictions.to_str().unwrap();
    let scored = ok(&[
        "task",
        "score",
        "city_qa",
        "--task-file",
        s,
        "--predictions",
        p,
        "--json",
    ]);
    let scored: serde_json::Value = serde_json::from_str(&scored).unwrap();
    assert_eq!(scored, metrics["scores"]);
    // An answer other than the target counts, after SQuAD's normalisation: "In the Lyon!"
    // is "in lyon", the second answer; "Lyon museum" shares one word of two with "Lyon".
    let mine = dir.join("mine.jsonl");
    std::fs::write(
        &mine,
        concat!(
            "{\"prediction\": \"In the Lyon!\", \"target\": \"Lyon\", \"answers\": [\"Lyon\", \"in Lyon\"]}\n",
            "{\"prediction\": \"Lyon museum\", \"target\": \"Lyon\"}\n",
            "{\"prediction\": \"in lima\", \"target\": \"Lima\", \"answers\": \"in Lima\"}\n",
            "{\"prediction\": \"oslo\", \"target\": \"x\", \"answers\": {\"text\": [\"Oslo\"], \"answer_start\": [0]}}\n"
        ),
    )
    .unwrap();
    let m = mine.to_str().unwrap();
    let scored = ok(&[
        "task",
        "score",
        "city_qa",
        "--task-file",
        s,
        "--predictions",
        m,
        "--json",
    ]);
    let scored: serde_json::Value = serde_json::from_str(&scored).unwrap();
    // Answers as a list, one string, or SQuAD's {"text": [...]}.
    assert_eq!(scored["accuracy"], 0.75, "{scored}");
    assert_eq!(
        scored["f1"],
        (1.0 + 2.0 / 3.0 + 1.0 + 1.0) / 4.0,
        "{scored}"
    );
    // Other tasks ignore an answers key of any shape, as they ignore other keys.
    let em = dir.join("em.jsonl");
    std::fs::write(
        &em,
        "{\"prediction\": \"a\", \"target\": \"a\", \"answers\": {\"text\": [\"b\"]}}\n",
    )
    .unwrap();
    let scored = ok(&[
        "task",
        "score",
        "cogs",
        "--predictions",
        em.to_str().unwrap(),
        "--json",
    ]);
    assert!(scored.contains("\"accuracy\": 1.0"), "{scored}");
    std::fs::remove_dir_all(&dir).ok();
}
