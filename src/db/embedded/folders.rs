//! The private server's folders and files: where its data may live, and who may read it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use nix::unistd::User;

use super::as_user;

/// The data folder, made absolute; as root, one the `postgres` user can reach.
pub(super) fn choose_root(data_dir: &Path, run_as: Option<&User>) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(data_dir)
        .with_context(|| format!("Failed to create {}", data_dir.display()))?;
    let root = data_dir.canonicalize()?;
    let Some(user) = run_as else { return Ok(root) };
    if user_can_enter(user, &root)? {
        return Ok(root);
    }
    let fallback = fallback_root(&root);
    tracing::warn!(
        data_dir = %root.display(),
        fallback = %fallback.display(),
        "the postgres user cannot reach the data folder; keeping PostgreSQL's data in the fallback"
    );
    fs::create_dir_all(&fallback)?;
    refuse_foreign_dir(&fallback)?;
    // The postgres user passes through to its pgdata (0700, its own); nobody lists it.
    fs::set_permissions(&fallback, fs::Permissions::from_mode(0o711))?;
    Ok(fallback)
}

/// Where the data for `root` goes when the `postgres` user cannot enter it: a folder under
/// the temp folder named after `root`, so each data folder keeps its own cluster.
pub(super) fn fallback_root(root: &Path) -> PathBuf {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(root.as_os_str().as_encoded_bytes());
    std::env::temp_dir().join(format!("flashsale-{}", &hex::encode(digest)[..12]))
}

/// A fallback folder under the shared temp folder may have been made by someone else
/// (anyone can create `/tmp/flashsale-…` first): its owner could read the password and
/// swap the cluster. Only a real folder (not a link) owned by this process's user will do.
pub(super) fn refuse_foreign_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(dir)
        .with_context(|| format!("Failed to inspect {}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_dir() || meta.uid() != me {
        bail!(
            "refusing the fallback data folder {}: it is {} owned by uid {}, not a folder of this \
             process's user (uid {me}); remove it, or set FLASHSALE_DATA_DIR to a folder the \
             postgres user can reach",
            dir.display(),
            if meta.file_type().is_dir() {
                "a folder"
            } else {
                "not a folder"
            },
            meta.uid()
        );
    }
    Ok(())
}

/// Creates (or truncates) `path` readable and writable by its owner only, whatever the
/// umask, and writes `contents`.
pub(super) fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("Failed to create {}", path.display()))?;
    // `mode` applies only to a new file: an older one keeps its bits unless set here.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)?;
    Ok(())
}

fn user_can_enter(user: &User, dir: &Path) -> anyhow::Result<bool> {
    let mut cmd = Command::new("test");
    cmd.arg("-x").arg(dir);
    as_user(&mut cmd, Some(user));
    Ok(cmd.status().context("Failed to run `test`")?.success())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("flashsale-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_file(&dir);
        dir
    }

    #[test]
    fn private_files_are_private_whatever_was_there() {
        let dir = scratch("private");
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        fs::write(&file, "old").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&file, b"secret").unwrap();
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_to_string(&file).unwrap(), "secret");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_fallback_folder_that_is_not_ours_is_refused() {
        let mine = scratch("mine");
        fs::create_dir_all(&mine).unwrap();
        refuse_foreign_dir(&mine).expect("our own folder is fine");

        // A link planted where the folder would be.
        let link = scratch("link");
        std::os::unix::fs::symlink(&mine, &link).unwrap();
        let err = refuse_foreign_dir(&link).unwrap_err().to_string();
        assert!(err.contains("refusing the fallback data folder"), "{err}");
        fs::remove_file(&link).unwrap();

        // As root (as CI runs): a folder someone else made first.
        if nix::unistd::geteuid().is_root() {
            let nobody = User::from_name("nobody").unwrap().expect("user nobody");
            nix::unistd::chown(&mine, Some(nobody.uid), Some(nobody.gid)).unwrap();
            let err = refuse_foreign_dir(&mine).unwrap_err().to_string();
            assert!(err.contains("owned by uid"), "{err}");
        }
        fs::remove_dir_all(&mine).unwrap();
    }
}
