//! `conveyor task list|show`: the text-to-text tasks, their formats, labels and metrics.

use std::path::PathBuf;

use clap::Subcommand;
use conveyor_tasks::{find, read_all, registry};

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Every task with its description.
    List,
    /// A task's formats, labels, metric, and (with --input) the first examples and counts.
    Show {
        task: String,
        /// Files (or folders) of the task's dataset to read.
        #[arg(long)]
        input: Vec<PathBuf>,
        /// Examples to print.
        #[arg(short, default_value_t = 2)]
        n: usize,
    },
}

pub fn run(c: TaskCommand) -> anyhow::Result<i32> {
    match c {
        TaskCommand::List => {
            for t in registry() {
                let i = t.info();
                println!("{:16} {}", i.name, i.description);
            }
        }
        TaskCommand::Show { task, input, n } => {
            let t = find(&task)?;
            let i = t.info();
            println!("task:    {}", i.name);
            println!("about:   {}", i.description);
            println!("formats: {}", i.formats);
            println!("metric:  {:?}", i.metric);
            match t.labels() {
                Some(l) => println!("labels:  {}", l.join(", ")),
                None => println!("labels:  (generation: the target text itself)"),
            }
            if !input.is_empty() {
                let d = read_all(t.as_ref(), &input, false)?;
                println!(
                    "read {} rows: {} examples, {} skipped{}",
                    d.read,
                    d.examples.len(),
                    d.skipped.len(),
                    d.excluded
                        .iter()
                        .map(|(k, v)| format!(", {v} {k} left out"))
                        .collect::<String>()
                );
                for s in d.skipped.iter().take(5) {
                    println!("  skipped {}:{}: {}", s.file, s.line, s.reason);
                }
                for e in d.examples.iter().take(n) {
                    println!("--- {}:{}", e.file, e.line);
                    println!("inputs:  {}", e.inputs);
                    println!("targets: {}", e.targets);
                }
            }
        }
    }
    Ok(0)
}
