//! The template formats of one rules version, as the engine reads them: the formats in the
//! order the rules file defines them (a format's index is its [`Dialect::Template`] number),
//! and every header they use flattened into one list, so the engine's single pass over the
//! request headers finds a template header with one scan of a short slice.

use std::ops::Range;

use http::HeaderName;

use super::context::Dialect;
use super::template::TemplateFormat;

/// Most template formats one rules file may define (the engine tracks their presence in a
/// 64-bit set).
pub(crate) const MAX_FORMATS: usize = 64;

/// The compiled template formats of one rules version.
#[derive(Debug, Clone)]
pub struct Formats {
    formats: Vec<TemplateFormat>,
    /// Every template header, flattened; format i owns `offsets[i]..offsets[i + 1]`.
    headers: Vec<HeaderName>,
    offsets: Vec<usize>,
}

impl Default for Formats {
    /// No formats (the built-in rules).
    fn default() -> Self {
        Formats {
            formats: Vec::new(),
            headers: Vec::new(),
            offsets: vec![0],
        }
    }
}

impl Formats {
    /// Adds `format` as the next template dialect. Returns the header names another format
    /// already uses (the rules file reports each as an error; the format is added anyway so
    /// the remaining checks can run).
    pub fn push(&mut self, format: TemplateFormat) -> Vec<HeaderName> {
        let mut taken = Vec::new();
        for h in &format.headers {
            if self.headers.contains(&h.name) {
                taken.push(h.name.clone());
            }
            self.headers.push(h.name.clone());
        }
        self.offsets.push(self.headers.len());
        self.formats.push(format);
        taken
    }

    /// The formats, indexed by [`Dialect::Template`].
    pub fn as_slice(&self) -> &[TemplateFormat] {
        &self.formats
    }

    /// How many formats there are.
    pub fn len(&self) -> usize {
        self.formats.len()
    }

    /// True when the rules define no format.
    pub fn is_empty(&self) -> bool {
        self.formats.is_empty()
    }

    /// The name of `dialect` as the rules file spells it (metric labels, logs, `/config`).
    pub(crate) fn dialect_name(&self, dialect: Dialect) -> &str {
        match dialect {
            Dialect::Template(i) => self
                .formats
                .get(usize::from(i))
                .map_or("template", |f| f.name.as_str()),
            builtin => builtin.builtin_name().unwrap_or("unknown"),
        }
    }

    /// Total number of template headers across formats.
    pub(crate) fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// The flattened slot of a template header name, if a format uses it.
    pub(crate) fn slot(&self, name: &HeaderName) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    /// The flattened slots of format `index`.
    pub(crate) fn slots(&self, index: usize) -> Range<usize> {
        match (self.offsets.get(index), self.offsets.get(index + 1)) {
            (Some(&start), Some(&end)) => start..end,
            _ => 0..0,
        }
    }
}
