//! The documentation against the code, as a reader would trip over it:
//!
//! - the configuration reference (`docs/src/configuration.md`) names every
//!   key of `config/default.toml` — those it sets and the optional ones it
//!   shows commented out, in their sections and arrays of tables — and no
//!   other, and for every key the file sets it gives the file's value as
//!   the default;
//! - every relative link in `README.md` and `docs/src/*.md` points to a file
//!   that exists, and, when it has a `#fragment`, to a heading of that
//!   Markdown file (the anchors mdBook and code hosts make).
//!
//! Each check collects every finding and fails naming them all: the key
//! and the line in each file, or the file, line and link. The tests at the
//! end feed the checks a key added, a key removed and a default changed,
//! so a check that stopped seeing them would fail too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

const DEFAULT_TOML: &str = "config/default.toml";
const REFERENCE: &str = "docs/src/configuration.md";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

// ---------------------------------------------------------------------------
// config/default.toml

/// A key of `config/default.toml`, as the file writes it: `server.listen`,
/// `limits.sms.recipient` (an inline table is one key), `providers[].name`
/// (a key of an array of tables).
#[derive(Debug, Clone, PartialEq)]
struct FileKey {
    /// 1-based line of its first mention.
    line: usize,
    /// The value the file sets; `None` for a key only shown commented out.
    value: Option<toml::Value>,
}

/// `[a.b]` or `[[a.b]]` (possibly commented out): the prefix of the keys
/// that follow it.
fn header_prefix(line: &str) -> Option<String> {
    let line = line.trim();
    if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
        return valid_path(name).then(|| format!("{}[].", name.trim()));
    }
    let name = line.strip_prefix('[').and_then(|l| l.strip_suffix(']'))?;
    valid_path(name).then(|| format!("{}.", name.trim()))
}

fn valid_path(name: &str) -> bool {
    let name = name.trim();
    !name.is_empty()
        && name
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(bare_key_char))
}

fn bare_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// `name = …` at the start of `line`: the key's name.
fn assigned_key(line: &str) -> Option<&str> {
    let (name, _) = line.split_once('=')?;
    let name = name.trim();
    (!name.is_empty() && name.chars().all(bare_key_char)).then_some(name)
}

/// Every key of a `default.toml` text, set or commented out.
///
/// Keys it sets come from the parsed file: a table declared with a
/// `[header]` is walked into, a table written inline (`x = { … }`) is one
/// key. Keys commented out are the comment lines of the form `# name = …`,
/// under the last header before them, commented out or not (`# [auth.basic]`,
/// `# [[providers]]`); prose in comments has no such line.
fn file_keys(text: &str) -> Result<BTreeMap<String, FileKey>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{DEFAULT_TOML} does not parse: {e}"))?;

    // Line of each key set, and which of them are inline tables.
    let mut set_lines = BTreeMap::new();
    let mut commented = Vec::new();
    let mut prefix = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if let Some(comment) = line.strip_prefix('#') {
            if let Some(p) = header_prefix(comment) {
                prefix = p;
            } else if let Some(name) = assigned_key(comment.trim_start()) {
                commented.push((format!("{prefix}{name}"), n + 1));
            }
        } else if let Some(p) = header_prefix(line) {
            prefix = p;
        } else if let Some(name) = assigned_key(line) {
            set_lines.insert(format!("{prefix}{name}"), n + 1);
        }
    }

    let mut keys = BTreeMap::new();
    walk(&table, "", &set_lines, &mut keys);
    for (key, line) in commented {
        keys.entry(key).or_insert(FileKey { line, value: None });
    }
    Ok(keys)
}

