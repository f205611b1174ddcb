//! Checks of the documents: every relative link resolves, and a lint of the PowerShell blocks,
//! which no test here can run (there is no
//! PowerShell on this machine). It catches the mistakes that slip in when a bash line is
//! translated: a bare `curl` (in Windows PowerShell the alias of `Invoke-WebRequest`), unbalanced
//! quotes, bash's `NAME=value command`, `export`, `\` line continuations, and `&&` or `||`
//! (PowerShell 7 only). It cannot tell whether a command works, nor whether PowerShell passes
//! the quotes to a native program the way the text says: the note on quoting traps in
//! docs/powershell.md is the reference for that.

use std::path::Path;

/// The documents at the top of the repository; every Markdown file of `docs/` is checked too.
const TOP: [&str; 4] = [
    "README.md",
    "ARCHITECTURE.md",
    "THEORY_BACKGROUND.md",
    "PRESENTATION_GUIDE.md",
];

/// Every document checked, as paths relative to the repository.
fn documents() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut documents: Vec<String> = TOP.iter().map(|d| (*d).to_owned()).collect();
    let mut in_docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    in_docs.sort();
    documents.extend(in_docs);
    documents
}

/// The targets of the Markdown links `[text](target)` in `markdown`.
fn links(markdown: &str) -> Vec<&str> {
    markdown
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target))
        .collect()
}

#[test]
fn every_relative_link_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    for document in documents() {
        let text = std::fs::read_to_string(root.join(&document)).expect("the document");
        let folder = root.join(&document).parent().expect("a folder").to_owned();
        for target in links(&text) {
            let file = target.split('#').next().unwrap_or_default();
            if target.contains("://") || file.is_empty() {
                continue;
            }
            if !folder.join(file).exists() {
                broken.push(format!("{document}: {target}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to nothing:\n{}",
        broken.join("\n")
    );
}

/// The ```powershell blocks of a Markdown text: (line number, line) of every line in them.
fn powershell_lines(markdown: &str) -> Vec<(usize, &str)> {
    let mut inside = false;
    let mut lines = Vec::new();
    for (number, line) in markdown.lines().enumerate() {
        match line.trim_end() {
            "```powershell" => inside = true,
            "```" => inside = false,
            _ if inside => lines.push((number + 1, line)),
            _ => {}
        }
    }
    lines
}

/// What is wrong with one line of PowerShell, if anything.
fn lint(line: &str) -> Vec<&'static str> {
    let code = line.trim();
    let mut problems = Vec::new();
    let words: Vec<&str> = code
        .split(|c: char| c.is_whitespace() || "|;(){}".contains(c))
        .collect();
    if words.contains(&"curl") {
        problems.push("a bare `curl` is Invoke-WebRequest in Windows PowerShell: use curl.exe");
    }
    if code.matches('\'').count() % 2 == 1 {
        problems.push("an odd number of single quotes");
    }
    if code.matches('"').count() % 2 == 1 {
        problems.push("an odd number of double quotes");
    }
    let first = words.first().copied().unwrap_or_default();
    if first.contains('=') && !first.starts_with('$') {
        problems.push("bash's NAME=value prefix: set $env:NAME first");
    }
    if first == "export" {
        problems.push("bash's export: use $env:NAME = ...");
    }
    if code.ends_with(" \\") {
        problems.push("a bash line continuation: PowerShell continues with a backtick");
    }
    if code.contains("&&") || code.contains("||") {
        problems.push("&& and || need PowerShell 7: use ; or two lines");
    }
    problems
}

#[test]
fn the_lint_finds_what_it_looks_for() {
    assert!(
        lint(r#"'{"value":"blue"}' | curl.exe -s -X PUT localhost:8000/kv/color -d '@-'"#)
            .is_empty()
    );
    assert!(lint("$env:WRITE_QUORUM=5; docker compose up -d").is_empty());
    assert!(lint("docker kill (docker ps -q -f label=x)").is_empty());
    assert_eq!(lint("curl -s localhost:8000/health").len(), 1);
    assert_eq!(lint("(curl -s localhost:8000)").len(), 1);
    assert_eq!(lint("curl.exe -s 'localhost:8000").len(), 1);
    assert_eq!(lint(r#"Write-Output "a"b""#).len(), 1);
    assert_eq!(lint("WRITE_QUORUM=5 docker compose up -d").len(), 1);
    assert_eq!(lint("export KV_IMAGE_TARGET=prebuilt").len(), 1);
    assert_eq!(lint("docker build . \\").len(), 1);
    assert_eq!(lint("cargo build && cargo test").len(), 1);
}

#[test]
fn every_powershell_block_passes_the_lint() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    let mut linted = 0;
    for document in documents() {
        let text = std::fs::read_to_string(root.join(&document)).expect("the document");
        for (number, line) in powershell_lines(&text) {
            linted += 1;
            for problem in lint(line) {
                problems.push(format!("{document}:{number}: {problem}: {line}"));
            }
        }
    }
    assert!(linted > 50, "the documents' PowerShell lines: {linted}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
