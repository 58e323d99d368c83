//! Bad command lines, bad config files, bad environment variables and missing certificates:
//! each refused with an error naming the key, where the value came from and what is expected,
//! and nothing started.

use crate::util::{app_deploy, run, stderr, stdout, temp_file};

fn assert_refused(output: &std::process::Output, code: i32, needles: &[&str]) {
    let err = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status; stderr:\n{err}\nstdout:\n{}",
        stdout(output)
    );
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in stderr:\n{err}");
    }
}

#[test]
fn help_teaches_the_commands() {
    let output = run(&["--help"], &[], None);
    assert!(output.status.success());
    let text = stdout(&output);
    for command in [
        "node", "demo", "status", "members", "names", "locks", "app", "cert",
    ] {
        assert!(
            text.contains(command),
            "{command} missing from --help:\n{text}"
        );
    }
    let output = run(&["node", "--help"], &[], None);
    let text = stdout(&output);
    assert!(
        text.contains("ENSEMBLE_LISTEN") && text.contains("key: listen"),
        "{text}"
    );
}

#[test]
fn unknown_commands_and_flags_are_refused_by_the_parser() {
    assert_refused(&run(&["nodes"], &[], None), 2, &["nodes"]);
    assert_refused(
        &run(&["node", "--name", "n1", "--lisen", "x"], &[], None),
        2,
        &["--lisen"],
    );
    assert_refused(&run(&["app", "deploy"], &[], None), 2, &["FILE"]);
}

#[test]
fn a_bad_flag_value_names_the_key_and_the_flag() {
    assert_refused(
        &run(&["node", "--name", "n1", "--listen", "nowhere"], &[], None),
        1,
        &["listen", "flag --listen", "HOST:PORT"],
    );
    assert_refused(
        &run(&["node", "--name", "n1", "--resource", "cpu"], &[], None),
        1,
        &["resources", "KEY=VALUE"],
    );
    assert_refused(&run(&["node"], &[], None), 1, &["--name", "ENSEMBLE_NAME"]);
    assert_refused(
        &run(
            &["node", "--name", "n1", "--listen", "0.0.0.0:7000"],
            &[],
            None,
        ),
        1,
        &["listen", "flag --listen", "not an address peers can dial"],
    );
    assert_refused(
        &run(&["node", "--name", "n1", "--join="], &[], None),
        1,
        &["join[0]", "empty", "leave join out to start a new cluster"],
    );
    // A key given twice, or none before the '=': said so, not the last one taken.
    assert_refused(
        &run(
            &[
                "node",
                "--name",
                "n1",
                "--resource",
                "cpu=1",
                "--resource",
                "cpu=4000",
            ],
            &[],
            None,
        ),
        1,
        &["resources.cpu", "flag --resource", "given twice"],
    );
    assert_refused(
        &run(&["node", "--name", "n1", "--label", "=a"], &[], None),
        1,
        &["labels", "flag --label", "no key"],
    );
    // A name becomes a path: dots alone would be the data dir's own directory or parent.
    assert_refused(
        &run(&["node", "--name", ".."], &[], None),
        1,
        &["name", "flag --name", "not dots alone"],
    );
    // A token an HTTP header cannot carry would have every call refused.
    assert_refused(
        &run(
            &["node", "--name", "n1", "--admin-token", "pässwort"],
            &[],
            None,
        ),
        1,
        &[
            "admin.token",
            "flag --admin-token",
            "'ä'",
            "printable ASCII",
        ],
    );
}

#[test]
fn a_bad_environment_variable_is_named() {
    assert_refused(
        &run(
            &["node"],
            &[
                ("ENSEMBLE_NAME", "n1"),
                ("ENSEMBLE_JOIN", "127.0.0.1:7000,seed"),
            ],
            None,
        ),
        1,
        &["join[1]", "environment variable ENSEMBLE_JOIN", "no port"],
    );
}

#[test]
fn a_bad_config_file_names_the_file_and_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("node.toml");
    let file = path.to_str().unwrap();

    std::fs::write(&path, "name = \"n1\"\n[admin]\nlisten = \"127.0.0.1\"\n").unwrap();
    assert_refused(
        &run(&["node", "--config", file], &[], None),
        1,
        &["admin.listen", file, "no port"],
    );

    std::fs::write(&path, "name = \"n1\"\nseeds = []\n").unwrap();
    assert_refused(
        &run(&["node", "--config", file], &[], None),
        1,
        &[file, "seeds"],
    );

    std::fs::write(&path, "name = \"n1\"\n[registry]\nsession_ttl_ms = 100\n").unwrap();
    assert_refused(
        &run(&["node", "--config", file], &[], None),
        1,
        &[
            "registry.keepalive_interval",
            file,
            "[registry] keepalive_interval_ms",
        ],
    );
    std::fs::write(&path, "name = \"n1\"\n[registry]\nrequest_timeout_ms = 0\n").unwrap();
    assert_refused(
        &run(&["node", "--config", file], &[], None),
        1,
        &[
            "registry.request_timeout",
            "at least 1 ms",
            "[registry] request_timeout_ms",
        ],
    );

    assert_refused(
        &run(&["node", "--config", "/nonexistent/node.toml"], &[], None),
        1,
        &["cannot read config file /nonexistent/node.toml"],
    );
}