fn walk(
    table: &toml::Table,
    prefix: &str,
    set_lines: &BTreeMap<String, usize>,
    keys: &mut BTreeMap<String, FileKey>,
) {
    for (name, value) in table {
        let key = format!("{prefix}{name}");
        match value {
            // Written `[key]`, not `key = { … }`: its keys are the keys.
            toml::Value::Table(inner) if !set_lines.contains_key(&key) => {
                walk(inner, &format!("{key}."), set_lines, keys);
            }
            toml::Value::Array(items)
                if !items.is_empty()
                    && items.iter().all(toml::Value::is_table)
                    && !set_lines.contains_key(&key) =>
            {
                for item in items {
                    if let toml::Value::Table(inner) = item {
                        walk(inner, &format!("{key}[]."), set_lines, keys);
                    }
                }
            }
            _ => {
                let line = set_lines.get(&key).copied().unwrap_or(0);
                keys.insert(
                    key,
                    FileKey {
                        line,
                        value: Some(value.clone()),
                    },
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The reference chapter

/// One row of a reference table (a table whose head is `key | default | …`).
#[derive(Debug, Clone)]
struct Row {
    line: usize,
    key: String,
    /// The default cell: its first code span, if it has one.
    default_code: Option<String>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

/// The cells of every row of every table whose first two head cells are
/// `key` and `default`. A key cell must hold exactly one code span.
fn reference_rows(text: &str) -> Result<Vec<Row>, Vec<String>> {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let parser = Parser::new_ext(text, Options::ENABLE_TABLES).into_offset_iter();
    // Per cell: its plain text and its code spans.
    let mut cells: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_head = false;
    let mut is_reference = false;
    let mut row_start = 0;
    for (event, range) in parser {
        match event {
            Event::Start(Tag::Table(_)) => is_reference = false,
            Event::Start(Tag::TableHead) => {
                in_head = true;
                cells.clear();
            }
            Event::End(TagEnd::TableHead) => {
                in_head = false;
                let heads: Vec<&str> = cells.iter().map(|(t, _)| t.trim()).collect();
                is_reference = heads.len() >= 2 && heads[0] == "key" && heads[1] == "default";
            }
            Event::Start(Tag::TableRow) => {
                cells.clear();
                row_start = range.start;
            }
            Event::Start(Tag::TableCell) => cells.push((String::new(), Vec::new())),
            Event::Text(t) => {
                if let Some(cell) = cells.last_mut() {
                    cell.0.push_str(&t);
                }
            }
            Event::Code(c) => {
                if let Some(cell) = cells.last_mut() {
                    cell.0.push_str(&c);
                    cell.1.push(c.to_string());
                }
            }
            Event::End(TagEnd::TableRow) if is_reference && !in_head => {
                let line = line_of(text, row_start);
                let key_codes = cells.first().map(|c| c.1.clone()).unwrap_or_default();
                match key_codes.as_slice() {
                    [key] => rows.push(Row {
                        line,
                        key: key.clone(),
                        default_code: cells.get(1).and_then(|c| c.1.first().cloned()),
                    }),
                    _ => problems.push(format!(
                        "{REFERENCE}:{line}: the key cell must be one key in backticks, found {:?}",
                        cells.first().map(|c| c.0.as_str()).unwrap_or("")
                    )),
                }
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

/// The value a default cell's code span stands for: TOML when it parses as
/// a TOML value (`5`, `""`, `[]`, `{ per_hour = 5, burst = 3 }`), else the
/// text itself as a string (`plain`, `127.0.0.1:4470`).
fn documented_value(code: &str) -> toml::Value {
    code.parse::<toml::Value>()
        .unwrap_or_else(|_| toml::Value::String(code.to_owned()))
}

/// Everything wrong between a `default.toml` text and a reference text.
fn reference_problems(default_toml: &str, reference: &str) -> Vec<String> {
    let keys = match file_keys(default_toml) {
        Ok(keys) => keys,
        Err(e) => return vec![e],
    };
    let rows = match reference_rows(reference) {
        Ok(rows) => rows,
        Err(problems) => return problems,
    };
    let mut problems = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &rows {
        if let Some(first) = seen.insert(&row.key, row.line) {
            problems.push(format!(
                "{REFERENCE}:{}: `{}` is listed twice (first at line {first})",
                row.line, row.key
            ));
        }
        let Some(file_key) = keys.get(&row.key) else {
            problems.push(format!(
                "{REFERENCE}:{}: `{}` is not a key of {DEFAULT_TOML} (neither set nor shown commented out): \
                 remove the row, or add the key to {DEFAULT_TOML}",
                row.line, row.key
            ));
            continue;
        };
        let Some(value) = &file_key.value else {
            continue;
        };
        match &row.default_code {
            None => problems.push(format!(
                "{REFERENCE}:{}: `{}` gives no default in backticks; {DEFAULT_TOML}:{} sets {value}",
                row.line, row.key, file_key.line
            )),
            Some(code) if documented_value(code) != *value => problems.push(format!(
                "{REFERENCE}:{}: `{}` has the default `{code}`, but {DEFAULT_TOML}:{} sets {value}",
                row.line, row.key, file_key.line
            )),
            Some(_) => {}
        }
    }
    for (key, file_key) in &keys {
        if !seen.contains_key(key.as_str()) {
            let how = if file_key.value.is_some() {
                "sets"
            } else {
                "shows commented out"
            };
            problems.push(format!(
                "{DEFAULT_TOML}:{}: {how} `{key}`, which {REFERENCE} does not list: add a row for it",
                file_key.line
            ));
        }
    }
    problems
}

#[test]
fn the_configuration_reference_names_exactly_the_keys_of_default_toml() {
    let problems = reference_problems(&read(DEFAULT_TOML), &read(REFERENCE));
    assert!(
        problems.is_empty(),
        "the configuration reference and config/default.toml disagree:\n  {}",
        problems.join("\n  ")
    );
}

/// The file has what the reference is checked against: a check that read
/// no keys would pass.
#[test]
fn default_toml_keys_are_read_set_commented_and_in_arrays_of_tables() {
    let keys = file_keys(&read(DEFAULT_TOML)).unwrap();
    let value = |k: &str| {
        keys.get(k)
            .unwrap_or_else(|| panic!("{k} in {keys:?}"))
            .value
            .clone()
    };
    assert_eq!(value("server.listen"), Some("127.0.0.1:4470".into()));
    assert!(matches!(
        value("limits.sms.recipient"),
        Some(toml::Value::Table(_))
    ));
    assert_eq!(value("twilio.from"), None, "commented out in [twilio]");
    assert_eq!(value("auth.basic.password"), None, "under # [auth.basic]");
    assert_eq!(
        value("providers[].space_url"),
        None,
        "under # [[providers]]"
    );
    assert_eq!(value("relay.routes[].webhooks"), None);
    assert!(matches!(value("relay.routes"), Some(toml::Value::Array(_))));
    assert!(!keys.contains_key("limits.sms.recipient.per_hour"));
    assert!(keys.len() > 150, "{} keys", keys.len());
}

// What the check catches, on the real files with one change each.

fn one_problem_naming(default_toml: &str, reference: &str, words: &[&str]) {
    let problems = reference_problems(default_toml, reference);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    for word in words {
        assert!(problems[0].contains(word), "{word} in {}", problems[0]);
    }
}

fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?}");
    text.replacen(from, to, 1)
}

#[test]
fn a_key_added_to_default_toml_is_named() {
    let file = replaced(
        &read(DEFAULT_TOML),
        "max_connections = 1024\n",
        "max_connections = 1024\nmax_header_bytes = 8192\n",
    );
    one_problem_naming(
        &file,
        &read(REFERENCE),
        &["`server.max_header_bytes`", "does not list"],
    );
}

#[test]
fn a_commented_out_key_added_to_default_toml_is_named() {
    let file = replaced(
        &read(DEFAULT_TOML),
        "# signing_key = ",
        "# region = \"us\"\n# signing_key = ",
    );
    one_problem_naming(
        &file,
        &read(REFERENCE),
        &["`providers[].region`", "commented out"],
    );
}

#[test]
fn a_key_removed_from_default_toml_is_named() {
    let file = replaced(&read(DEFAULT_TOML), "warn_percent = 80\n", "");
    one_problem_naming(
        &file,
        &read(REFERENCE),
        &["`budget.warn_percent`", "is not a key of"],
    );
}

#[test]
fn a_key_removed_from_the_reference_is_named() {
    let reference = read(REFERENCE);
    let row = reference
        .lines()
        .find(|l| l.starts_with("| `store.redis.key_secret` |"))
        .unwrap();
    let reference = replaced(&reference, &format!("{row}\n"), "");
    one_problem_naming(
        &read(DEFAULT_TOML),
        &reference,
        &["`store.redis.key_secret`", "does not list"],
    );
}

#[test]
fn a_default_that_changed_is_named_with_both_values() {
    let file = replaced(
        &read(DEFAULT_TOML),
        "recipient = { per_hour = 10, burst = 6 }",
        "recipient = { per_hour = 10, burst = 7 }",
    );
    one_problem_naming(
        &file,
        &read(REFERENCE),
        &["`limits.sms.recipient`", "burst = 6", "burst = 7"],
    );
}

// ---------------------------------------------------------------------------
// The try-it page

/// Every number the sandbox treats specially: its Lookup answers, the SMS
/// it reports undelivered, and Twilio's test numbers it refuses. The
/// Lookup ones are the crate's own constants; the others are read from the
/// tables in its source (`UNDELIVERED_NUMBERS` in create.rs, the
/// `"+1500555000N" =>` arms in validate.rs).
fn sandbox_magic_numbers() -> BTreeSet<String> {
    use twilio_sandbox::lookup;
    let mut numbers: BTreeSet<String> = lookup::LINE_TYPE_NUMBERS
        .iter()
        .map(|(n, _)| n.to_string())
        .chain(
            [
                lookup::SIM_SWAPPED,
                lookup::HIGH_PUMPING_RISK,
                lookup::LOOKUP_FAILS,
            ]
            .map(str::to_owned),
        )
        .collect();
    let number = regex::Regex::new(r#""(\+1\d{10})""#).unwrap();
    let create = read("twilio-sandbox/src/create.rs");
    let start = create
        .find("pub const UNDELIVERED_NUMBERS")
        .expect("UNDELIVERED_NUMBERS in twilio-sandbox/src/create.rs");
    let table = &create[start..start + create[start..].find("];").unwrap()];
    let undelivered: Vec<String> = number
        .captures_iter(table)
        .map(|c| c[1].to_owned())
        .collect();
    assert!(undelivered.len() >= 3, "{undelivered:?}");
    numbers.extend(undelivered);
    let arm = regex::Regex::new(r#""(\+1500555\d{4})" =>"#).unwrap();
    let validate = read("twilio-sandbox/src/validate.rs");
    let twilio: Vec<String> = arm
        .captures_iter(&validate)
        .map(|c| c[1].to_owned())
        .collect();
    assert!(twilio.len() >= 5, "{twilio:?}");
    numbers.extend(twilio);
    numbers
}

/// The issue a newcomer met: the "try it" page walks through every magic
/// number the sandbox has, so a number added to the sandbox without a
/// line on the page fails here.
#[test]
fn the_try_it_page_walks_through_every_sandbox_magic_number() {
    let page = read("docs/src/try-it.md");
    let numbers = sandbox_magic_numbers();
    let missing: Vec<&String> = numbers
        .iter()
        .filter(|n| !page.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/src/try-it.md does not mention these sandbox magic numbers: {missing:?}"
    );
}

// ---------------------------------------------------------------------------
// Links

/// The Markdown files whose links are checked: the README and the book.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let book = root().join("docs/src");
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(&book)
        .unwrap_or_else(|e| panic!("reading {}: {e}", book.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    chapters.sort();
    files.extend(chapters);
    files
}

/// The anchors of a Markdown text's headings, as mdBook makes them (and
/// GitHub, for these headings): the heading's text in lower case, spaces
/// as `-`, every character other than letters, digits, `-` and `_`
/// dropped; a repeated anchor gets `-1`, `-2`, ….
fn anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut heading: Option<String> = None;
    let mut explicit: Option<String> = None;
    for event in Parser::new_ext(
        text,
        Options::ENABLE_TABLES | Options::ENABLE_HEADING_ATTRIBUTES,
    ) {
        match event {
            Event::Start(Tag::Heading { id, .. }) => {
                heading = Some(String::new());
                explicit = id.map(|id| id.to_string());
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let text = heading.take().unwrap_or_default();
                let base = explicit.take().unwrap_or_else(|| slug(&text));
                let mut id = base.clone();
                let mut n = 1;
                while !anchors.insert(id.clone()) {
                    id = format!("{base}-{n}");
                    n += 1;
                }
            }
            _ => {}
        }
    }
    anchors
}

fn slug(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_lowercase().collect::<String>())
            } else if c.is_whitespace() {
                Some("-".to_owned())
            } else {
                None
            }
        })
        .collect()
}

/// `a/./b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Every relative link of `file` (Markdown `text`) that points nowhere.
fn broken_links(file: &Path, text: &str) -> Vec<String> {
    let shown = file
        .strip_prefix(root())
        .unwrap_or(file)
        .display()
        .to_string();
    let dir = file.parent().unwrap();
    let mut broken = Vec::new();
    let parser = Parser::new_ext(
        text,
        Options::ENABLE_TABLES | Options::ENABLE_HEADING_ATTRIBUTES,
    )
    .into_offset_iter();
    for (event, range) in parser {
        let dest = match event {
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => dest_url.to_string(),
            _ => continue,
        };
        // A scheme (https:, mailto:) is not a file of this repository.
        if dest.contains("://") || dest.starts_with("mailto:") {
            continue;
        }
        let line = line_of(text, range.start);
        let (path, fragment) = match dest.split_once('#') {
            Some((path, fragment)) => (path, Some(fragment)),
            None => (dest.as_str(), None),
        };
        let target = if path.is_empty() {
            file.to_path_buf()
        } else {
            normalize(&dir.join(path))
        };
        if !target.starts_with(root()) {
            broken.push(format!("{shown}:{line}: `{dest}` leaves the repository"));
            continue;
        }
        if !target.exists() {
            broken.push(format!("{shown}:{line}: `{dest}`: no such file"));
            continue;
        }
        let Some(fragment) = fragment else { continue };
        if target.extension().is_none_or(|e| e != "md") {
            broken.push(format!(
                "{shown}:{line}: `{dest}`: a #fragment is only checked on a Markdown file"
            ));
            continue;
        }
        let target_text = if path.is_empty() {
            text.to_owned()
        } else {
            std::fs::read_to_string(&target).unwrap()
        };
        if !anchors(&target_text).contains(fragment) {
            broken.push(format!(
                "{shown}:{line}: `{dest}`: {} has no heading with the anchor #{fragment}",
                target.strip_prefix(root()).unwrap_or(&target).display()
            ));
        }
    }
    broken
}

#[test]
fn every_relative_link_in_the_readme_and_the_book_resolves() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        broken.extend(broken_links(&file, &text));
    }
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn the_link_check_sees_a_missing_file_and_a_missing_anchor() {
    let file = root().join("docs/src/introduction.md");
    let text = "# Title\n\n[ok](#title) [gone](no-such-chapter.md) \
                [anchor](abuse.md#no-such-heading) [fine](abuse.md#fraud-guard) \
                [out](https://example.com/x.md)\n";
    let broken = broken_links(&file, text);
    assert_eq!(broken.len(), 2, "{broken:#?}");
    assert!(broken[0].contains("no-such-chapter.md") && broken[0].contains("no such file"));
    assert!(broken[1].contains("#no-such-heading"));
}

#[test]
fn anchors_are_made_as_mdbook_makes_them() {
    let text = "# Number changes (Kratos after v26.2.0)\n## SMS or voice?\n## `limits.sms`: rates\n## Logs\n## Logs\n";
    let got = anchors(text);
    for want in [
        "number-changes-kratos-after-v2620",
        "sms-or-voice",
        "limitssms-rates",
        "logs",
        "logs-1",
    ] {
        assert!(got.contains(want), "{want} in {got:?}");
    }
}

/// The README stays a README: the rest is in the book.
#[test]
fn the_readme_is_at_most_15_kb() {
    let size = read("README.md").len();
    assert!(
        size <= 15_000,
        "README.md is {size} bytes, more than 15 kB: move detail into the book (docs/src/)"
    );
}

/// Every chapter is in the book's table of contents, so none is written and
/// never built.
#[test]
fn every_chapter_is_in_summary_md() {
    let summary = read("docs/src/SUMMARY.md");
    let linked: BTreeSet<String> = Parser::new(&summary)
        .filter_map(|event| match event {
            Event::Start(Tag::Link { dest_url, .. }) => Some(dest_url.to_string()),
            _ => None,
        })
        .collect();
    for file in markdown_files().iter().skip(1) {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if name != "SUMMARY.md" {
            assert!(
                linked.contains(&name),
                "docs/src/{name} is not in docs/src/SUMMARY.md"
            );
        }
    }
}
