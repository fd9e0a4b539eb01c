//! RSA key pairs made for a test by the `openssl` command (rcgen on ring cannot make RSA keys),
//! as an integration user's JWT bearer certificate would be.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh 2048-bit RSA key pair in `dir`: the private key (PKCS#8 PEM) and its public key
/// (`BEGIN PUBLIC KEY`).
pub struct RsaKeyPair {
    pub private_key_file: PathBuf,
    pub public_key_file: PathBuf,
}

impl RsaKeyPair {
    pub fn generate(dir: &Path, name: &str) -> RsaKeyPair {
        let private_key_file = dir.join(format!("{name}.key.pem"));
        let public_key_file = dir.join(format!("{name}.pub.pem"));
        let run = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("the openssl command runs (.ci/run installs it)");
            assert!(status.success(), "openssl {args:?}");
        };
        let private = private_key_file.to_str().unwrap();
        run(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            private,
        ]);
        run(&[
            "pkey",
            "-in",
            private,
            "-pubout",
            "-out",
            public_key_file.to_str().unwrap(),
        ]);
        RsaKeyPair {
            private_key_file,
            public_key_file,
        }
    }

    pub fn private_pem(&self) -> Vec<u8> {
        std::fs::read(&self.private_key_file).unwrap()
    }
}
