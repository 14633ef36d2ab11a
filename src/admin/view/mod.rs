//! The human pages of the admin server: server-rendered HTML with inline CSS, no scripts and
//! no external assets, so they work air-gapped and through `kubectl port-forward`.
//!
//! Span data arrives from the network (`POST /v1/traces` accepts anyone's spans), so every
//! value goes through [`Esc`], and the pages are served with a Content-Security-Policy that
//! forbids scripts outright: even a mistake in escaping could not run code.
//!
//! - [`traces`]: `/traces` and `/traces/{id}` — filters, legend, and per trace its seam table
//!   ([`seams`]) and its waterfall ([`waterfall`]) with span detail on expand.
//! - [`health`]: `/health` — the propagation counters since start and over the last minutes.
//!
//! Rendering is linear in the spans drawn, and what is drawn is bounded per page (see
//! [`traces`]), so a full ring renders in milliseconds.

mod facts;
pub(super) mod health;
mod index;
mod seams;
pub(super) mod traces;
mod waterfall;

use std::fmt::{self, Write};
use std::time::{Duration, SystemTime};

/// Forbids scripts, frames, plugins and remote loads; allows the inline stylesheet and the
/// empty `data:` favicon. The filter form submits to the page itself.
pub(super) const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const STYLE: &str = include_str!("style.css");

/// Longest text shown for one value; the JSON endpoints have the rest.
pub(super) const MAX_VALUE_CHARS: usize = 4096;

/// Text escaped for HTML element content and quoted attribute values, written without an
/// intermediate string.
pub(super) struct Esc<'a>(pub(super) &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let mut from = 0;
        for (i, b) in s.bytes().enumerate() {
            let entity = match b {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                b'\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&s[from..i])?;
            f.write_str(entity)?;
            from = i + 1;
        }
        f.write_str(&s[from..])
    }
}

/// At most `max` characters of `s`, escaped, with `…` when cut.
pub(super) struct Clip<'a>(pub(super) &'a str, pub(super) usize);

impl fmt::Display for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(self.1) {
            Some((cut, _)) => write!(f, "{}…", Esc(&self.0[..cut])),
            None => Esc(self.0).fmt(f),
        }
    }
}

/// A duration as people read span lengths: `0.236 ms`, `12.4 ms`, `1.52 s`.
pub(super) fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.3} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// A wall-clock time in UTC with microseconds.
pub(super) fn utc(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// Starts a page: head with the stylesheet, the navigation bar, `<main>` and the `<h1>`.
pub(super) fn open_page(html: &mut String, title: &str) {
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <link rel=\"icon\" href=\"data:,\"><title>{title}</title><style>{STYLE}</style></head><body>\
         <nav><a href=\"/traces\">Recent traces</a><a href=\"/traces?broken=on\">Broken traces</a>\
         <a href=\"/health\">Propagation health</a><a href=\"/metrics\">Metrics</a>\
         <a href=\"/config\">Rules</a></nav><main><h1>{title}</h1>",
        title = Esc(title)
    );
}

/// Ends a page opened with [`open_page`].
pub(super) fn close_page(html: &mut String) {
    html.push_str("</main></body></html>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_markup_character_and_clips_by_characters() {
        assert_eq!(
            Esc("<a href=\"x\" title='y'>&</a>").to_string(),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(Esc("plain ünïcode").to_string(), "plain ünïcode");
        assert_eq!(Clip("ééé<b>", 4).to_string(), "ééé&lt;…");
        assert_eq!(Clip("short", 10).to_string(), "short");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(millis(Duration::from_micros(236)), "0.236 ms");
        assert_eq!(millis(Duration::from_micros(12_400)), "12.4 ms");
        assert_eq!(millis(Duration::from_millis(1520)), "1.52 s");
    }
}
