//! Kafka brokers for the stream tests and the `stream_e2e` bench (which includes this file):
//! the topics the continuous job needs, and a `tansu` broker process.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The job's output topics (the defaults) and its dead-letter topic.
pub const OUTPUT_TOPICS: [&str; 6] = [
    "personaflow.profiles",
    "personaflow.segment_profiles",
    "personaflow.resonance",
    "personaflow.forecasts",
    "personaflow.policies",
    "personaflow.dead_letter",
];

/// A `tansu` broker process on a free port of 127.0.0.1 with in-memory storage, stopped when
/// dropped.
pub struct Tansu {
    child: Child,
    bin: PathBuf,
    url: String,
}

impl Tansu {
    /// Starts `bin` and waits until it listens.
    pub fn start(bin: PathBuf) -> Tansu {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {url}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Tansu { child, bin, url }
    }

    /// Creates a topic with `tansu topic create`.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(&self.bin)
            .args(["topic", "create", name, "--broker", &self.url])
            .args(["--partitions", &partitions.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tansu topic create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The bootstrap address, `127.0.0.1:PORT`.
    pub fn brokers(&self) -> String {
        self.url.trim_start_matches("tcp://").to_string()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
