//! A real headless browser: Debian's chromium driven through its chromedriver
//! (WebDriver) by `fantoccini`. The test starts chromedriver on a free loopback port in
//! its own process group and kills the group when the [`Browser`] drops, chromium
//! included. Binaries come from `PRIORFETCH_CHROMEDRIVER` / `PRIORFETCH_CHROMIUM` or
//! PATH (`scripts/peers.sh`'s `ensure_chromium` installs both); a missing one fails the
//! test with the fix. Every wait is bounded.

use fantoccini::{Client, ClientBuilder, Locator};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The longest any single browser step may take.
const STEP: Duration = Duration::from_secs(30);

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn binary(var: &str, name: &str) -> String {
    let path = std::env::var(var).ok().filter(|p| !p.is_empty()).or_else(|| {
        let out = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    match path {
        Some(p) if std::path::Path::new(&p).exists() => p,
        _ => panic!(
            "{name} not found ({var} unset, not on PATH): run `bash -c 'source scripts/peers.sh; ensure_chromium'` \
             (Debian packages chromium and chromium-driver)"
        ),
    }
}

impl Browser {
    pub async fn start() -> Browser {
        let driver_bin = binary("PRIORFETCH_CHROMEDRIVER", "chromedriver");
        let chromium = binary("PRIORFETCH_CHROMIUM", "chromium");
        let profile = tempfile::tempdir().expect("temp dir");
        let port = priorfetch_testkit::ports::free_port();
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).expect("driver log");
        let mut driver = {
            use std::os::unix::process::CommandExt;
            Command::new(&driver_bin)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdout(Stdio::null())
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("start {driver_bin}: {e}"))
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("chromedriver exited at start-up ({status})");
            }
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not listen within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--window-size=1440,1000".into(),
            format!("--user-data-dir={}", profile.path().join("profile").display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), "chrome".into());
        caps.insert("goog:chromeOptions".into(), serde_json::json!({ "binary": chromium, "args": args }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(caps);
        let url = format!("http://127.0.0.1:{port}");
        let connect = builder.connect(&url);
        let client = match tokio::time::timeout(Duration::from_secs(60), connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                let log = std::fs::read_to_string(profile.path().join("chromedriver.log")).unwrap_or_default();
                kill_group(&mut driver);
                panic!("no browser session: {e}\n{log}")
            }
            Err(_) => {
                kill_group(&mut driver);
                panic!("no browser session within 60 s")
            }
        };
        Browser { client, driver, _profile: profile }
    }

    pub async fn goto(&self, url: &str) {
        bounded("goto", self.client.goto(url)).await;
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = bounded("find", self.client.find(Locator::Css(css))).await;
        bounded("type", field.send_keys(text)).await;
    }

    pub async fn click(&self, css: &str) {
        let element = bounded("find", self.client.find(Locator::Css(css))).await;
        bounded("click", element.click()).await;
    }

    /// Clicks the first link whose text is `text`.
    pub async fn click_link(&self, text: &str) {
        let element = bounded("find link", self.client.find(Locator::LinkText(text))).await;
        bounded("click", element.click()).await;
    }

    pub async fn text(&self, css: &str) -> String {
        let element = bounded("find", self.client.find(Locator::Css(css))).await;
        bounded("text", element.text()).await
    }

    pub async fn count(&self, css: &str) -> usize {
        bounded("find all", self.client.find_all(Locator::Css(css))).await.len()
    }

    pub async fn has(&self, css: &str) -> bool {
        self.count(css).await > 0
    }

    pub async fn html(&self) -> String {
        bounded("source", self.client.source()).await
    }

    pub async fn url(&self) -> String {
        bounded("url", self.client.current_url()).await.to_string()
    }

    /// Accepts the confirm dialog an action opened.
    pub async fn accept_dialog(&self) {
        let started = Instant::now();
        loop {
            match self.client.accept_alert().await {
                Ok(()) => return,
                Err(_) if started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("no dialog to accept: {e}"),
            }
        }
    }

    /// Waits until the page shows `css` (after a navigation or a form's submit).
    pub async fn wait_for(&self, css: &str) {
        let wait = self.client.wait().at_most(STEP).for_element(Locator::Css(css));
        bounded("wait", wait).await;
    }

    /// Saves the page as `target/screenshots/console-<page>.png`.
    pub async fn screenshot(&self, page: &str) -> PathBuf {
        let png = bounded("screenshot", self.client.screenshot()).await;
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = screenshots();
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        let path = dir.join(format!("console-{page}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Ends the browser session, then the driver.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
        kill_group(&mut self.driver);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// Kills chromedriver and what it started (its process group).
fn kill_group(driver: &mut Child) {
    if let Ok(None) = driver.try_wait() {
        // `--` is essential: procps' `kill -KILL -123` reads "-123" as options and signals
        // pid -1 (every process) when the group ID starts with 1.
        let group = format!("-{}", driver.id());
        let _ = Command::new("kill").args(["-s", "KILL", "--", group.as_str()]).status();
        let _ = driver.kill();
    }
    let _ = driver.wait();
}

/// `target/screenshots` of this workspace (or of `CARGO_TARGET_DIR`).
pub fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
    target.join("screenshots")
}

async fn bounded<T, E: std::fmt::Display>(what: &str, step: impl std::future::Future<Output = Result<T, E>>) -> T {
    match tokio::time::timeout(STEP, step).await {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => panic!("browser {what}: {e}"),
        Err(_) => panic!("browser {what}: no answer within {STEP:?}"),
    }
}
