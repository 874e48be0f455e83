//! The demo page of `serve --dev` (`GET /verify/demo`): two plain HTML
//! forms, "send me a code" and "is this the code", posted to
//! `/verify/demo/request` and `/verify/demo/check`, answered with the same
//! page and the outcome on it. No script: what a browser sends is what a
//! back end would, and the codes show up in the sandbox inbox.
//!
//! Only rendering lives here; `http::verify` turns the forms into calls of
//! the [`super::Verifier`]. Everything echoed is escaped, with the service's
//! one escaper (`provider::twiml::escape_xml`: what is safe in XML is safe
//! in HTML text and quoted attributes).

use crate::provider::twiml::escape_xml;

/// How the last action ended, for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// `pending`, `approved`, or an error code (`code_mismatch`, …).
    pub(crate) status: String,
    /// A sentence for a person.
    pub(crate) text: String,
}

/// The page, with the outcome of the last action and the number to fill in.
pub(crate) fn page(outcome: Option<&Outcome>, to: &str) -> String {
    let result = match outcome {
        Some(o) => format!(
            "<p id=\"result\" class=\"{}\"><strong id=\"status\">{}</strong>: {}</p>\n",
            escape_xml(&o.status),
            escape_xml(&o.status),
            escape_xml(&o.text)
        ),
        None => String::new(),
    };
    let to = escape_xml(to);
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Verify API demo</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }}
form {{ border: 1px solid #ccc; padding: 1rem; margin: 1rem 0; }}
label {{ display: block; margin: .5rem 0; }}
.approved {{ color: #070; }} .pending {{ color: #005; }}
p[id=result]:not(.approved):not(.pending) {{ color: #a00; }}
</style>
</head>
<body>
<h1>Verify API demo</h1>
<p>Dev mode: codes go to the Twilio sandbox's inbox (its address is in the
start-up banner), nothing is really sent. These forms call
<code>POST /v1/verify/request</code> and <code>POST /v1/verify/check</code>
as an application's back end would.</p>
{result}<form id="request" method="post" action="/verify/demo/request">
<h2>1. Send a code</h2>
<label>Phone number (E.164) <input name="to" type="tel" value="{to}" required></label>
<label>Channel <select name="channel"><option value="sms">SMS</option><option value="voice">Voice call</option></select></label>
<button type="submit">Send code</button>
</form>
<form id="check" method="post" action="/verify/demo/check">
<h2>2. Check the code</h2>
<label>Phone number (E.164) <input name="to" type="tel" value="{to}" required></label>
<label>Code <input name="code" inputmode="numeric" autocomplete="one-time-code" required></label>
<button type="submit">Check code</button>
</form>
</body>
</html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_values_are_escaped() {
        let page = page(
            Some(&Outcome {
                status: "x<y".into(),
                text: "\"'&".into(),
            }),
            "\"><script>",
        );
        assert!(!page.contains("<script>"));
        assert!(page.contains("value=\"&quot;&gt;&lt;script&gt;\""));
        assert!(page.contains("&quot;&apos;&amp;"));
    }
}
