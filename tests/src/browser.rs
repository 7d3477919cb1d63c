//! A headless Chromium driven through `chromedriver` (WebDriver, via fantoccini), for the
//! dashboard tests. chromedriver runs on a free loopback port in its own process group,
//! killed on drop; Chromium gets a temporary profile.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::{free_port, wait_until};

pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of 1440×900.
    pub fn start() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let port = free_port();
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).expect("log");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("chromedriver (apt-get install chromium-driver; scripts/deps.sh installs it)");
        let mut browser = Browser {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            client: None,
            driver,
            _profile: profile,
        };
        let data_dir = browser._profile.path().join("chrome");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--hide-scrollbars", "--force-device-scale-factor=1", "--window-size=1440,900",
                    "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", data_dir.display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = wait_until(
            "chromedriver to start a session",
            Duration::from_secs(30),
            || {
                browser
                    .rt
                    .block_on(
                        ClientBuilder::new(
                            hyper_util::client::legacy::connect::HttpConnector::new(),
                        )
                        .capabilities(caps.clone())
                        .connect(&url),
                    )
                    .map_err(|e| e.to_string())
            },
        );
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("client")
    }

    pub fn goto(&self, url: &str) {
        self.rt
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub fn url(&self) -> String {
        self.rt
            .block_on(self.client().current_url())
            .map(|u| u.to_string())
            .expect("current url")
    }

    /// Runs a script (`return ...` to get a value).
    pub fn js(&self, script: &str) -> Value {
        self.rt
            .block_on(self.client().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    /// The text of the first element matching `css`, or Err when there is none.
    pub fn text(&self, css: &str) -> Result<String, String> {
        self.rt.block_on(async {
            let e = self
                .client()
                .find(Locator::Css(css))
                .await
                .map_err(|e| format!("{css}: {e}"))?;
            e.text().await.map_err(|e| format!("{css}: {e}"))
        })
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> usize {
        self.rt
            .block_on(self.client().find_all(Locator::Css(css)))
            .map_or(0, |v| v.len())
    }

    pub fn click(&self, css: &str) {
        self.rt
            .block_on(async { self.client().find(Locator::Css(css)).await?.click().await })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Types into an input (after clearing it).
    pub fn fill(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                let e = self.client().find(Locator::Css(css)).await?;
                e.clear().await?;
                e.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("fill {css}: {e}"));
    }

    /// Waits until the text of `css` satisfies `pred`; returns it.
    pub fn wait_text(
        &self,
        css: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        wait_until(&format!("{css}: {what}"), timeout, || {
            let t = self.text(css)?;
            if pred(&t) { Ok(t) } else { Err(t) }
        })
    }

    /// Saves a PNG of the window (the whole page: the window grows to fit it first).
    pub fn screenshot(&self, path: &Path) {
        // The window's own frame (outer minus inner height) comes on top of the page's.
        let size = self.js(
            "return [Math.max(document.body.scrollHeight, 560), window.outerHeight - window.innerHeight];",
        );
        let page = size[0].as_u64().unwrap_or(900).min(3000) as u32;
        let frame = size[1].as_u64().unwrap_or(0).min(400) as u32;
        self.rt
            .block_on(self.client().set_window_size(1440, page + frame + 24))
            .expect("window size");
        let png = self
            .rt
            .block_on(self.client().screenshot())
            .expect("screenshot");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        self.rt
            .block_on(self.client().set_window_size(1440, 900))
            .expect("window size");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = killpg(Pid::from_raw(self.driver.id() as i32), Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}
