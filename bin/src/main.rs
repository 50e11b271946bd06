//! The `conveyor` command: parses arguments and calls the library crates.

fn main() {
    println!("{}", conveyor_model::describe());
}