#[test]
fn missing_certificates_say_how_to_make_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("certs");
    assert_refused(
        &run(
            &["node", "--name", "n1", "--certs", certs.to_str().unwrap()],
            &[],
            Some(dir.path()),
        ),
        1,
        &["certs", "ensemble cert issue n1"],
    );
}

#[test]
fn ensemble_no_apps_takes_the_values_people_give_it() {
    // Each is taken (the node goes on to look for its certificates, and stops there), never
    // refused by the parser.
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("certs");
    for value in ["1", "true", "yes", "0", "false"] {
        let output = run(
            &["node", "--name", "n1", "--certs", certs.to_str().unwrap()],
            &[("ENSEMBLE_NO_APPS", value)],
            Some(dir.path()),
        );
        assert_refused(&output, 1, &["ensemble cert issue n1"]);
    }
}

#[test]
fn cert_init_and_issue_make_certificates_a_node_loads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("certs");
    let certs = certs.to_str().unwrap();
    let output = run(
        &["cert", "init", "--dir", certs, "--cluster", "c"],
        &[],
        None,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    // A second init would orphan every certificate issued: refused without --force.
    assert_refused(
        &run(&["cert", "init", "--dir", certs], &[], None),
        1,
        &["exists already", "--force"],
    );
    let output = run(&["cert", "issue", "n1", "--ca-dir", certs], &[], None);
    assert!(output.status.success(), "{}", stderr(&output));
    ensemble::transport::certs::NodeCert::load(std::path::Path::new(certs), "n1")
        .expect("the issued certificate loads");
    assert_refused(
        &run(
            &["cert", "issue", "not a name", "--ca-dir", certs],
            &[],
            None,
        ),
        1,
        &["not a node name"],
    );
    assert_refused(
        &run(
            &["cert", "issue", "n2", "--ca-dir", "/nonexistent"],
            &[],
            None,
        ),
        1,
        &["CA certificate", "ensemble cert init"],
    );
}

#[test]
fn client_commands_without_a_node_say_where_they_looked() {
    // Port 9 (discard) on loopback: nothing listens there in a test run.
    assert_refused(
        &run(&["members", "--admin", "127.0.0.1:9"], &[], None),
        1,
        &["http://127.0.0.1:9/api/v1/members", "--admin"],
    );
}

#[test]
fn client_commands_refuse_an_address_or_token_they_cannot_use() {
    // `off` is what `ensemble node` takes for no admin server; ENSEMBLE_ADMIN serves both.
    assert_refused(
        &run(&["status"], &[("ENSEMBLE_ADMIN", "off")], None),
        1,
        &["--admin off", "HOST:PORT", "ENSEMBLE_ADMIN"],
    );
    let output = run(
        &["members", "--admin", "127.0.0.1:9"],
        &[("ENSEMBLE_ADMIN_TOKEN", "ab\ncd")],
        None,
    );
    assert_refused(&output, 1, &["--token", "'\\n'", "HTTP header"]);
    assert!(
        !stderr(&output).contains("cannot reach"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_app_spec_larger_than_the_admin_api_takes_is_refused_unread() {
    let (_dir, spec) = temp_file("huge.toml", "#".repeat(ensemble::admin::MAX_BODY + 1));
    let output = app_deploy(&spec, "127.0.0.1:9", &[]);
    assert_refused(
        &output,
        1,
        &["huge.toml", "larger than", "nothing was deployed"],
    );
    // And one wait of 0 s, which could only ever fail after a deployment.
    assert_refused(
        &app_deploy(&spec, "127.0.0.1:9", &["--wait-secs", "0"]),
        2,
        &["--wait-secs"],
    );
}

#[test]
fn a_bad_app_spec_is_refused_before_any_node_is_asked() {
    let (_dir, spec) = temp_file(
        "broken.toml",
        "name = \"kv\"\n[[roles]]\nname = \"w\"\nmodule = \"kv.worker\"\ninstances = \"two\"\n",
    );
    // Port 9 (discard) on loopback: nothing listens there, and nothing needs to.
    let output = app_deploy(&spec, "127.0.0.1:9", &[]);
    assert_refused(
        &output,
        1,
        &["broken.toml", "instances", "nothing was deployed"],
    );
    let err = stderr(&output);
    assert!(!err.contains("cannot reach"), "{err}");
}
