//! `returner-host new NAME`: a buildable returner crate from the template in
//! `host/template/` (embedded, so the binary works outside this repository):
//! a JSON-files returner that passes `returner-host test` as generated, a
//! README, and a CI script and workflow that build it and run the suite.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

/// The template's files: path in the new crate, contents, executable.
const FILES: &[(&str, &str, bool)] = &[
    ("Cargo.toml", include_str!("../template/Cargo.toml.tmpl"), false),
    ("src/lib.rs", include_str!("../template/src/lib.rs"), false),
    ("README.md", include_str!("../template/README.md"), false),
    ("ci/contract-test.sh", include_str!("../template/ci/contract-test.sh"), true),
    (".github/workflows/contract.yml", include_str!("../template/.github/workflows/contract.yml"), false),
    (".gitignore", include_str!("../template/gitignore"), false),
];

/// The SDK of the checkout this binary was built from, when it is still there.
const BUILT_FROM_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk");

/// Arguments of `returner-host new`.
#[derive(Clone, Debug, clap::Args)]
pub struct NewArgs {
    /// The crate's name (letters, digits, `-`, `_`); the component is NAME.wasm with `_` for `-`.
    pub name: String,
    /// Where to create it (default: ./NAME); must not exist or be empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Depend on returner-sdk at this path (a returner-host checkout's `guest-sdk/`).
    #[arg(long, conflicts_with = "sdk_git")]
    pub sdk_path: Option<PathBuf>,
    /// Depend on returner-sdk from this git repository (returner-host's).
    #[arg(long)]
    pub sdk_git: Option<String>,
    /// With --sdk-git: the tag, branch or commit to pin.
    #[arg(long, requires = "sdk_git")]
    pub sdk_rev: Option<String>,
}

/// Create the crate; prints where, and how to build and test it.
pub fn create(args: &NewArgs) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!("`{name}` is not a crate name: use letters, digits, `-` and `_`, starting with a letter");
    }
    let crate_name = name.replace('-', "_");
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; choose another --dir", dir.display());
    }
    let (dependency, host_git) = sdk_dependency(args)?;
    for (path, text, executable) in FILES {
        let text = text
            .replace("{{name}}", name)
            .replace("{{crate_name}}", &crate_name)
            .replace("{{sdk_dependency}}", &dependency)
            .replace("{{host_git}}", &host_git);
        write(&dir.join(path), &text, *executable)?;
    }
    println!("created {} ({dependency})", dir.display());
    println!("  cd {} && cargo build --release --target wasm32-wasip2", dir.display());
    println!("  returner-host test target/wasm32-wasip2/release/{crate_name}.wasm");
    Ok(ExitCode::SUCCESS)
}

/// The `returner-sdk = ...` line, and the repository for the CI workflow.
fn sdk_dependency(args: &NewArgs) -> anyhow::Result<(String, String)> {
    let toml_str = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let unknown_git = "https://REPLACE-WITH-THE-RETURNER-HOST-REPOSITORY".to_owned();
    if let Some(url) = &args.sdk_git {
        let rev = args.sdk_rev.as_deref().map(|r| format!(", rev = {}", toml_str(r))).unwrap_or_default();
        return Ok((format!("returner-sdk = {{ git = {}{rev} }}", toml_str(url)), url.clone()));
    }
    let path = match &args.sdk_path {
        Some(path) => path.clone(),
        None if Path::new(BUILT_FROM_SDK).join("Cargo.toml").is_file() => PathBuf::from(BUILT_FROM_SDK),
        None => bail!(
            "say where the new crate gets returner-sdk: --sdk-git URL [--sdk-rev TAG] (the returner-host repository) \
             or --sdk-path DIR (guest-sdk/ of a returner-host checkout)"
        ),
    };
    let path = path
        .canonicalize()
        .with_context(|| format!("the returner-sdk directory {}", path.display()))?;
    if !path.join("Cargo.toml").is_file() {
        bail!("{} has no Cargo.toml: --sdk-path must name returner-host's guest-sdk/", path.display());
    }
    Ok((format!("returner-sdk = {{ path = {} }}", toml_str(&path.to_string_lossy())), unknown_git))
}

fn write(path: &Path, text: &str, executable: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    if executable {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(name: &str) -> NewArgs {
        NewArgs { name: name.into(), dir: None, sdk_path: None, sdk_git: None, sdk_rev: None }
    }

    #[test]
    fn a_git_sdk_is_pinned_and_named_in_the_ci_workflow() {
        let mut a = args("x");
        a.sdk_git = Some("https://git.example/returner-host.git".into());
        a.sdk_rev = Some("v0.1.0".into());
        let (dependency, git) = sdk_dependency(&a).unwrap();
        assert_eq!(dependency, r#"returner-sdk = { git = "https://git.example/returner-host.git", rev = "v0.1.0" }"#);
        assert_eq!(git, "https://git.example/returner-host.git");
    }

    #[test]
    fn a_path_sdk_must_be_the_sdk() {
        let mut a = args("x");
        a.sdk_path = Some(PathBuf::from(BUILT_FROM_SDK));
        let (dependency, _) = sdk_dependency(&a).unwrap();
        assert!(dependency.starts_with("returner-sdk = { path = \"/") && dependency.ends_with("guest-sdk\" }"), "{dependency}");
        a.sdk_path = Some(std::env::temp_dir());
        assert!(sdk_dependency(&a).unwrap_err().to_string().contains("must name returner-host's guest-sdk/"));
    }

    #[test]
    fn names_and_directories_are_checked_before_writing() {
        let err = create(&args("1bad name")).unwrap_err().to_string();
        assert!(err.contains("is not a crate name"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let mut a = args("ok-name");
        a.dir = Some(dir.path().to_owned());
        assert!(create(&a).unwrap_err().to_string().contains("already exists and is not empty"));
        assert_eq!(std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(), "mine");
    }

    #[test]
    fn every_placeholder_is_filled() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args("my-returner");
        a.dir = Some(dir.path().join("my-returner"));
        a.sdk_git = Some("https://git.example/returner-host.git".into());
        create(&a).unwrap();
        for (path, _, _) in FILES {
            let text = std::fs::read_to_string(dir.path().join("my-returner").join(path)).unwrap();
            assert!(!text.contains("{{"), "{path} keeps a placeholder");
        }
        let script = dir.path().join("my-returner/ci/contract-test.sh");
        assert!(std::fs::read_to_string(&script).unwrap().contains("release/my_returner.wasm"));
    }
}
