//! The crate doc's layers hold: every `crate::` path under `src/` goes from
//! a room to a room on a lower line of the list in `src/lib.rs`, never to
//! one on its own line or above. An import that points back (a cycle
//! between rooms) fails here, naming the file and the path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The numbered list of the crate doc: room -> its line (1 = top).
fn layers(lib: &str) -> HashMap<String, usize> {
    let mut layers = HashMap::new();
    for line in lib.lines() {
        let Some(item) = line.strip_prefix("//! ") else {
            continue;
        };
        let Some((number, rooms)) = item.split_once(". ") else {
            continue;
        };
        let Ok(number) = number.parse::<usize>() else {
            continue;
        };
        for room in rooms.split(", ") {
            let room = room.trim().trim_matches('`');
            assert!(
                layers.insert(room.to_owned(), number).is_none(),
                "{room} is listed twice"
            );
        }
    }
    layers
}

/// The crate's rooms: its `pub mod` lines.
fn rooms(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|r| r.trim_end_matches(';').to_owned())
        .collect()
}

/// Code without comments: line comments (and doc comments) dropped, block
/// comments too. A `//` inside a string cuts the rest of that line, which
/// can only hide a path, never invent one.
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The rooms a file names through `crate::`: `crate::room::...`, and each
/// top-level entry of `crate::{a::X, b}`.
fn named_rooms(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let after = code[i + "crate::".len()..].trim_start();
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.push(ident(group[start..j].trim()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(ident(group[start..j].trim()));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.push(ident(after));
        }
    }
    found.retain(|r| !r.is_empty());
    found
}

/// The room a file of `src/` belongs to (`None` for `lib.rs` and the binary).
fn room_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_owned()),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_room_uses_only_rooms_below_it() {
    let src = root().join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layers = layers(&lib);
    let rooms = rooms(&lib);
    assert!(rooms.len() >= 10, "the rooms were not read: {rooms:?}");
    for room in &rooms {
        assert!(
            layers.contains_key(room),
            "room {room} is not in the crate doc's list of layers"
        );
    }
    assert_eq!(
        layers.len(),
        rooms.len(),
        "the list names a room that is gone"
    );

    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Some(from) = room_of(&src, file) else {
            continue;
        };
        let text = code(&std::fs::read_to_string(file).unwrap());
        for to in named_rooms(&text) {
            if to == from {
                continue;
            }
            checked += 1;
            let (Some(a), Some(b)) = (layers.get(&from), layers.get(&to)) else {
                wrong.push(format!("{}: crate::{to} is no room", file.display()));
                continue;
            };
            if b <= a {
                wrong.push(format!(
                    "{}: {from} (line {a}) uses crate::{to} (line {b})",
                    file.strip_prefix(root()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        checked > 100,
        "too few paths read ({checked}): is the parser broken?"
    );
    assert!(
        wrong.is_empty(),
        "imports that point back:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_path_reader_sees_grouped_and_plain_paths() {
    let text = code(
        "use crate::{config::Config, store::{Keys, Store}};\n\
         // use crate::http::App;\n\
         let x = crate::domain::Channel::Sms; /* crate::relay */",
    );
    assert_eq!(named_rooms(&text), ["config", "store", "domain"]);
}
