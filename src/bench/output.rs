//! What the benchmark shows while it runs and what it leaves behind: the progress bar and the
//! files.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

pub(super) fn progress_bar(total: u64) -> ProgressBar {
    let progress = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{msg:32} [{bar:40}] {pos}/{len} {elapsed}") {
        progress.set_style(style.progress_chars("=> "));
    }
    progress
}

pub(super) fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|err| format!("cannot write {}: {err}", path.display()))
}
