//! What `--site` and `--type` accept: the text the outputs print. A site is
//! picked by `FILE:LINE` as `top` prints it (or the file's last path
//! components: `main.rs:39`), by file, or by text its function contains; a
//! type by its label, the label's last path components (`Node` for
//! `app::Node`), or text the label contains, the best kind of match found
//! winning.

use crate::site::{LABEL_WIDTH, Site, abbreviate_type};

/// How a type label matches the text given, best first: when one label
/// matches in a better way, the worse matches are left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TypeMatch {
    /// The label is the text.
    Exact,
    /// The label is a path ending in the text's path components
    /// (`app::tree::Node` for `Node` or `tree::Node`).
    Name,
    /// The label contains the text (`Vec<app::Node> buffer` for `Node`).
    Contains,
}

/// How `label` matches `text`, if at all. The label as text tables print
/// it when it is long (abbreviated) is the label too.
pub fn type_match(label: &str, text: &str) -> Option<TypeMatch> {
    if label == text || abbreviate_type(label, LABEL_WIDTH) == text {
        Some(TypeMatch::Exact)
    } else if label
        .strip_suffix(text)
        .is_some_and(|head| head.ends_with("::"))
    {
        Some(TypeMatch::Name)
    } else if label.contains(text) {
        Some(TypeMatch::Contains)
    } else {
        None
    }
}

/// The items whose match is the best one among all of them; empty when
/// none matches.
pub fn best_matches<T>(candidates: impl IntoIterator<Item = (T, Option<TypeMatch>)>) -> Vec<T> {
    let mut best: Option<TypeMatch> = None;
    let mut out = Vec::new();
    for (item, matched) in candidates {
        let Some(matched) = matched else { continue };
        match best {
            Some(b) if matched > b => continue,
            Some(b) if matched == b => {}
            _ => {
                best = Some(matched);
                out.clear();
            }
        }
        out.push(item);
    }
    out
}

/// Whether `site` is what `text` names: `FILE:LINE` or `FILE`, where FILE
/// is the site's file or its last path components (`main.rs`,
/// `src/main.rs`), or else text the site's function contains. A site in a
/// dependency is also named by its own frame (the program's call that led
/// there), the same ways.
pub fn site_matches(site: &Site, text: &str) -> bool {
    location_matches(&site.function, site.file.as_deref(), site.line, text)
        || site
            .own_frame
            .as_ref()
            .is_some_and(|f| location_matches(&f.function, f.file.as_deref(), f.line, text))
}

/// Whether a frame's function, file and line are what `text` names, as
/// [`site_matches`] reads it.
fn location_matches(function: &str, file: Option<&str>, line: Option<u32>, text: &str) -> bool {
    let file_is = |wanted: &str| {
        file.is_some_and(|f| {
            f == wanted
                || f.strip_suffix(wanted)
                    .is_some_and(|head| head.ends_with('/'))
        })
    };
    if let Some((wanted, wanted_line)) = text.rsplit_once(':')
        && let Ok(wanted_line) = wanted_line.parse::<u32>()
    {
        return line == Some(wanted_line) && file_is(wanted);
    }
    file_is(text) || function.contains(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(function: &str, file: Option<&str>, line: Option<u32>) -> Site {
        Site {
            function: function.to_owned(),
            file: file.map(str::to_owned),
            line,
            inlined_into: None,
            own_frame: None,
        }
    }

    #[test]
    fn a_site_is_named_by_file_and_line_as_top_prints_them_or_by_function() {
        let s = site("bigapp::build", Some("/src/bigapp/src/main.rs"), Some(39));
        for text in [
            "main.rs:39",
            "src/main.rs:39",
            "/src/bigapp/src/main.rs:39",
            "main.rs",
            "bigapp::build",
            "build",
        ] {
            assert!(site_matches(&s, text), "{text}");
        }
        for text in [
            "main.rs:3",
            "ain.rs:39",
            "main.rs:390",
            "other.rs",
            "lib.rs:39",
        ] {
            assert!(!site_matches(&s, text), "{text}");
        }
        // A function with `::` is not taken for FILE:LINE.
        assert!(site_matches(&s, "bigapp::"));
        // Without a file, only the function names it.
        let unknown = site("<unknown>", None, None);
        assert!(!site_matches(&unknown, "main.rs:39"));
        assert!(site_matches(&unknown, "unknown"));
    }

    #[test]
    fn a_site_in_a_dependency_is_also_named_by_its_own_frame() {
        let mut s = site(
            "indexmap::map::core::reserve_entries",
            Some("/r/registry/src/i/indexmap-2.14.2/src/map/core.rs"),
            Some(215),
        );
        s.own_frame = Some(crate::site::OwnFrame {
            function: "words::index_words".into(),
            file: Some("/home/u/words/src/index.rs".into()),
            line: Some(12),
        });
        for text in ["index_words", "index.rs:12", "src/index.rs", "core.rs:215"] {
            assert!(site_matches(&s, text), "{text}");
        }
        assert!(!site_matches(&s, "index.rs:215"));
    }

    #[test]
    fn a_type_named_by_its_last_path_components_wins_over_labels_containing_it() {
        let labels = [
            "Vec<Option<Box<bigapp::Node>>> buffer",
            "bigapp::Node",
            "bigapp::NodeList",
            "other::tree::Node",
        ];
        let pick =
            |text: &str| best_matches(labels.iter().map(|label| (*label, type_match(label, text))));
        assert_eq!(pick("Node"), ["bigapp::Node", "other::tree::Node"]);
        assert_eq!(pick("tree::Node"), ["other::tree::Node"]);
        assert_eq!(pick("bigapp::Node"), ["bigapp::Node"]);
        assert_eq!(pick("NodeList"), ["bigapp::NodeList"]);
        assert_eq!(
            pick("Box<bigapp"),
            ["Vec<Option<Box<bigapp::Node>>> buffer"]
        );
        assert_eq!(pick("Missing"), Vec::<&str>::new());
        assert_eq!(type_match("app::Node", "Node"), Some(TypeMatch::Name));
        // A long label, given as the tables print it.
        let long = format!(
            "Vec<({}, app::Leaf)> buffer",
            ["app::module::Item"; 8].join(", ")
        );
        let printed = abbreviate_type(&long, LABEL_WIDTH);
        assert_ne!(printed, long);
        assert_eq!(type_match(&long, &printed), Some(TypeMatch::Exact));
        assert_eq!(type_match("app::MyNode", "Node"), Some(TypeMatch::Contains));
    }
}
