//! A set of dialects: which ones a hop wrote on the forwarded request. Two words and `Copy`,
//! so the engine fills it while writing headers at no allocation; the trace layer turns it
//! into the span attribute `stitch.propagation.injected` through
//! [`crate::config::CompiledRules::dialect_list`].

use super::context::Dialect;

/// The four built-ins in canonical order, with their bit in [`DialectSet`].
const BUILTINS: [(Dialect, u8); 4] = [
    (Dialect::W3c, 1),
    (Dialect::B3, 2),
    (Dialect::B3Multi, 4),
    (Dialect::Jaeger, 8),
];

/// Every combination of built-ins, indexed by their bits, as a comma-separated label in
/// canonical order: a hop that wrote only built-ins gets its label without formatting.
const BUILTIN_LABELS: [&str; 16] = [
    "",
    "w3c",
    "b3",
    "w3c,b3",
    "b3multi",
    "w3c,b3multi",
    "b3,b3multi",
    "w3c,b3,b3multi",
    "jaeger",
    "w3c,jaeger",
    "b3,jaeger",
    "w3c,b3,jaeger",
    "b3multi,jaeger",
    "w3c,b3multi,jaeger",
    "b3,b3multi,jaeger",
    "w3c,b3,b3multi,jaeger",
];

/// A set of [`Dialect`]s: the built-ins and the first 64 template formats (the rules file
/// may define no more, see `MAX_FORMATS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DialectSet {
    builtins: u8,
    templates: u64,
}

impl DialectSet {
    /// The set of the given dialects.
    pub fn of(dialects: impl IntoIterator<Item = Dialect>) -> DialectSet {
        let mut set = DialectSet::default();
        for d in dialects {
            set.insert(d);
        }
        set
    }

    /// Adds `dialect` (a template index past 63 is ignored: no rules file has one).
    pub fn insert(&mut self, dialect: Dialect) {
        match dialect {
            Dialect::Template(i) if i < 64 => self.templates |= 1 << i,
            Dialect::Template(_) => {}
            builtin => self.builtins |= Self::bit(builtin),
        }
    }

    /// Whether `dialect` is in the set.
    pub fn contains(self, dialect: Dialect) -> bool {
        match dialect {
            Dialect::Template(i) => i < 64 && self.templates & (1 << i) != 0,
            builtin => self.builtins & Self::bit(builtin) != 0,
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.builtins == 0 && self.templates == 0
    }

    /// The dialects in canonical order: W3C, B3, B3 multi, Jaeger, then formats by index.
    pub fn iter(self) -> impl Iterator<Item = Dialect> {
        let builtins = BUILTINS
            .into_iter()
            .filter(move |(_, bit)| self.builtins & bit != 0)
            .map(|(d, _)| d);
        builtins.chain(self.template_indexes().map(Dialect::Template))
    }

    /// The indexes of the template formats in the set, ascending (one step per member).
    pub fn template_indexes(self) -> impl Iterator<Item = u16> {
        let mut rest = self.templates;
        std::iter::from_fn(move || {
            let index = rest.trailing_zeros();
            rest &= rest.checked_sub(1)?;
            u16::try_from(index).ok()
        })
    }

    /// The comma-separated label of the set's built-ins, in canonical order (empty if none).
    pub fn builtins_label(self) -> &'static str {
        BUILTIN_LABELS[usize::from(self.builtins & 0xf)]
    }

    /// The comma-separated label of a set without templates (canonical order); `None` when
    /// the set holds a template, whose name lives in the rules.
    pub fn builtin_label(self) -> Option<&'static str> {
        (self.templates == 0).then(|| self.builtins_label())
    }

    fn bit(builtin: Dialect) -> u8 {
        BUILTINS
            .iter()
            .find(|(d, _)| *d == builtin)
            .map_or(0, |(_, bit)| *bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_labels_match_the_canonical_order() {
        for bits in 0..16u8 {
            let set = DialectSet::of(
                BUILTINS
                    .iter()
                    .filter(|(_, bit)| bits & bit != 0)
                    .map(|(d, _)| *d),
            );
            let joined: Vec<&str> = set.iter().filter_map(Dialect::builtin_name).collect();
            assert_eq!(set.builtin_label(), Some(joined.join(",").as_str()));
        }
    }

    #[test]
    fn templates_are_members_in_index_order() {
        let set = DialectSet::of([
            Dialect::Template(3),
            Dialect::Jaeger,
            Dialect::Template(0),
            Dialect::Template(63),
            Dialect::Template(64),
        ]);
        assert!(set.contains(Dialect::Template(3)) && !set.contains(Dialect::Template(1)));
        assert!(!set.contains(Dialect::Template(64)));
        assert_eq!(set.builtin_label(), None);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [
                Dialect::Jaeger,
                Dialect::Template(0),
                Dialect::Template(3),
                Dialect::Template(63)
            ]
        );
        assert!(DialectSet::default().is_empty());
    }
}
