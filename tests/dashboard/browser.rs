//! Headless Chromium through chromedriver: finding them, starting chromedriver on a free port
//! (killed when dropped), and a WebDriver session with a fresh profile.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

/// Set to `1` to make a missing browser a failure instead of a skip (CI sets it).
pub(crate) const REQUIRE_ENV: &str = "ENSEMBLE_REQUIRE_BROWSER";

/// Where Debian's `chromium` and `chromium-driver` packages put them; overridable with
/// `ENSEMBLE_CHROMIUM` and `ENSEMBLE_CHROMEDRIVER`.
const CHROMIUM: (&str, &str) = ("ENSEMBLE_CHROMIUM", "/usr/bin/chromium");
const CHROMEDRIVER: (&str, &str) = ("ENSEMBLE_CHROMEDRIVER", "/usr/bin/chromedriver");

/// How long chromedriver has to say which port it listens on.
const DRIVER_START: Duration = Duration::from_secs(30);

/// The browser and its driver.
pub(crate) struct Browser {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

impl Browser {
    /// Finds both, or: with [`REQUIRE_ENV`] set, panics saying how to install them;
    /// otherwise says the test is skipped and answers `None`.
    pub(crate) fn find() -> Option<Browser> {
        let path = |(var, default): (&str, &str)| {
            std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        let browser = Browser {
            chromium: path(CHROMIUM),
            chromedriver: path(CHROMEDRIVER),
        };
        let missing: Vec<String> = [&browser.chromium, &browser.chromedriver]
            .into_iter()
            .filter(|p| !p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            return Some(browser);
        }
        let message = format!(
            "{} not found: install Chromium and its WebDriver with `apt-get install chromium chromium-driver`",
            missing.join(" and ")
        );
        if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
            panic!("{message} ({REQUIRE_ENV}=1 makes a missing browser a failure)");
        }
        eprintln!(
            "SKIPPED the dashboard test: {message} (set {REQUIRE_ENV}=1 to make this a failure)"
        );
        None
    }
}

/// A chromedriver process, killed when dropped.
pub(crate) struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    /// Starts chromedriver on a port of its choosing and waits until it says which.
    pub(crate) fn start(browser: &Browser) -> Result<ChromeDriver, String> {
        let mut child = Command::new(&browser.chromedriver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", browser.chromedriver.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        // Reads the port from "ChromeDriver was started successfully on port N.", then keeps
        // draining its output so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("successfully on port ").nth(1) {
                    let port: Option<u16> = rest.trim_end_matches('.').trim().parse().ok();
                    let _ = port_tx.send(port);
                }
            }
        });
        let mut driver = ChromeDriver { child, port: 0 };
        match port_rx.recv_timeout(DRIVER_START) {
            Ok(Some(port)) => driver.port = port,
            Ok(None) => return Err("chromedriver printed a port that does not parse".into()),
            Err(_) => {
                return Err(format!(
                    "chromedriver did not say which port it listens on within {DRIVER_START:?}"
                ));
            }
        }
        Ok(driver)
    }

    /// A WebDriver session on headless Chromium with a fresh profile in `profile`.
    pub(crate) async fn session(
        &self,
        browser: &Browser,
        profile: &Path,
    ) -> Result<Client, String> {
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1400,1200".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), "chrome".into());
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": browser.chromium.display().to_string(),
                "args": args,
            }),
        );
        // Plain http to chromedriver on loopback: no TLS connector needed.
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .map_err(|e| format!("cannot open a WebDriver session on chromedriver: {e}"))
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
