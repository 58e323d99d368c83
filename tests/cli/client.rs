//! The client commands against a scripted admin server (a few lines of HTTP over a std
//! `TcpListener`), for what a real node cannot be made to show on demand: a proxy in the
//! environment, an answer larger than an HTTP client's default cap, a node whose copy of the
//! registry still lists an app's previous spec.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::util::{app_deploy, command, run, stderr, stdout, temp_file};

/// One request as the fake server read it.
#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    body: String,
}

/// A scripted admin server on 127.0.0.1: each request gets the status and JSON body the
/// handler gives, on a connection closed after it. It serves until the test process ends.
struct FakeAdmin {
    address: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeAdmin {
    fn start(handler: impl Fn(&Request) -> (u16, String) + Send + 'static) -> FakeAdmin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake admin server");
        let address = listener.local_addr().unwrap().to_string();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some(request) = read_request(&stream) {
                    seen.lock().unwrap().push(request.clone());
                    let (status, body) = handler(&request);
                    let mut stream = stream;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(body.as_bytes());
                }
            }
        });
        FakeAdmin { address, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Every spelling of the proxy variables an HTTP client may read, pointing at `proxy`, and no
/// exceptions.
fn proxy_env(proxy: &str) -> Vec<(&'static str, String)> {
    [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .into_iter()
    .map(|key| (key, format!("http://{proxy}")))
    .collect()
}

#[test]
fn the_admin_api_is_never_reached_through_a_proxy_of_the_environment() {
    let admin = FakeAdmin::start(|_| (200, "[]".to_owned()));
    // The proxy accepts connections (the kernel completes them) and never answers; the test
    // asks it afterwards whether any came.
    let proxy = TcpListener::bind("127.0.0.1:0").expect("bind the fake proxy");
    proxy.set_nonblocking(true).unwrap();
    let proxy_address = proxy.local_addr().unwrap().to_string();

    let mut cmd = command(
        &[
            "names",
            "--admin",
            &admin.address,
            "--token",
            "secret-token",
        ],
        &[],
    );
    cmd.env_remove("NO_PROXY").env_remove("no_proxy");
    for (key, value) in proxy_env(&proxy_address) {
        cmd.env(key, value);
    }
    let output = cmd.output().expect("run ensemble");
    assert!(
        output.status.success(),
        "stderr:\n{}\nstdout:\n{}",
        stderr(&output),
        stdout(&output)
    );
    assert!(stdout(&output).starts_with("NAME"), "{}", stdout(&output));
    match proxy.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the proxy got a connection: {other:?}"),
    }
    let requests = admin.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/api/v1/names");
    assert!(request.body.is_empty(), "{request:?}");
}

#[test]
fn an_https_admin_address_is_refused_saying_why() {
    let output = run(&["status", "--admin", "https://127.0.0.1:9"], &[], None);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    for needle in [
        "https://127.0.0.1:9",
        "plain HTTP",
        "http://HOST:PORT",
        "SSH tunnel",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
    assert!(!err.contains("is a node running"), "{err}");
}

#[test]
fn a_names_answer_larger_than_10_mib_is_read() {
    // About 12 MiB of names, over the 10 MiB an HTTP client reads by default.
    let entry = |i: usize| {
        format!(
            "{{\"name\":\"service.{i:0>8}.{}\",\"actor\":\"<n1#1.{i}>\",\"node\":\"n1#1\"}}",
            "x".repeat(60)
        )
    };
    let body = format!(
        "[{}]",
        (0..120_000).map(entry).collect::<Vec<_>>().join(",")
    );
    assert!(body.len() > 11 * 1024 * 1024, "{}", body.len());
    let admin = FakeAdmin::start(move |_| (200, body.clone()));
    let output = run(&["names", "--admin", &admin.address], &[], None);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).lines().count(), 120_001);
}

#[test]
fn app_remove_names_the_apps_path_when_the_answer_does_not_decode() {
    let admin = FakeAdmin::start(|_| (200, "{\"unexpected\": true}".to_owned()));
    let output = run(
        &["app", "remove", "kv", "--admin", &admin.address],
        &[],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("/api/v1/apps/kv answered"), "{err}");
}

/// An app entry of `GET /api/v1/apps`: app kv with one role `worker` of `instances`, and
/// `running` of them running on n1.
fn kv_entry(instances: usize, running: usize) -> String {
    format!(
        r#"{{"spec":{{"name":"kv","roles":[{{"name":"worker","module":"kv.worker","instances":{instances},
        "min_instances":null,"singleton":false,"global_name":null,"groups":[],
        "placement":{{"node":null,"resources":{{}},"labels":{{}},"anti_affinity":false,"spread":"spread"}},
        "restart":{{"restart":"permanent","max_restarts":10,"within_secs":60}},"args":null}}]}},
        "status":{{"name":"kv","roles":[{{"name":"worker","wanted":{instances},"running":{{"n1":{running}}},"problem":null}}]}}}}"#
    )
}

#[test]
fn app_deploy_waits_for_the_spec_it_sent_and_its_exact_count() {
    // The node first lists the previous spec (3 instances, all running), then the new one
    // (1 instance) while the 2 extra ones still stop, then the new one settled.
    let gets = Arc::new(AtomicUsize::new(0));
    let counter = gets.clone();
    let admin = FakeAdmin::start(move |request| {
        if request.method == "POST" {
            return (200, r#"{"app":"kv","changed":true}"#.to_owned());
        }
        let entry = match counter.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => kv_entry(3, 3),
            2 | 3 => kv_entry(1, 3),
            _ => kv_entry(1, 1),
        };
        (200, format!("[{entry}]"))
    });
    let (_dir, spec) = temp_file(
        "kv.toml",
        "name = \"kv\"\n\n[[roles]]\nname = \"worker\"\nmodule = \"kv.worker\"\ninstances = 1\n",
    );
    let output = app_deploy(&spec, &admin.address, &["--wait-secs", "60"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("app kv running (worker 1/1)"), "{out}");
    assert!(gets.load(Ordering::SeqCst) >= 5, "{out}");
    let err = stderr(&output);
    assert!(err.contains("lists the one before"), "{err}");
    assert!(err.contains("worker 3/1"), "{err}");
    let posted = admin
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("the spec was posted");
    assert_eq!(posted.path, "/api/v1/apps");
    assert!(posted.body.contains("instances = 1"), "{}", posted.body);
}

#[test]
fn app_deploy_says_why_the_node_refused_the_spec() {
    let admin = FakeAdmin::start(|_| {
        (
            400,
            r#"{"error":"role worker changes its module from kv.worker to kv.master"}"#.to_owned(),
        )
    });
    let (_dir, spec) = temp_file(
        "kv.toml",
        "name = \"kv\"\n\n[[roles]]\nname = \"worker\"\nmodule = \"kv.master\"\n",
    );
    let output = app_deploy(&spec, &admin.address, &[]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("kv.toml"), "{err}");
    assert!(err.contains("/api/v1/apps: 400"), "{err}");
    assert!(err.contains("changes its module"), "{err}");
}
