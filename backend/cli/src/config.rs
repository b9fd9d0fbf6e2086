//! `~/.kalam/`: `config.toml` (defaults for `--url`, `--user`, `--format`),
//! `credentials.toml` (tokens from `kalam login`, readable by its owner only) and
//! `history`. `KALAM_HOME` moves the directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The directory of `kalam`'s files.
pub fn home() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KALAM_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".kalam"))
}

/// `config.toml`: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: Option<String>,
    pub user: Option<String>,
    pub format: Option<String>,
}

impl Config {
    /// The config file, or the defaults when there is none.
    pub fn load() -> Result<Config, String> {
        let Some(path) = home().map(|h| h.join("config.toml")) else {
            return Ok(Config::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}

/// A token saved by `kalam login`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedLogin {
    pub url: String,
    pub user: String,
    pub token: String,
    pub expires_at: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Credentials {
    #[serde(default)]
    login: Vec<SavedLogin>,
}

fn credentials_path() -> Option<PathBuf> {
    home().map(|h| h.join("credentials.toml"))
}

fn read_credentials(path: &Path) -> Credentials {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| toml::from_str(&text).ok())
        .unwrap_or_default()
}

/// The saved login for `url` (and `user`, when given).
pub fn saved_login(url: &str, user: Option<&str>) -> Option<SavedLogin> {
    let credentials = read_credentials(&credentials_path()?);
    credentials
        .login
        .into_iter()
        .find(|l| same_url(&l.url, url) && user.is_none_or(|u| u == l.user))
}

/// Saves `login`, replacing an earlier one for the same server; the file is
/// created readable and writable by its owner only (mode 0600, its directory 0700).
pub fn save_login(login: SavedLogin) -> Result<PathBuf, String> {
    let path = credentials_path().ok_or("no home directory: set HOME or KALAM_HOME")?;
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut credentials = read_credentials(&path);
    credentials.login.retain(|l| !same_url(&l.url, &login.url));
    credentials.login.push(login);
    let text = toml::to_string(&credentials).map_err(|e| format!("cannot encode the credentials: {e}"))?;
    write_private(&path, text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Writes through a fresh file created with owner-only permissions, renamed over
/// the old one: the token is never readable by others, not even for a moment.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("toml.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        if let Some(dir) = path.parent() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_saved_per_server_for_the_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: this is the only test of the crate that touches the environment.
        unsafe { std::env::set_var("KALAM_HOME", dir.path()) };
        let login = |url: &str, token: &str| SavedLogin {
            url: url.into(),
            user: "ana".into(),
            token: token.into(),
            expires_at: None,
        };
        save_login(login("http://a:1", "t1")).unwrap();
        save_login(login("http://b:2/", "t2")).unwrap();
        save_login(login("http://a:1/", "t3")).unwrap();
        assert_eq!(saved_login("http://a:1", None).unwrap().token, "t3");
        assert_eq!(saved_login("http://b:2", Some("ana")).unwrap().token, "t2");
        assert_eq!(saved_login("http://b:2", Some("bob")), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("credentials.toml"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
