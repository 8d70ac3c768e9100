//! HTTP basic auth, required when the dashboard listens beyond loopback.
//!
//! The password is stored as a crypt hash (`$6$`/`$5$`, what
//! `openssl passwd -6` prints), read from the systemd credential
//! `web-password` (`LoadCredential=`, so the file can stay root-only) or
//! from `[web] password_file`. Hashing is slow on purpose; a header that
//! was verified once is remembered (as its SHA-256) for the life of the
//! process, so a page with keep-alive requests pays for it once.

use std::cell::RefCell;
use std::path::PathBuf;

use anyhow::bail;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::config::WebSettings;
use crate::exit::{Coded, Exit};

/// The credential name the generator's `LoadCredential=` uses.
pub const CREDENTIAL: &str = crate::generator::WEB_PASSWORD_CREDENTIAL;

pub struct Auth {
    user: String,
    hash: String,
    verified: RefCell<Option<[u8; 32]>>,
}

impl Auth {
    /// Load the password hash; the error says how to make one.
    /// `listening`: the address served, named in the message.
    pub fn load(web: &WebSettings, listening: &str) -> anyhow::Result<Auth> {
        let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|d| PathBuf::from(d).join(CREDENTIAL))
            .filter(|p| p.exists());
        let path = credential.unwrap_or_else(|| web.password_file.clone());
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                // Coded is the root cause, not a context: exit::code_for
                // looks for it among the causes (a context is not one).
                let cause = Coded::new(
                    Exit::Config,
                    format!("cannot read the password hash {}: {e}", path.display()),
                );
                return Err(anyhow::Error::new(cause).context(format!(
                    "the dashboard listens on {listening}, where other machines can connect, so it requires a password, and it has none. \
                     Make one: `openssl passwd -6 | sudo install -m 600 /dev/stdin {}`, then \
                     `sudo systemctl daemon-reload` (or set [web] host = \"127.0.0.1\")",
                    web.password_file.display()
                )));
            }
        };
        let hash = text.trim().to_string();
        if let Err(e) = Auth::check_format(&hash) {
            let cause = Coded::new(
                Exit::Config,
                format!("{}: not a password hash: {e}", path.display()),
            );
            return Err(
                anyhow::Error::new(cause).context("the dashboard's password hash cannot be used")
            );
        }
        Ok(Auth {
            user: web.user.clone(),
            hash,
            verified: RefCell::new(None),
        })
    }

    fn check_format(hash: &str) -> anyhow::Result<()> {
        if !(hash.starts_with("$6$") || hash.starts_with("$5$"))
            || hash.contains(char::is_whitespace)
        {
            bail!(
                "expected one SHA-crypt hash ($6$... or $5$...), as `openssl passwd -6` prints it; \
                 yescrypt ($y$, mkpasswd's default) is not supported"
            );
        }
        Ok(())
    }

    /// Whether an `Authorization` header carries the right user and password.
    pub fn allows(&self, header: Option<&[u8]>) -> bool {
        let Some(header) = header else { return false };
        let digest: [u8; 32] = Sha256::digest(header).into();
        if let Some(known) = self.verified.borrow().as_ref()
            && *known == digest
        {
            return true;
        }
        let Some(encoded) = header
            .strip_prefix(b"Basic ")
            .or_else(|| header.strip_prefix(b"basic "))
        else {
            return false;
        };
        let Ok(decoded) = STANDARD.decode(encoded.trim_ascii()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = text.split_once(':') else {
            return false;
        };
        let ok = user == self.user
            && if self.hash.starts_with("$6$") {
                sha_crypt::sha512_check(password, &self.hash).is_ok()
            } else {
                sha_crypt::sha256_check(password, &self.hash).is_ok()
            };
        if ok {
            *self.verified.borrow_mut() = Some(digest);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `openssl passwd -6 -salt saltsalt secret`
    const HASH: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

    fn auth(hash: &str) -> Auth {
        Auth {
            user: "admin".into(),
            hash: hash.into(),
            verified: RefCell::new(None),
        }
    }

    fn header(user_pass: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(user_pass)).into_bytes()
    }

    #[test]
    fn the_right_user_and_password_pass_and_nothing_else() {
        let a = auth(HASH);
        assert!(!a.allows(None));
        assert!(!a.allows(Some(&header("admin:wrong"))));
        assert!(!a.allows(Some(&header("root:secret"))));
        assert!(!a.allows(Some(b"Basic !!!")));
        assert!(!a.allows(Some(b"Bearer secret")));
        assert!(a.allows(Some(&header("admin:secret"))));
        // Remembered, and still only for that header.
        assert!(a.allows(Some(&header("admin:secret"))));
        assert!(!a.allows(Some(&header("admin:secret2"))));
    }

    #[test]
    fn only_sha_crypt_hashes_are_accepted() {
        assert!(Auth::check_format(HASH).is_ok());
        assert!(Auth::check_format("$y$j9T$abc$def").is_err());
        assert!(Auth::check_format("secret").is_err());
    }
}
