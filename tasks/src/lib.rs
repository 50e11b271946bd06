//! conveyor's text-to-text tasks. Each task turns rows of a downloaded dataset into
//! (inputs, targets) text pairs with a task prefix and names its metric.
//!
//! The task formatters themselves arrive with the tasks issue; this crate already fixes the
//! trait they implement so that the pipeline and the CLI can be written against it.

/// One text-to-text example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub inputs: String,
    pub targets: String,
}

/// A text-to-text task: a name, a formatter from raw fields to an [`Example`].
pub trait Task: Send + Sync {
    /// The registry name, e.g. `sst2`.
    fn name(&self) -> &str;
    /// The prefix put before every input, e.g. `sst2 sentence: `.
    fn prefix(&self) -> &str;
    /// Formats one example from its input text and label.
    fn format(&self, text: &str, label: &str) -> Example {
        Example {
            inputs: format!("{}{}", self.prefix(), text.trim()),
            targets: label.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Demo;
    impl Task for Demo {
        fn name(&self) -> &str {
            "demo"
        }
        fn prefix(&self) -> &str {
            "demo: "
        }
    }

    #[test]
    fn default_format_prefixes_and_trims() {
        let e = Demo.format("  a b ", "x");
        assert_eq!(e.inputs, "demo: a b");
        assert_eq!(e.targets, "x");
        assert_eq!(Demo.name(), "demo");
    }
}
