//! `layerfs run` as a Docker user scripts it: exit codes (125 when run
//! itself fails, 126 when the command cannot be invoked, 127 when it is not
//! found, the command's own otherwise), `--env-file`, and TERM with `-t`.

use crate::support::containers::minbase_env;

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_exit_codes_env_file_and_term() {
    const T: &str = "run_exit_codes_env_file_and_term";
    let Some(env) = minbase_env(T, "debian:exit", |c| {
        c.set_env("FROM_IMAGE", "image");
    }) else {
        return;
    };
    let img = "debian:exit";

    // The command's own code; 126 not executable (a file, a directory);
    // 127 not found (on PATH, or by path).
    let out = env.run(&["run", "--rm", img, "sh", "-c", "exit 3"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    for (argv, want) in [
        (&["/etc/passwd"][..], 126),
        (&["/usr"], 126),
        (&["no-such-command"], 127),
        (&["/no/such/file"], 127),
    ] {
        let mut args = vec!["run", "--rm", img];
        args.extend_from_slice(argv);
        let out = env.run(&args);
        assert_eq!(code(&out), want, "{argv:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("layerfs: "), "{}", stderr(&out));
    }

    // run's own failures: 125, with one line saying why.
    let refused = "127.0.0.1:1/nothing:1";
    for bad in [
        &["run", "--rm", "--no-such-flag", img, "true"][..],
        &["run", "--rm", "--cpus", "-1", img, "true"],
        &["run", "--rm", "-v", "/no/such/host/dir:/x", img, "true"],
        &[
            "run",
            "--rm",
            "--env-file",
            "/no/such/env-file",
            img,
            "true",
        ],
        &["run", "--rm", refused, "true"],
        &["run"],
    ] {
        let out = env.run(bad);
        assert_eq!(code(&out), 125, "{bad:?}: {}", stderr(&out));
        assert!(!stderr(&out).trim().is_empty(), "{bad:?}: no message");
    }
    let out = env.run(&["run", "--rm", refused, "true"]);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    // Other commands keep 2 for usage mistakes.
    assert_eq!(code(&env.run(&["images", "--no-such-flag"])), 2);

    // --env-file: Docker's format; -e wins over it, both over the image.
    let file = env.dir.path().join("app.env");
    std::fs::write(
        &file,
        "# settings\n\nA=from file\nB=\"quoted\" kept\nFROM_IMAGE=file\nHOST_VAR\nUNSET_ON_HOST\nC=file\n",
    )
    .unwrap();
    let out = env
        .cmd(&[
            "run",
            "--rm",
            "--env-file",
            file.to_str().unwrap(),
            "-e",
            "C=flag",
            img,
            "sh",
            "-c",
            "echo \"$A|$B|$FROM_IMAGE|$HOST_VAR|${UNSET_ON_HOST-unset}|$C|${TERM-no term}\"",
        ])
        .env("HOST_VAR", "from host")
        .env_remove("UNSET_ON_HOST")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from file|\"quoted\" kept|file|from host|unset|flag|no term\n"
    );
    std::fs::write(&file, "BAD KEY=1\n").unwrap();
    let out = env.run(&[
        "run",
        "--rm",
        "--env-file",
        file.to_str().unwrap(),
        img,
        "true",
    ]);
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("whitespace"), "{}", stderr(&out));

    // -t: TERM=xterm, as Docker sets it; the image's Env and -e still win.
    let out = env.run(&["run", "--rm", "-t", img, "sh", "-c", "echo $TERM"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "xterm\r\n",
        "{}",
        stderr(&out)
    );
    let out = env.run(&[
        "run",
        "--rm",
        "-t",
        "-e",
        "TERM=vt100",
        img,
        "sh",
        "-c",
        "echo $TERM",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "vt100\r\n");
}
