//! Registry credentials as Docker, Podman and skopeo share them, through
//! the `layerfs` command against a registry that asks for a password: a
//! credential helper named by Docker's config.json (a stub speaking the
//! protocol, and the real `docker-credential-pass` over a throwaway gpg key
//! and pass store), Podman's auth.json, and `login -p` with Docker's warning.

use crate::support::writable::Registry;
use crate::support::{Env, Tar, have_tool, stub_credential_helper};
use std::path::{Path, PathBuf};
use std::process::Output;

const USER: &str = "ann";
const PASS: &str = "s3cret-pw";

/// A home of its own for the command: Docker's, Podman's and our config
/// all inside `dir`, helpers found first in `dir/bin`.
struct Home {
    dir: PathBuf,
}

impl Home {
    fn new(env: &Env) -> Home {
        let dir = env.mkdir("home");
        for d in ["bin", ".docker", "run", ".config"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        Home { dir }
    }

    fn docker_config(&self, json: &str) {
        std::fs::write(self.dir.join(".docker/config.json"), json).unwrap();
    }

    fn run(&self, env: &Env, args: &[&str], extra: &[(&str, &Path)]) -> Output {
        self.run_input(env, args, extra, b"")
    }

    /// With `input` on stdin.
    fn run_input(&self, env: &Env, args: &[&str], extra: &[(&str, &Path)], input: &[u8]) -> Output {
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = env.cmd(args);
        cmd.env("HOME", &self.dir)
            .env("PATH", path)
            .env("XDG_RUNTIME_DIR", self.dir.join("run"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("LAYERFS_CONFIG_DIR")
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("run layerfs");
        use std::io::Write;
        let _ = child.stdin.take().expect("stdin").write_all(input);
        child.wait_with_output().expect("run layerfs")
    }

    fn ok(&self, env: &Env, args: &[&str], extra: &[(&str, &Path)]) -> (String, String) {
        let out = self.run(env, args, extra);
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "layerfs {args:?}: {e}");
        (o, e)
    }
}

/// A store with `img:1`, and a registry asking for USER/PASS.
fn setup(test: &str) -> Option<(Env, Registry)> {
    if !have_tool("docker-registry", test) || !have_tool("htpasswd", test) {
        return None;
    }
    let env = Env::new();
    let layer = Tar::new()
        .file("etc/greeting", 0o644, b"from the registry\n")
        .finish();
    env.image("img:1", &[layer]);
    let reg = Registry::start_with_password(&env.mkdir("registry"), USER, PASS);
    Some((env, reg))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn login_pull_and_logout_through_a_credential_helper() {
    const T: &str = "login_pull_and_logout_through_a_credential_helper";
    let Some((env, reg)) = setup(T) else { return };
    let home = Home::new(&env);
    stub_credential_helper(&home.dir.join("bin"), "stub");
    home.docker_config(r#"{"auths":{},"credsStore":"stub"}"#);
    let remote = format!("{}/team/app:1", reg.addr);

    let out = home.run(&env, &["push", "img:1", &remote], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("layerfs login"), "{}", stderr(&out));

    // -p: accepted, with Docker's warning; stored in the helper.
    let (o, e) = home.ok(&env, &["login", &reg.addr, "-u", USER, "-p", PASS], &[]);
    assert_eq!(o, "Login Succeeded\n");
    assert!(
        e.contains("WARNING! Using --password via the CLI is insecure. Use --password-stdin."),
        "{e}"
    );
    let kept = std::fs::read_to_string(home.dir.join("bin/stub.json")).unwrap();
    assert!(kept.contains(PASS), "{kept}");
    assert!(
        !home.dir.join(".config/layerfs/auth.json").exists(),
        "the password went into our file too"
    );

    home.ok(&env, &["push", "img:1", &remote], &[]);
    let env2 = Env::new();
    home.ok(&env2, &["pull", &remote], &[]);
    assert!(env2.ok(&["images"]).contains("team/app"));

    home.ok(&env, &["logout", &reg.addr], &[]);
    assert!(!home.dir.join("bin/stub.json").exists(), "not erased");
    let env3 = Env::new();
    let out = home.run(&env3, &["pull", &remote], &[]);
    assert_eq!(out.status.code(), Some(1), "pulled after logout");

    // Podman's and skopeo's auth.json: REGISTRY_AUTH_FILE, else
    // ${XDG_RUNTIME_DIR}/containers/auth.json.
    home.docker_config("{}");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    let podman = format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, reg.addr);
    let named = home.dir.join("auth-file.json");
    std::fs::write(&named, &podman).unwrap();
    home.ok(&env3, &["pull", &remote], &[("REGISTRY_AUTH_FILE", &named)]);
    let env4 = Env::new();
    std::fs::create_dir_all(home.dir.join("run/containers")).unwrap();
    std::fs::write(home.dir.join("run/containers/auth.json"), &podman).unwrap();
    home.ok(&env4, &["pull", &remote], &[]);

    // -p with --password-stdin is a usage error.
    let out = home.run(
        &env,
        &[
            "login",
            &reg.addr,
            "-u",
            USER,
            "-p",
            "x",
            "--password-stdin",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// The real helper from Debian (golang-docker-credential-helpers) over
/// `pass`, with a gpg key made for the test without a passphrase.
#[test]
fn docker_credential_pass_supplies_credentials_to_pull() {
    const T: &str = "docker_credential_pass_supplies_credentials_to_pull";
    if !have_tool("docker-credential-pass", T) || !have_tool("pass", T) || !have_tool("gpg", T) {
        return;
    }
    let Some((env, reg)) = setup(T) else { return };
    let home = Home::new(&env);
    let gnupg = home.dir.join("gnupg");
    let store = home.dir.join("password-store");
    let vars: [(&str, &Path); 2] = [("GNUPGHOME", &gnupg), ("PASSWORD_STORE_DIR", &store)];
    let sh = |script: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .envs(vars)
            .env("HOME", &home.dir)
            .output()
            .expect("sh");
        assert!(out.status.success(), "{script}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The agent this starts is stopped on the way out, passed or failed.
    struct Agent<'a>(&'a Path);
    impl Drop for Agent<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("gpgconf")
                .args(["--kill", "gpg-agent"])
                .env("GNUPGHOME", self.0)
                .status();
        }
    }
    std::fs::create_dir_all(&gnupg).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&gnupg, std::fs::Permissions::from_mode(0o700)).unwrap();
    let _agent = Agent(&gnupg);
    sh("gpg --batch --pinentry-mode loopback --passphrase '' \
        --quick-gen-key 'layerfs test <test@layerfs.invalid>' default default never 2>/dev/null");
    let fpr = sh("gpg --list-keys --with-colons | awk -F: '/^fpr/ { print $10; exit }'");
    sh(&format!("pass init {} >/dev/null", fpr.trim()));

    home.docker_config(r#"{"credsStore":"pass"}"#);
    let remote = format!("{}/team/app:1", reg.addr);
    let out = home.run_input(
        &env,
        &["login", &reg.addr, "-u", USER, "--password-stdin"],
        &vars,
        format!("{PASS}\n").as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // In pass's store, encrypted: not our file, not in clear anywhere.
    assert!(!home.dir.join(".config/layerfs/auth.json").exists());
    let listed = sh("docker-credential-pass list");
    assert!(listed.contains(&reg.addr), "{listed}");

    home.ok(&env, &["push", "img:1", &remote], &vars);
    let env2 = Env::new();
    home.ok(&env2, &["pull", &remote], &vars);
    assert!(env2.ok(&["images"]).contains("team/app"));
}
