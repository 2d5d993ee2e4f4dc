//! ASCII file trees for error messages (Cortex style).

use std::collections::BTreeMap;

/// At most this many keys are rendered in "its current structure".
pub(crate) const TREE_LIMIT: usize = 50;

#[derive(Default)]
struct Node {
    children: BTreeMap<String, Node>,
    is_dir: bool,
}

/// Renders object keys (relative, `/`-separated) as a tree. Only the first `limit` keys (in
/// sorted order) are shown; if there are more, a final `...` line says so.
pub(crate) fn render_tree<'a>(keys: impl IntoIterator<Item = &'a str>, limit: usize) -> String {
    let mut root = Node::default();
    let mut truncated = false;
    for (count, key) in keys.into_iter().enumerate() {
        if count == limit {
            truncated = true;
            break;
        }
        let mut node = &mut root;
        let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            node = node.children.entry((*part).to_string()).or_default();
            if i + 1 < parts.len() {
                node.is_dir = true;
            }
        }
    }
    let mut out = String::new();
    render(&root, "", &mut out);
    if truncated {
        out.push_str("...\n");
    }
    out
}

fn render(node: &Node, indent: &str, out: &mut String) {
    let count = node.children.len();
    for (i, (name, child)) in node.children.iter().enumerate() {
        let last = i + 1 == count;
        out.push_str(indent);
        out.push_str(if last { "└── " } else { "├── " });
        out.push_str(name);
        if child.is_dir {
            out.push('/');
        }
        out.push('\n');
        let deeper = format!("{indent}{}", if last { "    " } else { "│   " });
        render(child, &deeper, out);
    }
}

/// The versioned TensorFlow layout Cortex shows in its error messages.
pub(crate) const TF_VERSIONED: &str = "\
├── 1523423423/ (Version prefix, usually a timestamp)
│   ├── saved_model.pb
│   └── variables/
│       ├── variables.index
│       ├── variables.data-00000-of-00003
│       ├── variables.data-00001-of-00003
│       └── variables.data-00002-of-...
└── 2434389194/ (Version prefix, usually a timestamp)
    ├── saved_model.pb
    └── variables/
        ├── variables.index
        ├── variables.data-00000-of-00003
        ├── variables.data-00001-of-00003
        └── variables.data-00002-of-...
";

/// The non-versioned TensorFlow layout.
pub(crate) const TF_NON_VERSIONED: &str = "\
├── saved_model.pb
└── variables/
    ├── variables.index
    ├── variables.data-00000-of-00003
    ├── variables.data-00001-of-00003
    └── variables.data-00002-of-...
";

/// The versioned Neuron layout (only `saved_model.pb` is required).
pub(crate) const NEURON_VERSIONED: &str = "\
├── 1523423423/ (Version prefix, usually a timestamp)
│   └── saved_model.pb
└── 2434389194/ (Version prefix, usually a timestamp)
    └── saved_model.pb
";

/// The non-versioned Neuron layout.
pub(crate) const NEURON_NON_VERSIONED: &str = "\
└── saved_model.pb
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_nested_keys() {
        let keys = ["1/saved_model.pb", "1/variables/variables.index", "extra"];
        let tree = render_tree(keys.iter().copied(), TREE_LIMIT);
        assert_eq!(
            tree,
            "├── 1/\n│   ├── saved_model.pb\n│   └── variables/\n│       └── variables.index\n└── extra\n"
        );
    }

    #[test]
    fn truncates_at_the_limit() {
        let keys: Vec<String> = (0..60).map(|i| format!("f{i:03}")).collect();
        let tree = render_tree(keys.iter().map(String::as_str), TREE_LIMIT);
        assert_eq!(tree.lines().count(), TREE_LIMIT + 1);
        assert!(tree.contains("f049"));
        assert!(!tree.contains("f050"));
        assert!(tree.ends_with("...\n"));
    }
}
