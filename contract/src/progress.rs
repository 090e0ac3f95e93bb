//! Progress bars for long work (embedding a dataset, indexing a folder), drawn one way:
//! label, bar, count, rate and time left. Hidden when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps counted in `unit` (e.g. "img", "files"), labelled `label`.
pub fn bar(len: u64, label: &str, unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let template = format!("{{prefix:>10}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{per_sec}} ETA {{eta}} {{msg}}");
    // The template is a constant apart from `unit`; a unit with braces falls back to the
    // default style rather than failing the work it reports on.
    if let Ok(style) = ProgressStyle::with_template(&template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(label.to_string());
    pb
}
