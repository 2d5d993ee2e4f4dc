//! Rules that come from running every API in one process: Cortex gave each API its own
//! container, soma gives them one Python interpreter, where `os.environ`, `sys.path` and
//! the imported modules are shared. What would silently change meaning there is refused.

use std::collections::BTreeMap;
use std::path::Path;

use crate::spec::ApiSpec;
use crate::walk::Walker;

const SEPARATE: &str = "soma runs every API of a cortex.yaml in one Python interpreter; \
                        run such APIs in separate soma processes (a cortex.yaml each)";

/// `handler.env`: a variable two APIs set to different values would hold the last API's
/// value for both.
pub(crate) fn check_env(walker: &mut Walker, apis: &[ApiSpec]) {
    let mut set: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for api in apis {
        walker.api = Some(format!("{} ({})", api.name, api.kind));
        for (key, value) in &api.handler.env {
            match set.get(key.as_str()) {
                Some((other, theirs)) if theirs != value => walker.error(
                    &["handler", "env", key],
                    format!(
                        "API {other} sets {key} to another value, and os.environ is shared: {SEPARATE}"
                    ),
                ),
                Some(_) => {}
                None => {
                    set.insert(key, (&api.name, value));
                }
            }
        }
    }
    walker.api = None;
}

/// `handler.python_path`: a module name found in two APIs' different folders would be
/// imported from the first API's folder for both.
pub(crate) fn check_python_paths(walker: &mut Walker, apis: &[ApiSpec], project_dir: &Path) {
    // Module name → (API, folder).
    let mut modules: BTreeMap<String, (&str, &Path)> = BTreeMap::new();
    // Every API has the project folder on its path: a module there that an API's own
    // folder also has would reach the other APIs from that folder once it is imported.
    let in_project: Vec<String> = match apis.len() {
        0 | 1 => Vec::new(),
        _ => module_names(project_dir),
    };
    for api in apis {
        let Some(folder) = &api.handler.python_path else {
            continue;
        };
        walker.api = Some(format!("{} ({})", api.name, api.kind));
        for name in module_names(&project_dir.join(folder)) {
            if in_project.contains(&name) {
                walker.error(
                    &["handler", "python_path"],
                    format!(
                        "module {name} is in {} and in the project folder, which every API \
                         has on its path, and imported modules are shared (the other APIs \
                         would get this API's {name} once imported): rename one, or {SEPARATE}",
                        folder.display()
                    ),
                );
            }
        }
        for name in module_names(&project_dir.join(folder)) {
            match modules.get(&name) {
                Some((_, theirs)) if same_folder(theirs, folder) => {}
                Some((other, theirs)) => walker.error(
                    &["handler", "python_path"],
                    format!(
                        "module {name} is in {} and in API {other}'s {}, and imported modules \
                         are shared (both APIs would get the one imported first): rename one, \
                         or {SEPARATE}",
                        folder.display(),
                        theirs.display()
                    ),
                ),
                None => {
                    modules.insert(name, (&api.name, folder));
                }
            }
        }
    }
    walker.api = None;
}

/// `a` and `./a` are one folder.
fn same_folder(a: &Path, b: &Path) -> bool {
    let clean = |p: &Path| {
        p.components()
            .filter(|c| *c != std::path::Component::CurDir)
            .collect::<std::path::PathBuf>()
    };
    clean(a) == clean(b)
}

/// The top-level modules a folder on `sys.path` provides: `x.py`, `x.cpython-311-*.so`
/// and packages (folders, namespace packages included).
fn module_names(folder: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let is_dir = entry.path().is_dir();
            let stem = match is_dir {
                true => name.as_str(),
                false if name.ends_with(".py") || name.ends_with(".so") => {
                    name.split('.').next()?
                }
                false => return None,
            };
            let identifier = stem
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && stem.chars().all(|c| c.is_alphanumeric() || c == '_');
            // `__init__.py`, `__pycache__`, `__main__.py`: not imported by name.
            (identifier && !stem.starts_with("__")).then(|| stem.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}
