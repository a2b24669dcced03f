//! The configuration reference documents every key of the model.

#[test]
fn every_key_is_documented() {
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let doc = std::fs::read_to_string(doc_path).expect("docs/configuration.md");
    let missing: Vec<String> = rampart_config::key_paths()
        .into_iter()
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from docs/configuration.md (written as `path`):\n{}",
        missing.join("\n")
    );
}

#[test]
fn documented_keys_exist() {
    // Every `path` that looks like a key in the reference tables is a real key.
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let doc = std::fs::read_to_string(doc_path).expect("docs/configuration.md");
    let keys = rampart_config::key_paths();
    let mut unknown = Vec::new();
    let top = rampart_config::Config::KEYS;
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let k = line
            .trim_start_matches("| `")
            .split('`')
            .next()
            .unwrap_or("");
        let root = k.split(['.', '[']).next().unwrap_or("");
        if top.contains(&root) && !keys.iter().any(|x| x == k) {
            unknown.push(k.to_owned());
        }
    }
    assert!(
        unknown.is_empty(),
        "documented keys that do not exist: {unknown:?}"
    );
}
