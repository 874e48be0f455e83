//! Just enough TwiML reading to show what a call would have said.

/// Text of every `<Say>` element, entity-decoded, whitespace-collapsed and
/// joined with " ". Markup nested inside `<Say>` (SSML) is skipped, its text kept.
pub(crate) fn spoken_text(twiml: &str) -> String {
    let mut parts = Vec::new();
    let mut rest = twiml;
    while let Some(start) = find_tag(rest, "Say") {
        let after_name = &rest[start + "<Say".len()..];
        let Some(open_end) = after_name.find('>') else {
            break;
        };
        if after_name[..open_end].ends_with('/') {
            rest = &after_name[open_end + 1..];
            continue;
        }
        let content_start = &after_name[open_end + 1..];
        let (content, next) = match content_start.find("</Say") {
            Some(close) => {
                let after_close = &content_start[close..];
                let skip = after_close.find('>').map_or(after_close.len(), |i| i + 1);
                (&content_start[..close], &after_close[skip..])
            }
            None => (content_start, ""),
        };
        let text = collapse_whitespace(&decode_entities(&strip_tags(content)));
        if !text.is_empty() {
            parts.push(text);
        }
        rest = next;
    }
    parts.join(" ")
}

/// Position of `<name` followed by whitespace, `>` or `/`.
fn find_tag(haystack: &str, name: &str) -> Option<usize> {
    let needle = format!("<{name}");
    let mut offset = 0;
    while let Some(pos) = haystack[offset..].find(&needle) {
        let at = offset + pos;
        let next = haystack[at + needle.len()..].chars().next();
        if matches!(next, Some(c) if c.is_whitespace() || c == '>' || c == '/') {
            return Some(at);
        }
        offset = at + needle.len();
    }
    None
}

fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let decoded = tail.find(';').and_then(|semi| {
            let entity = &tail[1..semi];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, semi + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::spoken_text;

    #[test]
    fn joins_say_elements() {
        let twiml = r#"<?xml version="1.0"?><Response><Say voice="alice" language="en-US">Your code is 4, 8, 2.</Say><Pause length="1"/><Say>Again: 4, 8, 2.</Say></Response>"#;
        assert_eq!(spoken_text(twiml), "Your code is 4, 8, 2. Again: 4, 8, 2.");
    }

    #[test]
    fn decodes_entities_and_ignores_other_tags() {
        let twiml = "<Response><Sayer>no</Sayer><Say>A &amp; B &lt;c&gt; &#65;&#x42; &bogus; <prosody rate=\"slow\">slow</prosody></Say><Say/></Response>";
        assert_eq!(spoken_text(twiml), "A & B <c> AB &bogus; slow");
    }

    #[test]
    fn tolerates_broken_markup() {
        assert_eq!(spoken_text("<Say>unterminated"), "unterminated");
        assert_eq!(spoken_text("<Say"), "");
        assert_eq!(spoken_text("plain"), "");
    }
}
